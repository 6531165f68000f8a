"""Runs killed at any moment resume with the same command and end as planned."""

import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from recipe_run import (
    ROOT,
    demo_arguments,
    run_checked,
    run_train,
    tiny_run_arguments,
)

pytestmark = pytest.mark.slow

DEMO = demo_arguments(n_train=40)


def _checkpoints(save_folder):
    found = []
    for path in glob.glob(os.path.join(save_folder, "CKPT+*")):
        try:
            with open(os.path.join(path, "CKPT.yaml")) as fin:
                meta = yaml.safe_load(fin)
            with open(os.path.join(path, "counter.ckpt")) as fin:
                found.append((path, meta, int(fin.read())))
        except (FileNotFoundError, ValueError, TypeError):
            continue  # being written (or removed) by the running process
    return found


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished teacher run on a few demo utterances: its results folder and corpus."""
    folder = tmp_path_factory.mktemp("resume")
    results, data_folder = folder / "results", str(folder / "demo")
    run_train(
        "hparams/teacher.yaml", results, "--data_folder", data_folder, *DEMO
    )
    return results, data_folder


def test_student_killed_mid_epoch_resumes_and_ends_as_planned(teacher):
    results, data_folder = teacher
    tmp_path = results.parent
    command = [
        sys.executable,
        "train.py",
        "hparams/student.yaml",
        *tiny_run_arguments(results, batch_size=2, number_of_epochs=3),
        "--data_folder",
        data_folder,
        *DEMO,
        "--ckpt_interval_steps",
        "1",
    ]
    save = os.path.join(results, "demo", "rm_tl_cl", "1986", "save")
    first_log = tmp_path / "first_run.log"
    with open(first_log, "w") as fout:
        run = subprocess.Popen(
            command, cwd=ROOT, stdout=fout, stderr=subprocess.STDOUT
        )
    # Kill it as soon as epoch 2 has an intra-epoch checkpoint (20 steps per epoch).
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and run.poll() is None:
        if os.path.isdir(save) and any(
            meta.get("brain_intra_epoch_ckpt") and epoch == 2
            for _, meta, epoch in _checkpoints(save)
        ):
            run.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    run.wait()
    assert run.returncode == -signal.SIGKILL, (
        "the run ended before it could be killed mid-epoch: "
        + first_log.read_text()[-3000:]
    )
    left = _checkpoints(save)
    assert [epoch for _, meta, epoch in left if "ccc" in meta] == [1]
    # Killed between saving a new intra-epoch checkpoint and deleting the old one there may be
    # two; killed while saving one, the newest has a file missing or cut short (SpeechBrain
    # writes the meta file first): the resumed run drops it and loads the newest complete one.
    intra = sorted(
        (meta["unixtime"], path)
        for path, meta, _ in left
        if meta.get("brain_intra_epoch_ckpt")
    )
    assert intra

    resumed = run_checked(command)
    output = resumed.stdout + resumed.stderr
    newest = intra[-1][1]
    if f"checkpoint {newest} cannot be loaded" in output:
        newest = intra[-2][1] if len(intra) > 1 else None
    if newest is not None:  # else the end-of-epoch checkpoint of epoch 1
        assert f"Loading a checkpoint from {newest}" in output
    assert "Going into epoch 1" not in output and "Going into epoch 2" in output

    log = open(
        os.path.join(results, "demo", "rm_tl_cl", "1986", "train_log.txt")
    ).read()
    assert re.findall(r"^epoch: (\d+)/3", log, re.M) == ["1", "2", "3"]
    final = _checkpoints(save)
    assert sorted(epoch for _, meta, epoch in final if "ccc" in meta) == [
        1,
        2,
        3,
    ]
    assert not any(meta.get("brain_intra_epoch_ckpt") for _, meta, _ in final)
    assert os.path.isfile(
        os.path.join(results, "demo", "rm_tl_cl", "1986", "evaluation.json")
    )

    # A checkpoint cut short by a kill while saving (a file left empty) is dropped on resume.
    newest_end = max((meta["unixtime"], path) for path, meta, _ in final)[1]
    open(os.path.join(newest_end, "optimizer.ckpt"), "w").close()
    again = run_checked(command)
    output = again.stdout + again.stderr
    assert f"checkpoint {newest_end} cannot be loaded" in output
    assert not os.path.exists(newest_end)
    assert "Going into epoch 3" in output


def _student_command(results, data_folder, *, epochs, name="killed"):
    return [
        sys.executable,
        "train.py",
        "hparams/student.yaml",
        *tiny_run_arguments(results, batch_size=4, number_of_epochs=epochs),
        "--data_folder",
        data_folder,
        *DEMO,
        "--experiment_name",
        name,
        "--ckpt_interval_steps",
        "1",
    ]


# What a run ends with; the train log's figures are compared with its timings masked.
RUN_OUTPUTS = (
    "predictions.csv",
    "test_results.json",
    "evaluation.json",
    "train_log.txt",
)


def _outputs(folder):
    found = {}
    for name in RUN_OUTPUTS:
        with open(os.path.join(folder, name), encoding="utf-8") as fin:
            found[name] = re.sub(r"seconds: \d+", "seconds: -", fin.read())
    return found


def _assert_every_checkpoint_loads(save):
    """Every folder under a checkpoint's name holds a complete checkpoint: its meta file and
    each file parse (PyTorch's zip files load; SpeechBrain's small text files are YAML)."""
    for folder in glob.glob(os.path.join(save, "CKPT+*")):
        with open(os.path.join(folder, "CKPT.yaml")) as fin:
            assert isinstance(yaml.safe_load(fin), dict), folder
        names = sorted(os.listdir(folder))
        assert {
            "encoder.ckpt",
            "head.ckpt",
            "counter.ckpt",
            "optimizer.ckpt",
        } <= set(names)
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fin:
                zipped = fin.read(2) == b"PK"
            if zipped:
                torch.load(path, map_location="cpu")
            else:
                with open(path) as fin:
                    assert yaml.safe_load(fin) is not None, f"{path} is empty"


# When the kills land: while a checkpoint is written, while one is deleted, right after one is
# renamed into place (before the older ones are deleted), at random moments of training, and
# during the evaluation; the last kills wait for the evaluation, which comes after training.
_SCHEDULE = (
    "saving",
    "random",
    "saved",
    "deleting",
    "random",
    "saving",
    "saved",
    "random",
)
_SCHEDULE += ("deleting", "random", "evaluating", "evaluating")


def _kill_at(moment, run, save, log, rng, timeout=300):
    """Kills ``run`` at ``moment``; returns what happened: the moment, "evaluating" for a
    moment of training that did not come before the evaluation began, or "finished". Training
    and evaluation are seen in the run's own output ``log``."""
    known = set(glob.glob(os.path.join(save, "CKPT+*")))
    delay, training_since = rng.uniform(0.0, 3.0), None
    deadline = (
        time.monotonic() + timeout
    )  # a safety net: a hung run fails the test
    while time.monotonic() < deadline:
        if run.poll() is not None:
            return "finished"
        entries = os.listdir(save) if os.path.isdir(save) else []
        text = log.read_text()
        if training_since is None and "Going into epoch" in text:
            training_since = time.monotonic()
        hit = {
            "saving": any(e.startswith(".staging+") for e in entries),
            "deleting": any(e.startswith(".deleting+") for e in entries),
            "saved": bool(set(glob.glob(os.path.join(save, "CKPT+*"))) - known),
            "evaluating": "condition: " in text,
            "random": training_since is not None
            and time.monotonic() - training_since > delay,
        }[moment]
        if not hit and "condition: " in text:
            moment, hit = (
                "evaluating",
                True,
            )  # training ended before its moment came
        if hit:
            run.send_signal(signal.SIGKILL)
            run.wait()
            return moment
        time.sleep(0.001)
    run.send_signal(signal.SIGKILL)
    run.wait()
    return "timeout"


