"""A full disk ends a run with one message that names the folder and the space left; the same
command finishes once there is room."""

import csv
import errno
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
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


FAULTS = os.path.join(ROOT, "tests", "faults")
# Files appended to as a run goes (a full disk can cut their last line) or holding no content.
APPENDED = (
    "log.txt",
    "train_log.txt",
    "study_log.txt",
    "run.lock",
    "prepare.lock",
)


def _write_path(kind):
    """A write path: the kinds of files one piece of code writes into one place, taken
    together (a file of the teacher's run and the same of a student's, a checkpoint's files
    by torch.save or as text, the audio or CSV files of the demo corpus, the locks)."""
    if kind.endswith(".lock"):
        return "lock"  # ctsl_brain.locks.FolderLock, wherever it is
    path = re.sub(
        r"^results/demo/(?!manifests/|study/)[^/]+/#/", "<run>/", kind
    )
    if re.search(r"/CKPT\+", path):
        saved = re.search(
            r"(encoder|head|optimizer|random_states|teacher_cache)\.ckpt$", path
        )
        return "checkpoint by " + ("torch.save" if saved else "text")
    if path.startswith("<run>/embeddings/"):
        return "<run>/embeddings"
    if path.startswith("results/demo/study/#/"):
        return re.sub(
            r"stages/.+",
            "stages/<system>",
            re.sub(r"table#\.\w+$", "<table>", path),
        )
    if path.startswith(("demo/", "results/demo/manifests/")):
        place = (
            "field bank" if "/manifests/field/" in path else path.split("/")[0]
        )
        place = "manifests" if place == "results" else place
        return f"{place} *{os.path.splitext(path)[1]}"
    if path.startswith("model/"):
        return "model *" + os.path.splitext(path)[1].replace(".md", ".yaml")
    return path


def _commands(root, encoders):
    """A study of Original and the field system (corpus, manifests, noise banks, field
    extraction, mixtures, checkpoints, predictions, tables, figure), then an export."""
    study = [
        sys.executable,
        "study.py",
        "--data_folder",
        str(root / "demo"),
        "--results_folder",
        str(root / "results"),
        "--systems",
        "Original,RM+TL+CL (field)",
        "--teacher_epochs",
        "2",
        "--student_epochs",
        "1",
        "--n_groups",
        "4",
        "--batch_size",
        "4",
        "--test_batch_size",
        "8",
        "--head_hidden_size",
        "16",
        "--test_snrs",
        "[0]",
        "--noprogressbar",
        "--prepare_options",
        "{n_train: 12, n_dev: 8, n_test: 8, adapt_noise_minutes: 0.2, test_noise_minutes: 0.2}",
        "--encoder_hparams",
        "hparams/encoders/tiny_wav2vec2.yaml",
        "--encoder_cache",
        str(encoders),
    ]
    export = [
        sys.executable,
        "-m",
        "ctsl_brain",
        "export",
        "--run",
        str(root / "results" / "demo" / "rm_tl_cl_field" / "1986"),
        "--out",
        str(root / "model"),
    ]
    return study, export


