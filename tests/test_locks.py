"""One run per folder: a live holder stops a second run with one message, a killed holder's
lock is taken over, preparations of the same folders take turns and write nothing twice."""

import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from ctsl_brain import locks
from ctsl_brain.locks import (
    PREPARE_LOCK,
    RUN_LOCK,
    FolderInUseError,
    FolderLock,
)
from recipe_run import (
    ROOT,
    demo_arguments,
    folder_snapshot,
    preparation_settings,
    tiny_run_arguments,
)

# Holds a folder's lock until its standard input closes.
HOLDER = """
import sys
from ctsl_brain.locks import FolderLock
lock = FolderLock(sys.argv[1], sys.argv[2]).acquire()
print("held", flush=True)
sys.stdin.read()
lock.release()
"""


def _hold(folder, name=RUN_LOCK):
    """A process that holds ``folder``'s lock; it ends when its stdin is closed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _end(holder):
    holder.stdin.close()
    holder.wait(timeout=30)


def test_a_live_holder_stops_a_second_run_with_one_message(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(FolderInUseError) as raised:
            FolderLock(tmp_path).acquire()
    finally:
        _end(holder)
    message = str(raised.value)
    assert "\n" not in message
    for part in (
        str(tmp_path),
        f"PID {holder.pid}",
        f"host {socket.gethostname()}",
        "started 20",
        f"kill {holder.pid}",
    ):
        assert part in message, message
    # Once the holder has ended, the folder is free, and its file was emptied.
    assert (tmp_path / RUN_LOCK).read_text() == ""
    FolderLock(tmp_path).acquire().release()


def test_a_killed_holders_lock_is_taken_over(tmp_path, caplog):
    holder = _hold(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with caplog.at_level(logging.INFO, logger="ctsl_brain.locks"):
        lock = FolderLock(tmp_path).acquire()
    record = json.loads((tmp_path / RUN_LOCK).read_text())
    lock.release()
    assert f"taking over the lock of PID {holder.pid}" in caplog.text
    assert record["pid"] == os.getpid()
    assert record["host"] == socket.gethostname()


def test_a_waiting_lock_takes_turns_with_the_holder(tmp_path, caplog):
    holder = _hold(tmp_path, PREPARE_LOCK)
    lock = FolderLock(tmp_path, PREPARE_LOCK, "prepares", wait=True)
    subprocess.Popen(
        ["sh", "-c", "sleep 1"]
    ).wait()  # let the holder run a moment
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="ctsl_brain.locks"):
        ender = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import os, time; time.sleep(1); os.kill({holder.pid}, 9)",
            ]
        )
        with lock:
            waited = time.monotonic() - start
    ender.wait()
    holder.wait(timeout=30)
    assert waited >= 0.5
    assert f"waiting for PID {holder.pid}" in caplog.text
    assert "prepares" in caplog.text


@pytest.fixture
def no_file_locks(monkeypatch):
    """A filesystem without file locks (some network mounts): flock fails with ENOLCK."""

    def flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "flock", flock)


def _record(folder, pid, host=None):
    (folder / RUN_LOCK).write_text(
        json.dumps(
            {
                "pid": pid,
                "host": host or socket.gethostname(),
                "started": "2026-12-06T05:00:00",
                "command": "train.py hparams/teacher.yaml",
            }
        )
    )


def test_without_file_locks_a_dead_pid_on_this_host_is_taken_over(
    tmp_path, no_file_locks
):
    ended = subprocess.Popen(["true"])
    ended.wait()
    _record(tmp_path, ended.pid)
    lock = FolderLock(tmp_path).acquire()
    assert json.loads((tmp_path / RUN_LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_without_file_locks_a_live_pid_on_this_host_holds(
    tmp_path, no_file_locks
):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        _record(tmp_path, sleeper.pid)
        with pytest.raises(
            FolderInUseError, match=f"PID {sleeper.pid} on host"
        ):
            FolderLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_without_file_locks_another_hosts_run_is_not_guessed(
    tmp_path, no_file_locks
):
    _record(tmp_path, 4242, host="node-17")
    with pytest.raises(FolderInUseError) as raised:
        FolderLock(tmp_path).acquire()
    message = str(raised.value)
    assert "PID 4242 on host node-17" in message
    assert f"delete {tmp_path / RUN_LOCK}" in message


@pytest.mark.slow
def test_train_py_stops_on_a_folder_a_live_run_holds(tmp_path):
    results = tmp_path / "results"
    output = results / "demo" / "teacher" / "1986"
    holder = _hold(output)
    try:
        before = folder_snapshot(output)
        done = subprocess.run(
            [
                sys.executable,
                "train.py",
                "hparams/teacher.yaml",
                *tiny_run_arguments(results),
                *demo_arguments(),
                "--data_folder",
                str(tmp_path / "data"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        after = folder_snapshot(output)
    finally:
        _end(holder)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: another process runs in {output}: PID {holder.pid}"
    )
    assert "Traceback" not in done.stderr
    # Nothing was written in the run's folder, and no corpus was prepared.
    assert after == before
    assert not (tmp_path / "data").exists()


def test_a_second_study_on_a_folder_stops_before_any_stage(tmp_path):
    import study

    folder = tmp_path / "results" / "demo" / "study" / "1986"
    holder = _hold(folder)
    try:
        with pytest.raises(FolderInUseError, match="runs a study in"):
            study.main(["--results_folder", str(tmp_path / "results")])
    finally:
        _end(holder)
    assert sorted(os.listdir(folder)) == [RUN_LOCK]


# Runs prepare_corpus with the settings given as JSON and prints how many files it put in
# place (every output is written under a temporary name and renamed).
PREPARER = """
import json, os, sys
renamed = []
real_replace, real_rename = os.replace, os.rename
def replace(src, dst, *a, **k):
    renamed.append(str(dst))
    return real_replace(src, dst, *a, **k)
def rename(src, dst, *a, **k):
    renamed.append(str(dst))
    return real_rename(src, dst, *a, **k)
os.replace, os.rename = replace, rename
from corpus_prepare import prepare_corpus
prepare_corpus(json.loads(sys.argv[1]))
print(len(renamed))
"""


def _demo_settings(root):
    return preparation_settings(
        root,
        root / "data",
        corpus="demo",
        prepare_options={
            "n_train": 12,
            "n_dev": 4,
            "n_test": 4,
            "adapt_noise_minutes": 0.2,
            "test_noise_minutes": 0.2,
        },
    )


def _prepare(settings):
    return subprocess.Popen(
        [sys.executable, "-c", PREPARER, json.dumps(settings)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _renamed(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return int(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_preparations_at_once_take_turns_and_write_nothing_twice(tmp_path):
    settings = _demo_settings(tmp_path / "both")
    first, second = _prepare(settings), _prepare(settings)
    counts = sorted([_renamed(first), _renamed(second)])
    # The same preparation alone, for comparison.
    alone = _demo_settings(tmp_path / "alone")
    written = _renamed(_prepare(alone))
    assert written > 0
    assert counts == [0, written]
    assert _renamed(_prepare(alone)) == 0
    # The same files, each written once.
    assert _files(tmp_path / "both") == _files(tmp_path / "alone")


def _files(folder):
    return {
        name for name in folder_snapshot(folder) if not name.endswith(".lock")
    }
