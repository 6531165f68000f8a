"""MSP-Podcast preparation: the recipe's manifests from a release as distributed, and the
noise banks from the user's recordings of the target noise.

    from msp_podcast_prepare import prepare_msp_podcast
    prepare_msp_podcast("/data/MSP-Podcast", "results/msp_podcast/manifests",
                        noise_folder="/data/target_noise")

train.py calls it through corpus_prepare.py for ``--corpus msp_podcast``; ``--skip_prep True``
skips it (the manifests must then be in ``manifest_folder`` already). The release's layout and
the problems the preparation reports: docs/noise.md and docs/training.md.
"""

import csv
import json
import os

from ctsl_brain.dataio import (
    ATTRIBUTES,
    MANIFEST_COLUMNS,
    DataError,
    MissingInputError,
    Problem,
    SettingsError,
    check_labels,
    inspect_audio,
    longest_duration,
    remove_stale_staging,
    settle_problems,
    write_csv_atomic,
    write_text_atomic,
)
from ctsl_brain.noise_banks.banks import prepare_noise_banks

__all__ = [
    "LABEL_COLUMNS",
    "LABELS_FILE",
    "prepare_msp_podcast",
    "write_manifests",
]

LABELS_FILE = os.path.join("Labels", "labels_consensus.csv")
LABEL_COLUMNS = {
    "arousal": "EmoAct",
    "dominance": "EmoDom",
    "valence": "EmoVal",
}
REQUIRED_COLUMNS = (
    "FileName",
    "EmoAct",
    "EmoVal",
    "EmoDom",
    "SpkrID",
    "Split_Set",
)
KNOWN_SPLITS = ("Train", "Development", "Test1", "Test2", "Test3")
STAMP_FILE = "msp_podcast.json"


def _stamp(path):
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def prepare_msp_podcast(
    data_folder,
    save_folder,
    *,
    noise_folder,
    adapt_noise_minutes=30.0,
    test_noise_bank=True,
    test_set="Test1",
    min_duration=0.1,
    check_silence=True,
    drop_bad_rows=False,
    label_min=1.0,
    label_max=7.0,
    skip_prep=False,
):
    """Prepares an MSP-Podcast release and the target noise for the recipe.

    Writes into ``save_folder`` the manifests ``train.csv``, ``dev.csv`` and ``test.csv`` (see
    :func:`write_manifests`) and the noise banks ``noise_adapt.csv`` and ``noise_test.csv``
    with their segments (see :func:`ctsl_brain.noise_banks.banks.prepare_noise_banks`). What is up to
    date is not redone.

    Arguments
    ---------
    data_folder : str
        Root of the release (holds ``Audios/`` and ``Labels/``). Nothing in it is modified.
    save_folder : str
        Where the manifests, the noise banks and the reports go.
    noise_folder : str
        Recordings of the target noise (any format soundfile reads, any rate and channels).
    adapt_noise_minutes : float
        The first minutes of the noise adapt the student (the paper's 30); the rest is the
        held-out test noise.
    test_noise_bank : bool
        Whether a held-out test bank is needed (False with recorded noisy test sets).
    test_set : str
        ``Test1`` (release 1.8 has only this one), ``Test2`` or ``Test3``.
    min_duration : float
        Seconds below which an utterance is refused.
    check_silence : bool
        Decode every utterance to refuse silent ones and ones with NaN or infinite samples.
    drop_bad_rows : bool
        False: stop with the list of every problem. True: leave bad rows and files out.
    label_min, label_max : float
        Valid label range.
    skip_prep : bool
        If True, nothing is done (SpeechBrain's convention).

    Returns
    -------
    dict or None
        ``{"train", "dev", "test"}`` -> manifest path; None when skipped.
    """
    if skip_prep:
        return None
    if noise_folder is None:
        raise SettingsError(
            "noise_folder is not set: run with --noise_folder <folder of your recordings of the "
            "target noise> (the noise the student adapts to), or, where there are only "
            "recordings of the place with people talking in them, --field_folder <their folder>"
        )
    manifests = write_manifests(
        data_folder,
        save_folder,
        test_set=test_set,
        min_duration=min_duration,
        check_silence=check_silence,
        drop_bad_rows=drop_bad_rows,
        label_min=label_min,
        label_max=label_max,
    )
    prepare_noise_banks(
        noise_folder,
        save_folder,
        # A segment covers the longest utterance with room for a random offset.
        segment_seconds=longest_duration(manifests.values()) + 1.0,
        adapt_minutes=adapt_noise_minutes,
        test_bank=test_noise_bank,
        drop_bad_files=drop_bad_rows,
    )
    return manifests


