"""The recipe in SpeechBrain: its rows in tests/recipes/MSP-Podcast.csv, and
SpeechBrain's own checks (tools/speechbrain_checks.sh) when the environment
variable SPEECHBRAIN_CHECKOUT names a SpeechBrain checkout."""

import csv
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT_VARIABLE = "SPEECHBRAIN_CHECKOUT"
# Where the recipe is in a SpeechBrain checkout.
RECIPE = "recipes/MSP-Podcast/emotion_recognition/contrastive_teacher_student"
RECIPE_TESTS = os.path.join(ROOT, "tests", "recipes", "MSP-Podcast.csv")
SETUP = os.path.join(ROOT, "tests", "recipes", "setup")
CHECKS = os.path.join(ROOT, "tools", "speechbrain_checks.sh")


def _rows():
    with open(RECIPE_TESTS, newline="", encoding="utf-8") as fin:
        return list(csv.DictReader(fin, skipinitialspace=True))


def _in_project(path):
    """The file of this repository that is ``path`` in a SpeechBrain checkout."""
    assert path.startswith(RECIPE + "/"), f"{path} is not in {RECIPE}"
    return os.path.join(ROOT, path[len(RECIPE) + 1 :])


def _setup_name(row):
    """run_recipe_tests runs tests/recipes/setup/<script>/<hparam file> before
    a row, with '/' as '_' and without extensions, if it exists."""
    script = row["Script_file"]
    hparam = os.path.relpath(row["Hparam_file"], os.path.dirname(script))
    folder = script[: -len(".py")].replace("/", "_")
    return os.path.join(folder, hparam[: -len(".yaml")].replace("/", "_"))


def test_every_yaml_has_a_row_with_debug_flags():
    """SpeechBrain's test_recipe_list: each YAML file of the recipe has a row,
    with debug flags."""
    rows = _rows()
    pattern = os.path.join(ROOT, "hparams", "**", "*.yaml")
    yaml_files = glob.glob(pattern, recursive=True)
    expected = {f"{RECIPE}/{os.path.relpath(p, ROOT)}" for p in yaml_files}
    listed = {row["Hparam_file"] for row in rows}
    assert sorted(expected - listed) == []
    assert sorted(listed - expected) == []
    no_flags = [r["Hparam_file"] for r in rows if not r["test_debug_flags"]]
    assert no_flags == []


def test_rows_name_files_of_the_recipe():
    fields = ("Script_file", "Hparam_file", "Data_prep_file", "Readme_file")
    for row in _rows():
        assert row["Dataset"] == "MSP-Podcast"
        for field in fields:
            if row[field]:
                assert os.path.isfile(_in_project(row[field])), row[field]


def test_setup_scripts_are_executable_and_belong_to_rows():
    folders = {os.path.dirname(_setup_name(row)) for row in _rows()}
    for path in glob.glob(os.path.join(SETUP, "*", "*")):
        name = os.path.relpath(path, SETUP)
        assert os.path.dirname(name) in folders, f"{name}: no row's script"
        assert os.access(path, os.X_OK), f"{name} is not executable"


@pytest.mark.slow
def test_speechbrain_checks_pass():
    """tools/speechbrain_checks.sh: SpeechBrain's consistency tests, its
    linters and the recipe tests, in a scratch copy of the checkout."""
    checkout = os.environ.get(CHECKOUT_VARIABLE)
    if not checkout:
        pytest.skip(
            f"{CHECKOUT_VARIABLE} is not set: set it to a SpeechBrain checkout "
            "(git clone https://github.com/speechbrain/speechbrain) to run "
            "SpeechBrain's checks on the recipe"
        )
    assert os.path.isdir(checkout), f"{CHECKOUT_VARIABLE}: no folder {checkout}"
    result = subprocess.run(
        ["bash", CHECKS, checkout],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]


def _names(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as fin:
        lines = [line.split("#")[0].strip() for line in fin]
    return {
        line.split("=")[0].split(">")[0].split("<")[0].strip().lower()
        for line in lines
        if line and not line.startswith("-")
    }


def test_extra_requirements_are_pinned_in_the_environment():
    """SpeechBrain installs a recipe's extra_requirements.txt; the project's
    environment (requirements.txt) holds each of them."""
    extra = _names("extra_requirements.txt")
    assert extra, "extra_requirements.txt lists nothing"
    assert extra <= _names("requirements.txt")


def test_extra_requirements_are_ranges():
    """SpeechBrain's maintainers ask community recipes for ``>=`` ranges there; the exact
    versions are pinned in requirements.txt."""
    with open(
        os.path.join(ROOT, "extra_requirements.txt"), encoding="utf-8"
    ) as fin:
        lines = [line.split("#")[0].strip() for line in fin]
    for line in filter(None, lines):
        assert ">=" in line and "==" not in line, line


def test_the_code_parses_as_speechbrains_ruff_reads_it():
    """SpeechBrain's ruff configuration targets Python 3.8: syntax newer than that (such as
    parenthesised context managers, which ruff format writes for py310) fails its checks."""
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed (requirements-dev.txt)")
    files = [
        path
        for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True)
        if "/.venv/" not in path and "/results/" not in path
    ]
    done = subprocess.run(
        [
            ruff,
            "check",
            "--isolated",
            "--target-version",
            "py38",
            "--select",
            "E9",
            *files,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
