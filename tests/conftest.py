"""Makes the repository root importable (train.py's library and recipes) for the tests, and
holds the fixtures several test files share, each built once per run."""

import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from ctsl_brain.__main__ import main  # noqa: E402
from ctsl_brain.demo.corpus import prepare_demo_corpus  # noqa: E402
from recipe_run import RATE, msp_release, run_train  # noqa: E402

# recipe_run.demo_arguments' corpus, as prepare_demo_corpus's options.
DEMO_CORPUS = {
    "n_train": 12,
    "n_dev": 4,
    "n_test": 4,
    "adapt_noise_minutes": 0.2,
    "test_noise_minutes": 0.2,
}


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    """The demo corpus of recipe_run.demo_arguments(): its folder and its CSV files."""
    folder = tmp_path_factory.mktemp("demo")
    return str(folder), prepare_demo_corpus(str(folder), **DEMO_CORPUS)


@pytest.fixture(scope="session")
def teacher_export(tmp_path_factory):
    """A tiny teacher trained for 2 epochs on recipe_run.msp_release, and its export with
    ONNX models, moved after writing: a model folder does not depend on where it was written.

    A dict: ``results`` (the results folder), ``arguments`` (the data overrides of the run,
    for a student of it), ``data_folder`` (the release), ``run`` (the run folder),
    ``manifests``, ``model`` (the export) and ``test_files`` (the Test1 utterances).
    """
    base = tmp_path_factory.mktemp("teacher_export")
    release = msp_release(base / "MSP")
    noise = base / "noise"
    noise.mkdir()
    rng = np.random.default_rng(1)
    soundfile.write(
        noise / "street.wav", 0.1 * rng.standard_normal(60 * RATE), RATE
    )
    results = base / "results"
    arguments = [
        "--data_folder",
        str(release),
        "--noise_folder",
        str(noise),
        "--adapt_noise_minutes",
        "0.5",
        "--test_snrs",
        "[0]",
    ]
    run_train("hparams/teacher.yaml", results, *arguments, number_of_epochs=2)
    run_folder = str(results / "msp_podcast" / "teacher" / "1986")
    export = ["export", "--run", run_folder, "--out", str(base / "written")]
    assert main([*export, "--onnx-int8"]) == 0
    shutil.move(base / "written", base / "model")
    manifests = str(results / "msp_podcast" / "manifests")
    test_files = pd.read_csv(os.path.join(manifests, "test.csv"))["wav"]
    return {
        "results": results,
        "arguments": arguments,
        "data_folder": str(release),
        "run": run_folder,
        "manifests": manifests,
        "model": str(base / "model"),
        "test_files": [
            path.replace("$data_root", str(release)) for path in test_files
        ],
    }
