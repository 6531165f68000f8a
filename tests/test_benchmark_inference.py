"""The inference benchmark runs end to end (its figures are for the README, not asserted here)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("PyTorch fp32", "PyTorch bf16", "ONNX fp32", "ONNX int8")


def test_inference_benchmark_prints_each_backend_and_batch(tmp_path):
    figures = tmp_path / "inference.json"
    done = subprocess.run(
        [
            sys.executable,
            "tools/benchmark_inference.py",
            "--small",
            "--repeats",
            "1",
            "--bf16",
            "--json",
            str(figures),
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
        (backend, batch) for backend in BACKENDS for batch in ("1", "8")
    }, done.stdout
    written = json.loads(figures.read_text())
    assert isinstance(written["cpu_bf16"], bool)
    assert written["peak_fp32"] > 0 and written["peak_bf16"] > 0
    speeds = written["speeds"]["demo"]
    assert set(speeds) == set(BACKENDS)
    assert all(speeds[b][size] > 0 for b in BACKENDS for size in ("1", "8"))
    assert "| large |" not in done.stdout
    assert "demo: ONNX int8 / PyTorch fp32 at batch 1: " in done.stdout
    assert "demo: PyTorch bf16 / PyTorch fp32 at batch 1: " in done.stdout
    assert ", at batch 8: " in done.stdout
    assert "matmul peak float32" in done.stdout
