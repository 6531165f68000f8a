"""AtomicCheckpointer: a checkpoint is complete under its name, or not there at all."""

import logging
import os
import random
import shutil

import numpy as np
import pytest
import torch
from ctsl_brain import checkpoints as module
from ctsl_brain.checkpoints import (
    AtomicCheckpointer,
    CheckpointError,
    RandomStates,
    trim_train_log,
)
from ctsl_brain.models import TeacherEmbeddingCache

from speechbrain.utils.checkpoints import Checkpointer


def _checkpointer(folder, seed=0, size=3):
    torch.manual_seed(seed)
    layer = torch.nn.Linear(size, 2)
    return AtomicCheckpointer(folder, recoverables={"layer": layer}), layer


def _names(folder):
    return sorted(os.listdir(folder))


def test_a_checkpoint_is_written_then_renamed_into_place(tmp_path, monkeypatch):
    checkpointer, layer = _checkpointer(tmp_path)
    seen = []
    real_replace = os.replace

    def watching_replace(source, target):
        seen.append((os.path.basename(source), sorted(os.listdir(source))))
        real_replace(source, target)

    monkeypatch.setattr(module.os, "replace", watching_replace)
    saved = checkpointer.save_checkpoint(meta={"ccc": 0.25})
    # Renamed from the staging name once every file was there.
    assert seen == [
        (".staging+" + saved.path.name, ["CKPT.yaml", "layer.ckpt"])
    ]
    assert _names(tmp_path) == [saved.path.name]
    assert saved.paramfiles["layer"] == saved.path / "layer.ckpt"
    assert (
        Checkpointer(tmp_path).find_checkpoint(max_key="ccc").path == saved.path
    )


def test_a_save_cut_short_leaves_no_checkpoint_and_its_leftover_goes(
    tmp_path, caplog
):
    checkpointer, layer = _checkpointer(tmp_path)
    first = checkpointer.save_checkpoint(meta={"ccc": 0.1})

    def failing_save(obj, path):
        raise KeyboardInterrupt  # stands in for a kill while the file is written

    checkpointer.add_recoverable("other", torch.nn.Linear(1, 1))
    checkpointer.custom_save_hooks["other"] = failing_save
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save_checkpoint(meta={"ccc": 0.9})
    assert [c.path for c in checkpointer.list_checkpoints()] == [first.path]
    assert any(name.startswith(".staging+") for name in _names(tmp_path))

    fresh, _ = _checkpointer(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert fresh.recover_if_possible().path == first.path
    assert "stopped while a checkpoint was saved" in caplog.text
    assert _names(tmp_path) == [first.path.name]


def test_a_delete_cut_short_never_leaves_a_partial_checkpoint(
    tmp_path, monkeypatch, caplog
):
    checkpointer, _ = _checkpointer(tmp_path)
    old = checkpointer.save_checkpoint(meta={"ccc": 0.1})
    new = checkpointer.save_checkpoint(meta={"ccc": 0.2})
    real_rmtree = shutil.rmtree

    def cut_rmtree(path, *args, **kwargs):
        os.remove(
            os.path.join(path, "CKPT.yaml")
        )  # part of the files, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(module.shutil, "rmtree", cut_rmtree)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.delete_checkpoints(num_to_keep=1, max_keys=["ccc"])
    monkeypatch.setattr(module.shutil, "rmtree", real_rmtree)
    # The checkpoint went out of the listing before any of its files did.
    assert [c.path for c in checkpointer.list_checkpoints()] == [new.path]
    assert not old.path.exists()
    with caplog.at_level(logging.WARNING):
        checkpointer.recover_if_possible()
    assert "stopped while a checkpoint was deleted" in caplog.text
    assert _names(tmp_path) == [new.path.name]


def test_delete_keeps_what_speechbrain_keeps(tmp_path):
    ours, _ = _checkpointer(tmp_path / "ours")
    theirs = Checkpointer(
        tmp_path / "theirs", recoverables={"layer": torch.nn.Linear(3, 2)}
    )
    scores = [0.3, 0.9, 0.1, 0.5, 0.7]
    for checkpointer in (ours, theirs):
        for score in scores:
            checkpointer.save_checkpoint(meta={"ccc": score, "end": True})
        checkpointer.save_checkpoint(meta={"intra": True}, end_of_epoch=False)
        checkpointer.delete_checkpoints(num_to_keep=2, max_keys=["ccc"])
    kept = [
        sorted(str(c.meta.get("ccc")) for c in x.list_checkpoints())
        for x in (ours, theirs)
    ]
    assert kept[0] == kept[1] == ["0.7", "0.9", "None"]


def test_an_unloadable_newest_checkpoint_falls_back_and_is_moved_aside(
    tmp_path, caplog
):
    checkpointer, layer = _checkpointer(tmp_path)
    good = checkpointer.save_checkpoint(meta={"step": 1})
    expected = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    broken = checkpointer.save_checkpoint(meta={"step": 2})
    (broken.path / "layer.ckpt").write_bytes(b"PK\x03\x04 cut short")

    with caplog.at_level(logging.WARNING):
        assert checkpointer.recover_if_possible().path == good.path
    assert torch.equal(layer.weight, expected)
    assert f"checkpoint {broken.path} cannot be loaded" in caplog.text
    moved = tmp_path / "unloadable" / broken.path.name
    assert moved.is_dir() and (moved / "layer.ckpt").read_bytes().endswith(
        b"cut short"
    )
    assert [c.path for c in checkpointer.list_checkpoints()] == [good.path]


def test_when_no_checkpoint_loads_the_run_stops_and_nothing_moves(tmp_path):
    checkpointer, _ = _checkpointer(tmp_path, size=3)
    checkpointer.save_checkpoint(meta={"step": 1})
    checkpointer.save_checkpoint(meta={"step": 2})
    before = _names(tmp_path)
    other, _ = _checkpointer(
        tmp_path, size=5
    )  # another model: no checkpoint fits it
    with pytest.raises(
        CheckpointError, match="no checkpoint in .* can be loaded"
    ) as caught:
        other.recover_if_possible()
    assert caught.value.args[0].count("size mismatch") == 2
    assert "move" in str(
        caught.value
    ) and "aside to start this run over" in str(caught.value)
    assert _names(tmp_path) == before


def test_a_run_with_no_checkpoint_starts_from_the_beginning(tmp_path):
    checkpointer, _ = _checkpointer(tmp_path)
    assert checkpointer.recover_if_possible() is None


def test_the_train_log_keeps_the_epochs_of_the_recovered_checkpoint(tmp_path):
    log = tmp_path / "train_log.txt"
    lines = [
        "epoch: 1/3, lr: 1.00e-05 - train loss: 2.1 - valid loss: 2.0\n",
        "epoch: 2/3, lr: 1.00e-05 - train loss: 1.9 - valid loss: 1.8\n",
        "epoch: 3/3, lr: 1.00e-05 - train loss: 1.7 - valid loss: 1.7\n",
        "condition: clean, checkpoint of epoch: 3 - test loss: 1.7\n",
    ]
    log.write_text("".join(lines))
    trim_train_log(log, 3)  # evaluation redone: its test lines go
    assert log.read_text() == "".join(lines[:3])
    trim_train_log(
        log, 1
    )  # epoch 2 ended after its log line, before its checkpoint
    assert log.read_text() == lines[0]
    trim_train_log(tmp_path / "absent.txt", 1)


def _draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())


