"""The package as pip installs it: a wheel of ctsl_brain only, installed into a new environment,
whose ``ctsl-brain`` command predicts from another folder what ``python -m ctsl_brain`` predicts
from the checkout.

The new environment borrows the project's installed requirements through a ``.pth`` file (a
fresh torch would take the network and gigabytes), never the checkout."""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest
from ctsl_brain import __main__
from recipe_run import ROOT, environment_without_the_project, run_checked


def _wheel(folder):
    """Builds the package's wheel in ``folder`` from a copy of its sources (a build writes
    build/ and *.egg-info beside them); returns its path."""
    source = folder / "source"
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(
        os.path.join(ROOT, "ctsl_brain"),
        source / "ctsl_brain",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index"]
    run_checked([*pip, "--no-build-isolation", "-w", str(folder), str(source)])
    (wheel,) = glob.glob(str(folder / "*.whl"))
    return wheel


def _environment(folder, wheel):
    """A new environment in ``folder`` that finds the project's requirements, with ``wheel``
    installed into it; returns its site-packages."""
    venv.create(folder, with_pip=False)
    python = str(folder / "bin" / "python")
    site = run_checked(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    ).stdout.strip()
    project = {sysconfig.get_path(key) for key in ("purelib", "platlib")}
    with open(os.path.join(site, "project_requirements.pth"), "w") as fout:
        fout.write("".join(f"{path}\n" for path in sorted(project)))
    # The project's pip, run by the new environment's python, installs into that environment.
    pip = [python, "-m", "pip", "install", "--no-deps", "--no-index"]
    run_checked([*pip, wheel])
    return site


@pytest.mark.parametrize(
    "argv0, name",
    [
        ("/env/bin/ctsl-brain", "ctsl-brain"),
        ("/checkout/ctsl_brain/__main__.py", "python -m ctsl_brain"),
    ],
)
def test_usage_names_the_command_as_it_was_run(monkeypatch, argv0, name):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert __main__._parser().format_usage().startswith(f"usage: {name} ")


@pytest.mark.slow
def test_installed_command_predicts_what_the_checkout_predicts(
    teacher_export, tmp_path
):
    model, wavs = teacher_export["model"], teacher_export["test_files"]
    wheel = _wheel(tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as built:
        folders = {os.path.dirname(name) for name in built.namelist()}
    # The library only: no hparams, recipes, tests or tools.
    tops = {folder.split("/")[0] for folder in folders}
    assert {top for top in tops if not top.endswith(".dist-info")} == {
        "ctsl_brain"
    }
    assert {
        "ctsl_brain/demo",
        "ctsl_brain/deployment",
        "ctsl_brain/noise_banks",
    } <= folders

    site = _environment(tmp_path / "env", wheel)
    command = str(tmp_path / "env" / "bin" / "ctsl-brain")
    assert os.path.isfile(command)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environ = environment_without_the_project()

    def run_elsewhere(arguments):
        done = subprocess.run(
            arguments,
            cwd=elsewhere,
            env=environ,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    imported = run_elsewhere(
        [
            str(tmp_path / "env" / "bin" / "python"),
            "-c",
            "import ctsl_brain; print(ctsl_brain.__file__)",
        ]
    ).stdout.strip()
    assert imported == os.path.join(site, "ctsl_brain", "__init__.py")

    predict = ["predict", "--model", model, *wavs, "--device", "cpu"]
    predict += ["--noprogressbar"]
    installed, checkout = tmp_path / "installed.csv", tmp_path / "checkout.csv"
    run_elsewhere([command, *predict, "--out", str(installed)])
    run_checked(
        [sys.executable, "-m", "ctsl_brain", *predict, "--out", str(checkout)]
    )
    assert installed.read_text() == checkout.read_text()
    assert len(installed.read_text().splitlines()) == 1 + len(wavs)
