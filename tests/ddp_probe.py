"""Runs train.py in this process and saves this rank's trained student weights.

``torchrun --nproc_per_node=N tests/ddp_probe.py OUT_FOLDER <train.py arguments>`` writes
``OUT_FOLDER/rank<R>.pt`` for every rank, for the DDP test to compare.
"""

import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    import train

    trained = []

    class RecordedBrain(train.EmotionBrain):
        """The Brain train.py builds, kept for its weights."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trained.append(self)

    train.EmotionBrain = RecordedBrain
    train.main(sys.argv[2:])
    modules = trained[0].modules
    state = {
        f"{name}.{key}": value.detach().cpu()
        for name in ("encoder", "head")
        for key, value in getattr(modules[name], "module", modules[name])
        .state_dict()
        .items()
    }
    torch.save(
        state,
        os.path.join(sys.argv[1], f"rank{os.environ.get('RANK', '0')}.pt"),
    )
