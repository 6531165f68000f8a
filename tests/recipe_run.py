"""Runs train.py as a user does, with the settings of a few-second run on a tiny encoder, and
reads what a run wrote; helpers the tests share."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import soundfile
import torch
import torchaudio
from ctsl_brain.conditions import condition_manifest
from ctsl_brain.dataio import ATTRIBUTES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATE = 16000
# The Test1 utterances of msp_release: several longer than the 10 s an export used to window at.
TEST_SECONDS = (2.75, 5.5, 9.0, 10.4, 11.3, 12.6)


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


def preparation_settings(folder, data_folder, **replace):
    """The keys ``prepare_corpus`` reads, as train.py passes them: MSP-Podcast in
    ``data_folder``, manifests in ``folder``/manifests, 0 dB the only noisy condition;
    ``replace`` sets other values or adds keys."""
    manifests = os.path.join(str(folder), "manifests")
    settings = {
        "corpus": "msp_podcast",
        "data_folder": str(data_folder),
        "manifest_folder": manifests,
        "noise_folder": None,
        "adapt_noise_minutes": 0.2,
        "test_set": "Test1",
        "min_duration": 0.1,
        "drop_bad_rows": False,
        "label_min": 1.0,
        "label_max": 7.0,
        "prepare_options": {},
        "skip_prep": False,
        "recorded_test_folders": None,
        "test_snrs": [0],
        "test_noise_csv": os.path.join(manifests, "noise_test.csv"),
        "test_noise_seed": 1,
        "sample_rate": RATE,
        "recorded_dev_folders": None,
        "adapt_noise_csv": os.path.join(manifests, "noise_adapt.csv"),
        "dev_noise_seed": 2,
    }
    settings.update(replace)
    return settings


def environment_without_the_project():
    """This process's environment without Python's path settings, for a command that must
    not import the checkout (an installed package, a copied model folder)."""
    return {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME")
    }


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


def evaluated_epoch(run_folder):
    """The epoch of the checkpoint a finished run's evaluation treats as its best."""
    with open(os.path.join(run_folder, "evaluation.json")) as fin:
        return json.load(fin)["checkpoints"][0]["epoch"]


def run_predictions(run_folder, manifest_folder, data_folder, epoch=None):
    """A run's own predictions of the test files of every condition, by file path: those of
    ``epoch``'s checkpoint, or of the one its evaluation treats as its best."""
    if epoch is None:
        epoch = evaluated_epoch(run_folder)
    table = pd.read_csv(os.path.join(run_folder, "predictions.csv"))
    table = table[table["checkpoint"] == epoch]
    found = {}
    for condition, rows in table.groupby("condition"):
        manifest = pd.read_csv(
            condition_manifest(manifest_folder, condition)
        ).set_index("ID")
        for _, row in rows.iterrows():
            path = manifest.loc[row["ID"], "wav"].replace(
                "$data_root", data_folder
            )
            found[path] = np.array([row[f"{name}_pred"] for name in ATTRIBUTES])
    return found


def prediction_values(prediction):
    """A prediction of predict_file (a dict) as an array, in the attributes' order."""
    return np.array([prediction[name] for name in ATTRIBUTES])


def folder_snapshot(folder):
    """Content, size and modification time of every file under ``folder``: equal snapshots
    taken before and after a step show that it left the folder as it was."""
    state = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            stat = os.stat(path)
            state[os.path.relpath(path, folder)] = (
                digest,
                stat.st_size,
                stat.st_mtime_ns,
            )
    return state


def voice(seconds, seed, rate=RATE):
    """A voiced sound whose pitch and loudness move, so that utterances differ."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 120 + 80 * rng.random() + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    envelope = 0.5 + 0.5 * np.abs(np.sin(2 * np.pi * (1 + rng.random()) * t))
    signal = envelope * (0.3 * np.sin(phase) + 0.1 * np.sin(3 * phase))
    return (signal + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def msp_release(root):
    """An MSP-Podcast layout under ``root``: Audios/, Labels/labels_consensus.csv, with
    utterances of 2 to 13 s (Test1: TEST_SECONDS), every third at 44.1 kHz in stereo."""
    audios = root / "Audios"
    audios.mkdir(parents=True)
    (root / "Labels").mkdir()
    rows, n = [], 0
    splits = [
        ("Train", (3.0, 6.0, 8.5, 11.0, 4.0, 12.0)),
        ("Development", (3.5, 10.8)),
        ("Test1", TEST_SECONDS),
    ]
    for split, lengths in splits:
        for seconds in lengths:
            name = f"MSP-PODCAST_{n:04d}_0001.wav"
            sound = voice(seconds, n)
            if n % 3 == 2:  # as users have them: 44.1 kHz stereo
                stereo = [
                    _resample(sound, 44100),
                    _resample(0.8 * sound, 44100),
                ]
                soundfile.write(audios / name, np.stack(stereo, 1), 44100)
            else:
                soundfile.write(audios / name, sound, RATE)
            rows.append(
                f"{name},N,{2 + n % 5},{3 + n % 3},{4 - n % 2},{n % 4},Female,{split}"
            )
            n += 1
    header = "FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set"
    (root / "Labels" / "labels_consensus.csv").write_text(
        "\n".join([header, *rows]) + "\n"
    )
    return root


def _resample(signal, rate):
    return torchaudio.functional.resample(
        torch.as_tensor(signal), RATE, rate
    ).numpy()