def test_student_killed_at_random_moments_always_restarts_and_ends_as_planned(
    teacher, tmp_path
):
    """SIGKILL at many moments (while a checkpoint is written or deleted, right after one is
    saved, during the evaluation, at random): every restart starts, every folder under a
    checkpoint's name loads after each kill, and the run ends with each epoch logged once and
    with the outputs of the same run left uninterrupted, byte for byte."""
    results, data_folder = teacher
    epochs = 4
    straight = os.path.join(results, "demo", "straight", "1986")
    run_checked(
        _student_command(results, data_folder, epochs=epochs, name="straight")
    )
    command = _student_command(results, data_folder, epochs=epochs)
    output = os.path.join(results, "demo", "killed", "1986")
    save = os.path.join(output, "save")
    rng = random.Random(20230604)
    happened = []
    for attempt, moment in enumerate(_SCHEDULE):
        log = tmp_path / f"attempt{attempt}.log"
        with open(log, "w") as fout:
            run = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=fout,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            what = _kill_at(moment, run, save, log, rng)
        assert run.returncode in (0, -signal.SIGKILL), (
            f"attempt {attempt} ({moment}) failed with status {run.returncode}:\n"
            + log.read_text()[-3000:]
        )
        happened.append(what)
        _assert_every_checkpoint_loads(save)
        assert what != "timeout", (
            f"attempt {attempt} ({moment}) hung:\n" + log.read_text()[-3000:]
        )
        if what == "finished":
            break
    # Most kills landed where they were aimed (a few windows are short: on a loaded machine a
    # deletion can be missed, and a fast one can finish training early), among them while
    # saving and during the evaluation.
    assert sum(what in _SCHEDULE for what in happened) >= 8, happened
    assert {"saving", "evaluating"} <= set(happened), happened

    final = run_checked(
        command
    )  # finishes what is left, or redoes nothing but the evaluation
    output_text = final.stdout + final.stderr
    assert "Traceback" not in output_text
    _assert_every_checkpoint_loads(save)
    assert not [
        e for e in os.listdir(save) if e.startswith((".staging+", ".deleting+"))
    ]
    with open(os.path.join(output, "train_log.txt")) as fin:
        log = fin.read()
    assert re.findall(r"^epoch: (\d+)/", log, re.M) == [
        str(e) for e in range(1, epochs + 1)
    ]
    with open(os.path.join(output, "evaluation.json")) as fin:
        evaluated = json.load(fin)["checkpoints"]
    assert len(re.findall(r"^condition: clean,", log, re.M)) == len(evaluated)
    ends = [
        path
        for path in glob.glob(os.path.join(save, "CKPT+*"))
        if "ccc" in yaml.safe_load(open(os.path.join(path, "CKPT.yaml")))
    ]
    assert len(ends) == epochs
    assert _outputs(output) == _outputs(straight)
