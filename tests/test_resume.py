"""A student run killed mid-epoch resumes from its intra-epoch checkpoint and ends as planned."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import yaml
from recipe_run import ROOT, demo_arguments, run_checked, run_train, tiny_run_arguments

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


def test_student_killed_mid_epoch_resumes_and_ends_as_planned(tmp_path):
    results = tmp_path / "results"
    data_folder = str(tmp_path / "demo")
    run_train("hparams/teacher.yaml", results, "--data_folder", data_folder, *DEMO)

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
        run = subprocess.Popen(command, cwd=ROOT, stdout=fout, stderr=subprocess.STDOUT)
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
        "the run ended before it could be killed mid-epoch: " + first_log.read_text()[-3000:]
    )
    left = _checkpoints(save)
    assert [epoch for _, meta, epoch in left if "ccc" in meta] == [1]
    # Killed between saving a new intra-epoch checkpoint and deleting the old one there may be
    # two; killed while saving one, the newest has a file missing or cut short (SpeechBrain
    # writes the meta file first): the resumed run drops it and loads the newest complete one.
    intra = sorted(
        (meta["unixtime"], path) for path, meta, _ in left if meta.get("brain_intra_epoch_ckpt")
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

    log = open(os.path.join(results, "demo", "rm_tl_cl", "1986", "train_log.txt")).read()
    assert re.findall(r"^epoch: (\d+)/3", log, re.M) == ["1", "2", "3"]
    final = _checkpoints(save)
    assert sorted(epoch for _, meta, epoch in final if "ccc" in meta) == [1, 2, 3]
    assert not any(meta.get("brain_intra_epoch_ckpt") for _, meta, _ in final)
    assert os.path.isfile(os.path.join(results, "demo", "rm_tl_cl", "1986", "evaluation.json"))

    # A checkpoint cut short by a kill while saving (a file left empty) is dropped on resume.
    newest_end = max((meta["unixtime"], path) for path, meta, _ in final)[1]
    open(os.path.join(newest_end, "optimizer.ckpt"), "w").close()
    again = run_checked(command)
    output = again.stdout + again.stderr
    assert f"checkpoint {newest_end} cannot be loaded" in output
    assert not os.path.exists(newest_end)
    assert "Going into epoch 3" in output
