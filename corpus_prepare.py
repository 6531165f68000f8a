#!/usr/bin/env python3
"""Writes the recipe's manifests for the corpus chosen, then its noisy test conditions.

train.py calls :func:`prepare_corpus` before training (``--skip_prep True`` skips it); the
corpora are ``msp_podcast`` (see msp_podcast_prepare.py), ``demo`` and ``manifests``. What it
writes, and in which order: docs/training.md.

Authors
 * The ctsl-brain contributors
"""

import contextlib
import os

from ctsl_brain.conditions import prepare_test_conditions
from ctsl_brain.dataio import (
    SettingsError,
    check_manifest_folder,
    longest_duration,
    write_text_atomic,
)
from ctsl_brain.demo.corpus import prepare_demo_corpus
from ctsl_brain.locks import PREPARE_LOCK, FolderLock
from ctsl_brain.noise_banks.banks import prepare_noise_banks
from ctsl_brain.noise_banks.field import extract_field_noise
from ctsl_brain.settings import check_prepare_options
from msp_podcast_prepare import prepare_msp_podcast

import speechbrain as sb

# The corpora prepare_corpus knows.
CORPORA = ("msp_podcast", "demo", "manifests")

logger = sb.utils.logger.get_logger(__name__)


def prepare_corpus(hparams):
    """Writes the manifests of ``corpus`` into ``manifest_folder``, then the noisy conditions.

    Arguments
    ---------
    hparams : dict
        The YAML keys the preparation reads, as train.py passes them (``field_folder`` and
        its ``field_*`` settings may be left out).
    """
    if hparams["skip_prep"]:
        return
    corpus = hparams["corpus"]
    if corpus not in CORPORA:
        raise SettingsError(
            f"corpus must be one of {', '.join(CORPORA)}; got {corpus!r}"
        )
    # Runs that prepare the same folders at once take turns: the first prepares, the others
    # then find its outputs up to date.
    folders = {hparams["manifest_folder"]}
    if corpus == "demo":
        folders.add(hparams["data_folder"])
    if hparams.get("field_folder"):
        folders.add(hparams["field_bank_folder"])
    with contextlib.ExitStack() as locks:
        for folder in sorted(os.path.realpath(f) for f in folders):
            locks.enter_context(
                FolderLock(folder, PREPARE_LOCK, "prepares", wait=True)
            )
        _prepare(corpus, hparams)


def _prepare(corpus, hparams):
    """What :func:`prepare_corpus` does once it holds its folders."""
    manifest_folder = hparams["manifest_folder"]
    options = dict(hparams["prepare_options"] or {})
    recorded = hparams["recorded_test_folders"]
    # With MSP-Podcast first: without noise-only recordings, the field recordings' noise is the
    # noise. The demo writes its field recordings with the corpus, so it comes after that.
    field = extract_field(hparams) if corpus == "msp_podcast" else None
    if corpus == "msp_podcast":
        settings = {
            "noise_folder": hparams["noise_folder"] or field,
            "adapt_noise_minutes": hparams["adapt_noise_minutes"],
            "test_noise_bank": not recorded,
            "test_set": hparams["test_set"],
            "min_duration": hparams["min_duration"],
            "drop_bad_rows": hparams["drop_bad_rows"],
            "label_min": hparams["label_min"],
            "label_max": hparams["label_max"],
        }
        check_prepare_options(
            prepare_msp_podcast, options, corpus, taken=settings
        )
        prepare_msp_podcast(
            hparams["data_folder"], manifest_folder, **settings, **options
        )
    elif corpus == "demo":
        check_prepare_options(prepare_demo_corpus, options, corpus)
        install_manifests(
            prepare_demo_corpus(hparams["data_folder"], **options),
            manifest_folder,
        )
    else:
        check_manifest_folder(manifest_folder)
    if corpus != "msp_podcast":
        field = extract_field(hparams)

    if field is not None:
        prepare_noise_banks(
            field,
            hparams["field_bank_folder"],
            # A segment covers the longest utterance with room for a random offset.
            segment_seconds=longest_duration(
                os.path.join(manifest_folder, f"{split}.csv")
                for split in ("train", "dev", "test")
            )
            + 1.0,
            adapt_minutes=hparams["adapt_noise_minutes"],
            test_bank=False,
            drop_bad_files=hparams["drop_bad_rows"],
        )

    # The test set, and the dev set for the embedding analysis, in the same conditions.
    conditions = {
        "data_folder": hparams["data_folder"],
        "snrs": hparams["test_snrs"],
        "sample_rate": hparams["sample_rate"],
        "min_duration": hparams["min_duration"],
        "drop_bad_rows": hparams["drop_bad_rows"],
    }
    prepare_test_conditions(
        manifest_folder,
        noise_csv=hparams["test_noise_csv"],
        seed=hparams["test_noise_seed"],
        recorded=recorded,
        **conditions,
    )
    recorded_dev = hparams["recorded_dev_folders"]
    if recorded_dev or os.path.isfile(hparams["adapt_noise_csv"]):
        prepare_test_conditions(
            manifest_folder,
            noise_csv=hparams["adapt_noise_csv"],
            seed=hparams["dev_noise_seed"],
            recorded=recorded_dev,
            split="dev",
            **conditions,
        )
    else:
        logger.warning(
            "no adaptation noise bank (%s) and no recorded_dev_folders: the noisy dev sets "
            "of the embedding analysis are not prepared",
            hparams["adapt_noise_csv"],
        )


def extract_field(hparams):
    """The noise of the field recordings of ``field_folder``, if any, as a noise folder.

    The stretches without speech of the recordings (see
    :func:`ctsl_brain.noise_banks.field.extract_field_noise`) are written under
    ``field_bank_folder``.

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.

    Returns
    -------
    str or None
        The folder of the stretches' WAV files; None without ``field_folder``.
    """
    if not hparams.get("field_folder"):
        return None
    extracted = extract_field_noise(
        hparams["field_folder"],
        hparams["field_bank_folder"],
        sample_rate=hparams["sample_rate"],
        threshold=hparams["field_vad_threshold"],
        margin_seconds=hparams["field_margin_seconds"],
        min_stretch_seconds=hparams["field_min_stretch_seconds"],
        min_total_seconds=hparams["field_min_total_seconds"],
        foreground_db=hparams["field_foreground_db"],
        drop_bad_files=hparams["drop_bad_rows"],
    )
    return extracted["stretch_folder"]


def install_manifests(written, manifest_folder):
    """Copies a generated corpus' manifests into ``manifest_folder``.

    A manifest is rewritten only when it changed, so that what depends on it is not redone.

    Arguments
    ---------
    written : dict
        Manifest name (``train``, ``noise_adapt``, ...) -> path of the generated CSV.
    manifest_folder : str
        Where the recipe reads its manifests (``<name>.csv``).
    """
    os.makedirs(manifest_folder, exist_ok=True)
    for name, path in written.items():
        target = os.path.join(manifest_folder, f"{name}.csv")
        with open(path, encoding="utf-8") as fin:
            text = fin.read()
        if os.path.isfile(target):
            with open(target, encoding="utf-8") as fin:
                if fin.read() == text:
                    continue
        write_text_atomic(target, text)
