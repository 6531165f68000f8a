"""Runs train.py as a user does, with the settings of a few-second run on a tiny encoder."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_train(hparams_file, results, *overrides):
    """``python train.py <hparams_file> <tiny-run settings> <overrides>``; fails the test if the
    run fails, showing the end of its output. Results go under ``results``."""
    results = str(results)
    command = [
        sys.executable,
        "train.py",
        hparams_file,
        "--results_folder",
        results,
        "--encoder_hparams",
        "hparams/encoders/tiny_wav2vec2.yaml",
        "--encoder_cache",
        os.path.join(results, "encoders"),
        "--number_of_epochs",
        "1",
        "--batch_size",
        "4",
        "--test_batch_size",
        "4",
        "--num_workers",
        "0",
        "--head_hidden_size",
        "16",
        "--noprogressbar",
        *overrides,
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done
