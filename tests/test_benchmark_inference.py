"""The inference benchmark runs end to end (its figures are for the README, not asserted here)."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inference_benchmark_prints_each_backend_and_batch():
    done = subprocess.run(
        [
            sys.executable,
            "tools/benchmark_inference.py",
            "--small",
            "--repeats",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [
        line.split("|")[1:4]
        for line in done.stdout.splitlines()
        if line.startswith("| demo |")
    ]
    found = {(backend.strip(), batch.strip()) for _, backend, batch in rows}
    assert found == {
        (backend, batch)
        for backend in ("PyTorch fp32", "ONNX fp32", "ONNX int8")
        for batch in ("1", "8")
    }, done.stdout
    assert "| large |" not in done.stdout
    assert "demo: ONNX int8 / PyTorch fp32 at batch 1: " in done.stdout
    assert ", at batch 8: " in done.stdout
    assert "float32 matmul peak" in done.stdout
