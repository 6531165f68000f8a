"""Data, noise and field folders mounted read-only: the preparation and a run work, since
nothing is written there, and the inputs are left as they were."""

import contextlib
import errno
import os
import subprocess

import numpy as np
import pytest
import soundfile
from corpus_prepare import prepare_corpus
from ctsl_brain.noise_banks.field import extract_field_noise
from recipe_run import (
    RATE,
    folder_snapshot,
    msp_release,
    preparation_settings,
    run_train,
    voice,
)


def _run(*command):
    """The exit status of ``command``; 127 where it is not installed."""
    try:
        return subprocess.run(
            command, capture_output=True, check=False
        ).returncode
    except FileNotFoundError:
        return 127


def _unwritable(folder):
    """Whether a file can be created in ``folder``."""
    try:
        with open(os.path.join(folder, ".probe"), "x"):
            pass
    except OSError:
        return True
    os.remove(os.path.join(folder, ".probe"))
    return False


@contextlib.contextmanager
def read_only(*folders):
    """``folders`` read-only where they are: bind-mounted read-only onto themselves (as root),
    else made immutable with ``chattr +i`` (as root), else without write permission (a user
    other than root cannot write then); restored on leaving, even after a failure."""
    undo = []
    try:
        for folder in map(str, folders):
            if os.geteuid() == 0 and not _run(
                "mount", "--bind", folder, folder
            ):
                undo.append(("umount", folder))
                _run("mount", "-o", "remount,bind,ro", folder)
            elif os.geteuid() == 0 and not _run("chattr", "-R", "+i", folder):
                undo.append(("chattr", "-R", "-i", folder))
            elif os.geteuid() != 0:
                _run("chmod", "-R", "a-w", folder)
                undo.append(("chmod", "-R", "u+w", folder))
            if not _unwritable(folder):
                pytest.skip(
                    f"{folder} cannot be made read-only here: this needs root (a bind mount "
                    "or chattr) or a user other than root (chmod)"
                )
        yield
    finally:
        for command in reversed(undo):
            assert not _run(*command), f"could not undo {command}"


def _noise_folder(folder, seconds=40):
    folder.mkdir()
    rng = np.random.default_rng(1)
    soundfile.write(
        folder / "street.wav", 0.1 * rng.standard_normal(seconds * RATE), RATE
    )
    return folder


def _field_folder(folder):
    """A field recording of 30 s: red noise with a voice at 10-14 s."""
    (folder / "room").mkdir(parents=True)
    rng = np.random.default_rng(2)
    noise = np.cumsum(rng.standard_normal(30 * RATE))
    noise = 0.02 * (noise - np.convolve(noise, np.ones(400) / 400, "same"))
    noise[10 * RATE : 14 * RATE] += voice(4.0, 3)
    soundfile.write(folder / "room" / "take1.wav", noise, RATE)
    return folder


def _hparams(tmp_path, release, noise, field):
    return preparation_settings(
        tmp_path,
        release,
        noise_folder=str(noise),
        test_snrs=[5, 0],
        field_folder=str(field),
        field_bank_folder=str(tmp_path / "manifests" / "field"),
        field_vad_threshold=0.5,
        field_margin_seconds=0.3,
        field_min_stretch_seconds=1.0,
        field_min_total_seconds=10.0,
        field_foreground_db=3.0,
    )


def _outputs(folder):
    """The snapshot of a preparation's outputs (its lock files record who prepares)."""
    return {
        name: state
        for name, state in folder_snapshot(folder).items()
        if not name.endswith(".lock")
    }


def _snapshots(folders):
    return {name: folder_snapshot(path) for name, path in folders.items()}


@pytest.fixture
def inputs(tmp_path):
    """An MSP-Podcast-like release, a noise folder and a field folder."""
    return {
        "release": msp_release(tmp_path / "MSP"),
        "noise": _noise_folder(tmp_path / "noise"),
        "field": _field_folder(tmp_path / "field"),
    }


def test_the_preparation_writes_only_into_the_manifest_folder(tmp_path, inputs):
    hparams = _hparams(tmp_path, **inputs)
    before = _snapshots(inputs)
    with read_only(*inputs.values()):
        prepare_corpus(hparams)
        written = _outputs(tmp_path / "manifests")
        prepare_corpus(hparams)  # up to date: checked, not redone
    assert _outputs(tmp_path / "manifests") == written
    for name in ("train", "dev", "test", "noise_adapt", "noise_test"):
        assert f"{name}.csv" in written, name
    for snr in (5, 0):
        assert any(f"{snr}dB" in path for path in written), snr
    assert any(path.startswith("field/") for path in written)
    assert _snapshots(inputs) == before


def test_field_noise_is_extracted_from_a_read_only_folder(tmp_path, inputs):
    before = folder_snapshot(inputs["field"])
    with read_only(inputs["field"]):
        result = extract_field_noise(
            inputs["field"], tmp_path / "out", min_total_seconds=10
        )
    assert os.listdir(result["stretch_folder"])
    assert folder_snapshot(inputs["field"]) == before


@pytest.mark.slow
def test_a_teacher_trains_on_read_only_inputs(tmp_path, inputs):
    results = tmp_path / "results"
    before = _snapshots(inputs)
    with read_only(*inputs.values()):
        run_train(
            "hparams/teacher.yaml",
            results,
            "--data_folder",
            str(inputs["release"]),
            "--noise_folder",
            str(inputs["noise"]),
            "--field_folder",
            str(inputs["field"]),
            "--field_min_total_seconds",
            "10",
            "--adapt_noise_minutes",
            "0.5",
            "--test_snrs",
            "[0]",
        )
    run = results / "msp_podcast" / "teacher" / "1986"
    assert (run / "test_results.json").is_file()
    assert (results / "msp_podcast" / "manifests" / "field").is_dir()
    assert _snapshots(inputs) == before


def test_read_only_means_unwritable(tmp_path):
    (tmp_path / "data").mkdir()
    with read_only(tmp_path / "data"):
        with pytest.raises(OSError) as caught:
            (tmp_path / "data" / "new").write_text("")
        assert caught.value.errno in (errno.EROFS, errno.EPERM, errno.EACCES)
    assert not _unwritable(tmp_path / "data")
