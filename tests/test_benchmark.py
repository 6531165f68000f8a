"""The benchmark script runs end to end (its figures are for the README, not asserted here)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_prints_both_paths_and_their_ratio():
    done = subprocess.run(
        [
            sys.executable,
            "tools/benchmark_student.py",
            "--small",
            "--utterances",
            "8",
            "--batch_size",
            "4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "| (a) straightforward |" in done.stdout
        and "| (b) recipe |" in done.stdout
    )
    assert "ratio b/a" in done.stdout and "matmul peak" in done.stdout
