"""Manifests, datasets and corpus preparation.

A manifest is a CSV with the columns ``ID, wav, duration, arousal, dominance, valence, spk_id``;
``wav`` may start with ``$data_root``, replaced by the recipe's ``data_folder``. Labels are on the
corpus' own scale (1-7 for MSP-Podcast) everywhere outside the Brain.
"""

import csv
import os
import shutil

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

__all__ = [
    "ATTRIBUTES",
    "MANIFEST_COLUMNS",
    "check_manifest_columns",
    "dataio_prepare",
    "prepare_corpus",
]

ATTRIBUTES = ("arousal", "dominance", "valence")
MANIFEST_COLUMNS = ("ID", "wav", "duration", *ATTRIBUTES, "spk_id")


def check_manifest_columns(path):
    """Raises a ValueError naming the file and the missing columns, if any."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"manifest {path} does not exist: run the data preparation (check data_folder)"
        )
    with open(path, newline="") as fin:
        header = next(csv.reader(fin), [])
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise ValueError(
            f"manifest {path} lacks the column(s) {', '.join(missing)}; "
            f"a manifest needs {', '.join(MANIFEST_COLUMNS)}"
        )


def dataio_prepare(hparams):
    """Builds the train, dev and test datasets from the manifests named in ``hparams``.

    Each item provides ``id``, ``sig`` (mono waveform) and ``labels`` (``[3]`` arousal,
    dominance, valence on the manifest's scale).

    Returns
    -------
    dict
        ``{"train": DynamicItemDataset, "dev": ..., "test": ...}``; train is sorted by duration
        when ``hparams["sorting"]`` is ``ascending`` or ``descending``.
    """

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav):
        sig = sb.dataio.dataio.read_audio(wav)
        return sig.mean(dim=-1) if sig.dim() > 1 else sig

    @sb.utils.data_pipeline.takes(*ATTRIBUTES)
    @sb.utils.data_pipeline.provides("labels")
    def label_pipeline(*values):
        return torch.tensor([float(v) for v in values])

    manifests = {
        "train": hparams["train_annotation"],
        "dev": hparams["dev_annotation"],
        "test": hparams["test_annotation"],
    }
    datasets = {}
    for split, path in manifests.items():
        check_manifest_columns(path)
        datasets[split] = DynamicItemDataset.from_csv(
            csv_path=path,
            replacements={"data_root": hparams["data_folder"]},
            dynamic_items=[audio_pipeline, label_pipeline],
            output_keys=["id", "sig", "labels"],
        )

    sorting = hparams["sorting"]
    if sorting in ("ascending", "descending"):
        datasets["train"] = datasets["train"].filtered_sorted(
            sort_key="duration", reverse=sorting == "descending"
        )
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif sorting != "random":
        raise ValueError(f"sorting must be random, ascending or descending, got {sorting!r}")
    return datasets


def _prepare_demo(data_folder, manifest_folder, options):
    from ctsl_brain.demo_corpus import prepare_demo_corpus

    written = prepare_demo_corpus(data_folder, **options)
    os.makedirs(manifest_folder, exist_ok=True)
    for name, path in written.items():
        target = os.path.join(manifest_folder, f"{name}.csv")
        staging = target + ".tmp"
        shutil.copyfile(path, staging)
        os.replace(staging, target)


def _check_existing(data_folder, manifest_folder, options):
    """For a corpus prepared by the user: the manifests must already be in manifest_folder."""
    for name in ("train", "dev", "test"):
        check_manifest_columns(os.path.join(manifest_folder, f"{name}.csv"))
    for name in ("noise_adapt", "noise_test"):
        path = os.path.join(manifest_folder, f"{name}.csv")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"noise bank {path} does not exist: write the noise segments as an AddNoise CSV "
                "(ID,duration,wav) there"
            )


_PREPARERS = {"demo": _prepare_demo, "manifests": _check_existing}


def prepare_corpus(corpus, *, data_folder, manifest_folder, options=None):
    """Writes the recipe's manifests for ``corpus`` into ``manifest_folder``.

    Writes ``train.csv``, ``dev.csv``, ``test.csv`` (utterances) and ``noise_adapt.csv``,
    ``noise_test.csv`` (noise banks in AddNoise's format).

    Arguments
    ---------
    corpus : str
        ``demo``: the embedded synthetic corpus, generated into ``data_folder``;
        ``manifests``: manifests the user wrote into ``manifest_folder``, checked only.
    data_folder : str
        Where the corpus is (or, for the demo, is generated).
    manifest_folder : str
        Where the manifests go.
    options : dict
        Corpus-specific options passed to its preparation.
    """
    if corpus not in _PREPARERS:
        raise ValueError(f"corpus must be one of {sorted(_PREPARERS)}, got {corpus!r}")
    _PREPARERS[corpus](data_folder, manifest_folder, dict(options or {}))