def write_manifests(
    data_folder,
    manifest_folder,
    *,
    test_set="Test1",
    min_duration=0.1,
    check_silence=True,
    drop_bad_rows=False,
    label_min=1.0,
    label_max=7.0,
):
    """Writes ``train.csv``, ``dev.csv`` and ``test.csv`` for an MSP-Podcast release.

    Arguments
    ---------
    data_folder : str
        Root of the release (holds ``Audios/`` and ``Labels/``). Nothing in it is modified.
    manifest_folder : str
        Where the manifests, a stamp and (if any) the problem report go.
    test_set : str
        Which test partition is the test set: ``Test1`` (release 1.8 has only this one),
        ``Test2`` or ``Test3``.
    min_duration : float
        Seconds below which a file is refused (the encoder needs a few frames).
    check_silence : bool
        Decode every file to refuse silent ones and ones with NaN or infinite samples (the
        slowest check; headers give the rest).
    drop_bad_rows : bool
        False: stop with the list of every problem. True: leave those rows out and say how many.
    label_min, label_max : float
        Valid label range.

    Returns
    -------
    dict
        ``{"train": path, "dev": path, "test": path}``.
    """
    if test_set not in KNOWN_SPLITS[2:]:
        raise SettingsError(
            f"--test_set must be one of {', '.join(KNOWN_SPLITS[2:])}, got {test_set!r}"
        )
    labels_path = os.path.join(data_folder, LABELS_FILE)
    if not os.path.isfile(labels_path):
        raise MissingInputError(
            f"{labels_path} does not exist: --data_folder must be the root of an MSP-Podcast "
            f"release, holding Audios/ and {LABELS_FILE}"
        )
    os.makedirs(manifest_folder, exist_ok=True)
    remove_stale_staging(manifest_folder)
    paths = {
        name: os.path.join(manifest_folder, f"{name}.csv")
        for name in ("train", "dev", "test")
    }
    options = {
        "data_folder": os.path.abspath(data_folder),
        "labels": _stamp(labels_path),
        "test_set": test_set,
        "min_duration": min_duration,
        "check_silence": check_silence,
        "drop_bad_rows": drop_bad_rows,
        "label_range": [label_min, label_max],
    }
    stamp_path = os.path.join(manifest_folder, STAMP_FILE)
    if os.path.isfile(stamp_path) and all(
        os.path.isfile(p) for p in paths.values()
    ):
        with open(stamp_path) as fin:
            if json.load(fin) == options:
                return paths
    if os.path.exists(stamp_path):
        os.remove(
            stamp_path
        )  # an interrupted preparation must not look complete

    splits = {"Train": "train", "Development": "dev", test_set: "test"}
    rows = {"train": [], "dev": [], "test": []}
    problems, seen = [], {}
    with open(labels_path, newline="") as fin:
        reader = csv.DictReader(fin)
        missing = [
            c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise DataError(
                f"{labels_path} lacks the column(s) {', '.join(missing)}; an MSP-Podcast labels "
                f"file has {','.join(REQUIRED_COLUMNS)} (and EmoClass, Gender)"
            )
        total = 0
        for line, row in enumerate(reader, start=2):
            total += 1
            name = (row["FileName"] or "").strip()
            where = f"{labels_path} line {line} ({name or 'no FileName'})"
            split = (row["Split_Set"] or "").strip()
            if split not in KNOWN_SPLITS:
                problems.append(
                    Problem(where, "unknown split", f"Split_Set = {split!r}")
                )
                continue
            if split not in splits:
                continue  # another test partition
            if not name:
                problems.append(
                    Problem(where, "missing file name", "FileName is empty")
                )
                continue
            if name in seen:
                problems.append(
                    Problem(
                        where,
                        "duplicate ID",
                        f"{name} is also on line {seen[name]}",
                    )
                )
                continue
            seen[name] = line
            labels, issue = check_labels(
                {a: row[LABEL_COLUMNS[a]] for a in ATTRIBUTES},
                low=label_min,
                high=label_max,
            )
            if issue is None:
                audio = os.path.join(data_folder, "Audios", name)
                duration, issue = inspect_audio(
                    audio,
                    min_duration=min_duration,
                    check_silence=check_silence,
                )
            if issue is not None:
                problems.append(Problem(where, *issue))
                continue
            rows[splits[split]].append(
                [
                    os.path.splitext(name)[0],
                    f"$data_root/Audios/{name}",
                    f"{duration:.3f}",
                    *(f"{labels[a]:g}" for a in ATTRIBUTES),
                    (row["SpkrID"] or "").strip(),
                ]
            )

    settle_problems(
        problems,
        total=total,
        drop=drop_bad_rows,
        source=labels_path,
        report_path=os.path.join(manifest_folder, "msp_podcast_problems.tsv"),
    )
    for name, split in (
        ("train", "Train"),
        ("dev", "Development"),
        ("test", test_set),
    ):
        if not rows[name]:
            raise DataError(
                f"{labels_path}: no usable row has Split_Set = {split}"
            )
    for name, path in paths.items():
        write_csv_atomic(path, MANIFEST_COLUMNS, rows[name])
    write_text_atomic(stamp_path, json.dumps(options, indent=2))
    return paths
