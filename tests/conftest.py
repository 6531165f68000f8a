"""Makes the repository root importable (train.py's library and recipes) for the tests, and
holds the fixtures several test files share, each built once per run."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from ctsl_brain.demo.corpus import prepare_demo_corpus  # noqa: E402

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
