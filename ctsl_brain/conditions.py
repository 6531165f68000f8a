"""The test conditions as manifests: the clean test set and its noisy versions, recorded (a
folder per condition) or mixed with the held-out test noise at each SNR, and the same for the
dev set, for the embedding analysis.
"""

import csv
import hashlib
import json
import os

import torch

from .dataio import (
    MANIFEST_COLUMNS,
    DataError,
    MissingInputError,
    Problem,
    inspect_audio,
    load_audio,
    remove_stale_staging,
    settle_problems,
    write_audio_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from .noise import UtteranceAddNoise, snr_db

__all__ = ["condition_names", "condition_manifest", "prepare_test_conditions"]


def _snr_name(snr):
    return f"{float(snr):g}dB"


def condition_names(snrs, recorded=None):
    """Names of the test conditions.

    Arguments
    ---------
    snrs : sequence of float
        SNRs (dB) of the simulated conditions.
    recorded : dict or None
        Condition name -> folder of recorded noisy versions; when given, its
        names replace the simulated ones.

    Returns
    -------
    names : list of str
        ``clean`` first, then one per SNR or recorded folder.

    Example
    -------
    >>> condition_names([10, 5, 0])
    ['clean', '10dB', '5dB', '0dB']
    >>> condition_names([10], recorded={"near": "rec/near"})
    ['clean', 'near']
    """
    if recorded:
        return ["clean", *recorded]
    return ["clean", *(_snr_name(snr) for snr in snrs)]


def condition_manifest(manifest_folder, name, split="test"):
    """Path of the manifest of one condition of a split.

    Arguments
    ---------
    manifest_folder : str
        Folder of the manifests.
    name : str
        The condition, from :func:`condition_names`.
    split : str
        ``test`` or ``dev``.

    Returns
    -------
    path : str
        ``<split>.csv`` for ``clean``, otherwise ``<split>_<name>.csv``, in
        ``manifest_folder``.

    Example
    -------
    >>> condition_manifest("manifests", "5dB", split="dev")
    'manifests/dev_5dB.csv'
    """
    return os.path.join(
        manifest_folder,
        f"{split}.csv" if name == "clean" else f"{split}_{name}.csv",
    )


def _read_rows(path):
    with open(path, newline="") as fin:
        return list(csv.DictReader(fin))


def _stamp(path):
    """Content digest of a file.

    A manifest rewritten with the same rows does not trigger a new mix.
    """
    with open(path, "rb") as fin:
        return hashlib.sha1(fin.read()).hexdigest()


def _up_to_date(stamp_path, options, manifest):
    if not (os.path.isfile(stamp_path) and os.path.isfile(manifest)):
        return False
    with open(stamp_path) as fin:
        return json.load(fin) == options


def prepare_test_conditions(
    manifest_folder,
    *,
    data_folder,
    snrs=(10, 5, 0),
    noise_csv=None,
    seed=0,
    recorded=None,
    sample_rate=16000,
    min_duration=0.1,
    drop_bad_rows=False,
    split="test",
):
    """Writes a manifest per noisy condition of a split beside ``<split>.csv``.

    Arguments
    ---------
    manifest_folder : str
        Holds ``<split>.csv`` (the clean set); the conditions are written
        beside it.
    data_folder : str
        Replaces ``$data_root`` in the manifests and noise bank.
    snrs : list of float
        SNRs (dB) of the simulated conditions.
    noise_csv : str
        Held-out test noise bank (AddNoise CSV); needed for simulated
        conditions.
    seed : int
        Seed of the noise draws: the same seed gives the same mixtures.
    recorded : dict or None
        Condition name -> folder of recorded noisy versions of the test files
        (same file names). When given, these replace the simulated
        conditions.
    sample_rate : int
        Rate of the mixtures.
    min_duration : float
        Shortest usable recorded file, in seconds.
    drop_bad_rows : bool
        For recorded conditions: leave out unusable files instead of stopping.
    split : str
        ``test``, or ``dev`` for the noisy dev sets of the embedding analysis.

    Returns
    -------
    manifests : dict
        Condition name -> manifest path, ``clean`` first.

    Raises
    ------
    ctsl_brain.dataio.MissingInputError
        The noise bank is needed and missing, or a recorded folder is not a
        folder.
    ctsl_brain.dataio.DataError
        Recorded files are unusable (unless ``drop_bad_rows``), or none is.
    """
    clean_manifest = condition_manifest(manifest_folder, "clean", split)
    rows = _read_rows(clean_manifest)
    manifests = {"clean": clean_manifest}
    if recorded:
        for name, folder in recorded.items():
            manifests[name] = _recorded_condition(
                rows,
                name,
                folder,
                manifest_folder,
                data_folder,
                min_duration,
                drop_bad_rows,
                split,
            )
        return manifests
    if snrs and not (noise_csv and os.path.isfile(noise_csv)):
        raise MissingInputError(
            f"noise bank {noise_csv} does not exist: the noisy {split} conditions "
            f"(--test_snrs) are mixed from it; prepare the noise banks (--noise_folder), or "
            f"give recorded conditions (--recorded_{split}_folders)"
        )
    for snr in snrs:
        name = _snr_name(snr)
        manifests[name] = _simulated_condition(
            rows,
            name,
            float(snr),
            noise_csv,
            seed,
            manifest_folder,
            data_folder,
            sample_rate,
            split,
        )
    return manifests


def _recorded_condition(
    rows, name, folder, manifest_folder, data_folder, min_duration, drop, split
):
    if not os.path.isdir(folder):
        raise MissingInputError(
            f"recorded {split} condition {name}: {folder} is not a folder; give the folder "
            f"of its recordings in --recorded_{split}_folders"
        )
    out, problems = [], []
    for row in rows:
        clean = row["wav"].replace("$data_root", data_folder)
        path = os.path.join(folder, os.path.basename(clean))
        duration, issue = inspect_audio(
            path, min_duration=min_duration, check_silence=False
        )
        if issue is not None:
            problems.append(
                Problem(f"condition {name}, {split} item {row['ID']}", *issue)
            )
            continue
        out.append(
            [row["ID"], os.path.abspath(path), f"{duration:.3f}"]
            + [row[c] for c in MANIFEST_COLUMNS[3:]]
        )
    settle_problems(
        problems,
        total=len(rows),
        drop=drop,
        source=f"recorded {split} condition {name} ({folder})",
        report_path=os.path.join(
            manifest_folder, f"{split}_{name}_problems.tsv"
        ),
    )
    if not out:
        raise DataError(
            f"recorded {split} condition {name}: no usable file in {folder}"
        )
    path = condition_manifest(manifest_folder, name, split)
    write_csv_atomic(path, MANIFEST_COLUMNS, out)
    return path


def _simulated_condition(
    rows, name, snr, noise_csv, seed, manifest_folder, data_folder, rate, split
):
    manifest = condition_manifest(manifest_folder, name, split)
    stamp_path = os.path.join(manifest_folder, f"{split}_{name}.json")
    clean_manifest = condition_manifest(manifest_folder, "clean", split)
    options = {
        "snr": snr,
        "seed": seed,
        "sample_rate": rate,
        split: _stamp(clean_manifest),
        "noise": [os.path.abspath(noise_csv), _stamp(noise_csv)],
    }
    if _up_to_date(stamp_path, options, manifest):
        return manifest
    if os.path.exists(stamp_path):
        os.remove(stamp_path)

    audio_folder = os.path.join(manifest_folder, f"{split}_{name}")
    os.makedirs(audio_folder, exist_ok=True)
    remove_stale_staging(audio_folder)
    remove_stale_staging(manifest_folder)
    mixer = UtteranceAddNoise(
        noise_csv,
        snr_low=snr,
        snr_high=snr,
        replacements={"data_root": data_folder},
        seed=seed,
        sample_rate=rate,
    )
    # AddNoise scales the speech by 1 - f to make room for the noise.
    speech_scale = 1 - 1 / (10 ** (snr / 20) + 1)
    out = []
    for row in rows:
        clean = load_audio(
            row["wav"].replace("$data_root", data_folder), rate
        ).unsqueeze(0)
        with torch.no_grad():
            noisy = mixer(clean, torch.ones(1))
        speech = speech_scale * clean
        achieved = float(snr_db(speech, noisy - speech, torch.ones(1))[0])
        path = os.path.abspath(os.path.join(audio_folder, f"{row['ID']}.wav"))
        write_audio_atomic(path, noisy[0].numpy(), rate)
        out.append(
            [
                row["ID"],
                path,
                row["duration"],
                *(row[c] for c in MANIFEST_COLUMNS[3:]),
            ]
            + [f"{achieved:.3f}"]
        )
    write_csv_atomic(manifest, (*MANIFEST_COLUMNS, "snr"), out)
    write_text_atomic(stamp_path, json.dumps(options, indent=2))
    return manifest