@pytest.mark.parametrize("end_of_epoch", [True, False])
def test_random_states_come_back_when_the_run_goes_on(tmp_path, end_of_epoch):
    states = RandomStates()
    checkpointer = AtomicCheckpointer(
        tmp_path, recoverables={"random_states": states}
    )
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    checkpointer.save_checkpoint(
        end_of_epoch=end_of_epoch, verbosity=logging.DEBUG
    )
    expected = _draws()
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    checkpointer.recover_if_possible()
    if not end_of_epoch:
        # Held back until the run goes on; what is drawn before does not count.
        assert _draws() != expected
        assert states.restore()
    assert _draws() == expected
    assert not states.restore()  # once


def test_a_checkpoint_saved_without_random_states_still_loads(tmp_path):
    layer = torch.nn.Linear(2, 2)
    AtomicCheckpointer(tmp_path, recoverables={"layer": layer}).save_checkpoint(
        verbosity=logging.DEBUG
    )
    checkpointer = AtomicCheckpointer(tmp_path, recoverables={"layer": layer})
    checkpointer.add_recoverable(
        "random_states", RandomStates(), optional_load=True
    )
    with pytest.warns(UserWarning, match="optional"):
        assert checkpointer.recover_if_possible() is not None


def test_the_teacher_cache_comes_back_bit_for_bit(tmp_path):
    cache = TeacherEmbeddingCache(
        lambda wavs, lens: wavs.double().sin().float()
    )
    first = cache(["a", "b"], torch.randn(2, 5), torch.ones(2))
    checkpointer = AtomicCheckpointer(tmp_path, recoverables={"cache": cache})
    checkpointer.save_checkpoint(verbosity=logging.DEBUG)
    restored = TeacherEmbeddingCache(lambda wavs, lens: 1 / 0)  # never called
    AtomicCheckpointer(
        tmp_path, recoverables={"cache": restored}
    ).recover_if_possible()
    assert list(restored.store) == ["a", "b"]
    assert torch.equal(
        restored(["b", "a"], torch.zeros(2, 5), torch.ones(2)), first.flip(0)
    )
