"""The benchmark script runs end to end (its figures are for the README, not asserted here)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_prints_the_paths_and_their_ratios(tmp_path):
    figures = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "tools/benchmark_student.py",
            "--small",
            "--utterances",
            "8",
            "--batch_size",
            "4",
            "--bf16",
            "--json",
            str(figures),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for path in (
        "(a) authors' loop, fp32",
        "(b) recipe, fp32",
        "(c) recipe, bf16",
    ):
        assert f"| {path} |" in done.stdout, done.stdout
    assert "ratio b/a" in done.stdout and "matmul peak" in done.stdout
    assert "| (c) recipe, bf16 |" in done.stdout and "ratio c/b" in done.stdout
    written = json.loads(figures.read_text())
    assert isinstance(written["cpu_bf16"], bool)
    assert written["peak_fp32"] > 0 and written["peak_bf16"] > 0
    assert set(written["paths"]) == {
        "authors_fp32",
        "recipe_fp32",
        "recipe_bf16",
    }
    assert all(speed > 0 for speed in written["paths"].values())
