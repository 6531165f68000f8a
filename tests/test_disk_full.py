"""A full disk ends a run with one message that names the folder and the space left; the same
command finishes once there is room."""

import errno
import os
import shutil
import subprocess
import sys

import pytest
import torch
from ctsl_brain import checkpoints
from ctsl_brain.checkpoints import AtomicCheckpointer
from ctsl_brain.dataio import run_command, write_text_atomic
from recipe_run import ROOT, demo_arguments, tiny_run_arguments


def test_a_write_that_finds_the_disk_full_is_one_message(tmp_path, capsys):
    target = tmp_path / "run" / "predictions.csv"

    def main():
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    assert run_command(main) == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message
    assert message.startswith(
        f"error: the disk is full: writing {target} failed"
    )
    assert f"{tmp_path} has " in message and " free." in message
    assert "run the same command again" in message


def test_other_os_errors_stay_bugs(tmp_path):
    def main():
        raise OSError(errno.EIO, "Input/output error", str(tmp_path))

    with pytest.raises(OSError):
        run_command(main)


def test_a_checkpoint_that_finds_the_disk_full(tmp_path, monkeypatch):
    layer = torch.nn.Linear(2, 2)
    checkpointer = AtomicCheckpointer(tmp_path, recoverables={"layer": layer})
    kept = checkpointer.save_checkpoint(meta={"ccc": 0.5})

    def full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed "
            "writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(
        checkpoints.shutil,
        "disk_usage",
        lambda path: shutil._ntuple_diskusage(100, 100, 0),
    )
    with pytest.raises(OSError) as raised:
        checkpointer.save_checkpoint(meta={"ccc": 0.6})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path)
    monkeypatch.undo()
    # Only the earlier checkpoint is under a final name, and it loads.
    finals = [p for p in tmp_path.iterdir() if p.name.startswith("CKPT+")]
    assert finals == [kept.path]
    assert checkpointer.recover_if_possible().meta["ccc"] == 0.5


def test_an_atomic_write_on_a_full_disk_leaves_the_old_file(
    tmp_path, monkeypatch
):
    path = tmp_path / "test_results.json"
    write_text_atomic(str(path), "old\n")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError):
        write_text_atomic(str(path), "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["test_results.json"]


def _mount_small(folder, size):
    folder.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}"
        )


@pytest.mark.slow
def test_a_run_on_a_full_filesystem_stops_then_finishes_with_room(tmp_path):
    results = tmp_path / "results"
    _mount_small(results, "2m")
    try:
        command = [
            sys.executable,
            "train.py",
            "hparams/teacher.yaml",
            *tiny_run_arguments(results, encoder_cache=tmp_path / "encoders"),
            *demo_arguments(),
            "--data_folder",
            str(tmp_path / "data"),
        ]
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 1, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: the disk is full: writing "), last
        assert f"{results}" in last and " free. " in last
        for noise in ("Traceback", "Logging error"):
            assert noise not in done.stderr, done.stderr[-3000:]
        subprocess.run(
            ["mount", "-o", "remount,size=64m", str(results)], check=True
        )
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert (
            results / "demo" / "teacher" / "1986" / "evaluation.json"
        ).is_file()
    finally:
        subprocess.run(["umount", "-l", str(results)], check=False)
