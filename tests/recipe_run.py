"""Runs train.py as a user does, with the settings of a few-second run on a tiny encoder."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_run_arguments(results, **replace):
    """The overrides of a few-second run on a tiny encoder, with results under ``results``;
    ``replace`` gives other values to some of them (a key given twice is a YAML error)."""
    results = str(results)
    arguments = [
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
    ]
    for key, value in replace.items():
        arguments[arguments.index(f"--{key}") + 1] = str(value)
    return arguments + ["--noprogressbar"]


def demo_arguments(*, n_train=12, n_dev=4, n_test=4):
    """Overrides for a demo corpus of a few utterances with 0 dB as the only noisy condition."""
    sizes = f"n_train: {n_train}, n_dev: {n_dev}, n_test: {n_test}"
    return [
        "--corpus",
        "demo",
        "--test_snrs",
        "[0]",
        "--prepare_options",
        f"{{{sizes}, adapt_noise_minutes: 0.2, test_noise_minutes: 0.2}}",
    ]


def run_checked(command, cwd=ROOT):
    """Runs ``command`` in ``cwd`` (the repository by default); fails the test if it fails,
    showing the end of its output."""
    done = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def run_train(hparams_file, results, *overrides, cwd=ROOT, **replace):
    """``python train.py <hparams_file> <tiny-run settings> <overrides>``; fails the test if the
    run fails. Results go under ``results``; ``replace`` changes tiny-run settings, as for
    :func:`tiny_run_arguments`. From another ``cwd`` than the repository, train.py and the YAML
    are given by their absolute paths, as a user elsewhere would."""
    script = "train.py"
    if os.path.abspath(cwd) != ROOT:
        script, hparams_file = (
            os.path.join(ROOT, script),
            os.path.join(ROOT, hparams_file),
        )
    return run_checked(
        [
            sys.executable,
            script,
            hparams_file,
            *tiny_run_arguments(results, **replace),
            *overrides,
        ],
        cwd=cwd,
    )
