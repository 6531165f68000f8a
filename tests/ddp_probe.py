"""Runs train.py in this process and saves this rank's trained student weights.

``torchrun --nproc_per_node=N tests/ddp_probe.py OUT_FOLDER <train.py arguments>`` writes
``OUT_FOLDER/rank<R>.pt`` for every rank, for the DDP test to compare.
"""

import os
import runpy
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if __name__ == "__main__":
    out_folder = sys.argv[1]
    sys.argv = [os.path.join(ROOT, "train.py"), *sys.argv[2:]]
    sys.path.insert(0, ROOT)
    namespace = runpy.run_path(sys.argv[0], run_name="__main__")
    modules = namespace["brain"].modules
    state = {
        f"{name}.{key}": value.detach().cpu()
        for name in ("encoder", "head")
        for key, value in getattr(modules[name], "module", modules[name]).state_dict().items()
    }
    torch.save(state, os.path.join(out_folder, f"rank{os.environ.get('RANK', '0')}.pt"))
