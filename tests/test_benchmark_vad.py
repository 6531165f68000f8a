"""The voice activity benchmark runs end to end and prints its figures."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vad_benchmark_prints_speed_precision_and_recall():
    done = subprocess.run(
        [sys.executable, "tools/benchmark_vad.py", "--minutes", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "audio hours per CPU minute" in done.stdout
    assert "| 3 dB (default) |" in done.stdout and "| none |" in done.stdout