def _run_all(root, encoders, trace, kind=None):
    """Runs the study, then the export if it finished; returns the status and output of the
    last command run."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [FAULTS, *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "CTSL_FAULT_ROOT": str(root),
        "CTSL_FAULT_TRACE": str(trace),
    }
    if kind is not None:
        env["CTSL_FAULT_KIND"] = kind
    study, export = _commands(root, encoders)
    for command in (study, export):
        if command is export and (root / "model").is_dir():
            break  # exported earlier
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            break
    return done.returncode, done.stdout + done.stderr


def _complete(path):
    """Whether a file under its final name is whole, judged by its format."""
    with open(path, "rb") as fin:
        data = fin.read()
    name = os.path.basename(path)
    if name.endswith(".json"):
        json.loads(data)
    elif name.endswith(".wav"):
        assert (
            data[:4] == b"RIFF"
            and int.from_bytes(data[4:8], "little") == len(data) - 8
        )
    elif name.endswith(".png"):
        assert data.endswith(b"IEND\xaeB`\x82")
    elif name.endswith(".npz"):
        with np.load(path) as arrays:
            [arrays[key] for key in arrays.files]
    elif data[:2] == b"PK":
        torch.load(path, map_location="cpu", weights_only=False)
    elif name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert data.endswith(b"\n") and len({len(row) for row in rows}) == 1
    elif name.endswith((".yaml", ".ckpt")):
        assert yaml.compose(data.decode(), Loader=yaml.SafeLoader) is not None
    else:
        assert data.endswith(b"\n") or name.endswith(".ckpt")


def _check_whole(root, reference):
    """Every file under a final name is whole: as in the reference for SpeechBrain's copies
    into a run folder, else by its format."""
    for folder, _, names in os.walk(root):
        for name in names:
            hidden = name.startswith(".") or "/." in folder.replace(os.sep, "/")
            if hidden or name in APPENDED or name.endswith(".out"):
                continue  # temporary names, and files appended to
            path = os.path.join(folder, name)
            try:
                if name in ("env.log", "train.py"):
                    same = reference / os.path.relpath(path, root)
                    assert open(path, "rb").read() == same.read_bytes()
                else:
                    _complete(path)
            except Exception as error:
                raise AssertionError(
                    f"{path} is not whole: {error!r}"
                ) from None


def _outputs(root):
    """What the study and the export end with (the train logs with their seconds masked)."""
    found = {}
    for folder, _, names in os.walk(root / "results"):
        for name in names:
            if name in (
                "predictions.csv",
                "test_results.json",
                "evaluation.json",
            ) or (
                "study" in folder
                and name.startswith(("table", "group_ccc", "ccc_vs"))
            ):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, root)] = open(path, "rb").read()
            elif name == "train_log.txt":
                path = os.path.join(folder, name)
                text = re.sub(r"seconds: \d+", "seconds: -", open(path).read())
                found[os.path.relpath(path, root)] = text
    for name in ("encoder.ckpt", "head.ckpt", "custom_interface.py"):
        found[name] = (root / "model" / name).read_bytes()
    return found


@pytest.mark.slow
def test_a_full_disk_on_every_write_path_is_one_message_and_the_rerun_finishes_the_same(
    tmp_path,
):
    """ENOSPC injected into each write path in turn (the first file of each kind: a corpus
    file, a manifest, a noise bank segment, a mixture, a checkpoint file, predictions, a table,
    the figure, an export file, ...): each time the command ends with one disk-full message and
    status 1 and leaves every file under a final name whole, and the same commands then go on
    from there. They end with the outputs of runs that never met a full disk."""
    encoders = tmp_path / "encoders"
    reference, trace = tmp_path / "reference", tmp_path / "reference.trace"
    status, output = _run_all(reference, encoders, trace)
    assert status == 0, output[-3000:]
    kinds, paths = [], set()
    for kind in open(trace).read().splitlines():
        # The logging module drops a record it cannot write, and the run goes on.
        if _write_path(kind) not in paths and not kind.endswith("/log.txt"):
            paths.add(_write_path(kind))
            kinds.append(kind)
    assert len(kinds) >= 25, kinds

    root, trace = tmp_path / "full", tmp_path / "full.trace"
    fired = []
    for kind in kinds:
        status, output = _run_all(root, encoders, trace, kind)
        marker = pathlib.Path(f"{trace}.fired")
        if not marker.exists():
            continue  # written before the fault of an earlier run, and not again
        marker.unlink()
        fired.append(kind)
        messages = [
            line
            for line in output.splitlines()
            if "error: the disk is full" in line
        ]
        assert status == 1 and len(messages) == 1, f"{kind}:\n{output[-3000:]}"
        assert "Traceback" not in output and "Logging error" not in output, (
            output
        )
        _check_whole(root, reference)
    assert len(fired) >= len(kinds) * 2 // 3, sorted(set(kinds) - set(fired))

    status, output = _run_all(root, encoders, trace)
    assert status == 0, output[-3000:]
    assert _outputs(root) == _outputs(reference)
    left = [
        os.path.join(folder, name)
        for folder, names, files in os.walk(root)
        for name in names + files
        if re.search(
            r"\.tmp$|\.staging$|^\.staging\+|^\.deleting\+|\.partial$", name
        )
    ]
    assert not left
