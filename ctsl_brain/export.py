"""A finished run as a self-contained model folder.

The folder is for :class:`ctsl_brain.inference.EmotionRegressor`. It holds the
selected checkpoint's ``encoder.ckpt`` and ``head.ckpt`` (copied as they are),
``encoder/config.json`` and
``encoder/preprocessor_config.json`` (the pruned encoder's shape and input
normalisation, from which it is rebuilt without its hub download or local
source), and a ``hyperparams.yaml`` in SpeechBrain's pretrained-model form
(``modules``, ``pretrainer``) with the run's label scale and sample rate.
Nothing of the training data is needed to use it.
"""

import json
import logging
import os
import re
import shutil

import torch
import yaml
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb

from .checkpoints import end_of_epoch_checkpoints
from .dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    SettingsError,
    UserError,
    process_running,
    write_text_atomic,
)
from .models import encoder_hparams_path, load_encoder
from .statistics import select_checkpoints

__all__ = ["export_run", "WINDOW_SECONDS"]

logger = logging.getLogger(__name__)


class ExistingOutputError(UserError, FileExistsError):
    """The --out folder holds something an export must not replace."""


WINDOW_SECONDS = (
    10.0  # about the longest MSP-Podcast utterance (11 s) the model trained on
)
# What an exported folder holds; --overwrite replaces only a folder holding nothing else.
_EXPORTED = {"hyperparams.yaml", "encoder.ckpt", "head.ckpt", "encoder"}
# Keys of the run's hyperparams.yaml the model is rebuilt from.
_RUN_KEYS = (
    "encoder_hparams",
    "encoder_source",
    "encoder_layers",
    "encoder_cache",
    "head_hidden_size",
    "head_hidden_layers",
    "head_dropout",
    "sample_rate",
    "label_min",
    "label_max",
    "min_duration",
)

_HPARAMS = """\
# ############################################################################
# Speech emotion regression: arousal, dominance and valence on the
# {label_min:g}-{label_max:g} scale of the training labels.
# Exported from
# {run}
# (the checkpoint of epoch {epoch}, dev CCC {dev_ccc:.4f}).
#
#   from ctsl_brain.inference import EmotionRegressor
#   model = EmotionRegressor.from_hparams(source="<this folder>")
#   model.predict_file("speech.wav")
# ############################################################################

# This folder; EmotionRegressor.from_hparams sets it.
model_folder: !PLACEHOLDER

sample_rate: {sample_rate}  # Hz; other rates are resampled, channels averaged
label_min: {label_min}  # the scale of the training labels
label_max: {label_max}
min_duration: {min_duration}  # seconds; shorter files are refused
# Longer files are embedded in windows of at most this many seconds.
window_seconds: {window_seconds}

# The encoder is built from encoder/config.json; its weights are encoder.ckpt.
encoder: !new:ctsl_brain.models.SSLEncoder
    hf_class: !name:{hf_class}
    source: !ref <model_folder>/encoder
    save_path: !ref <model_folder>/encoder
    pretrained: False

head: !new:ctsl_brain.models.RegressionHead
    input_size: {input_size}
    hidden_size: {head_hidden_size}
    num_hidden_layers: {head_hidden_layers}
    dropout: {head_dropout}
    num_outputs: {num_outputs}

modules:
    encoder: !ref <encoder>
    head: !ref <head>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
        head: !ref <head>
"""


class _PlainLoader(yaml.SafeLoader):
    """Reads a run's saved hyperparams.yaml without building anything.

    Values that would be objects (tagged ``!new:``, ``!apply:``, ...) are read
    as None.
    """


_PlainLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def run_settings(run_folder):
    """The values of a run's ``hyperparams.yaml`` its model is rebuilt from.

    Arguments
    ---------
    run_folder : str
        A run's ``output_folder``.

    Returns
    -------
    settings : dict
        Key -> value, for the keys the export needs (``encoder_hparams``,
        ``label_min``, ...).

    Raises
    ------
    MissingInputError
        When ``run_folder`` does not exist or holds no ``hyperparams.yaml``.
    DataError
        When its ``hyperparams.yaml`` lacks a key the export needs.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "hyperparams.yaml").write_text(
    ...     "".join(f"{key}: 1\\n" for key in _RUN_KEYS)
    ...     + "encoder: !new:ctsl_brain.models.SSLEncoder\\n"
    ... )
    >>> run_settings(str(folder))["label_max"]
    1
    """
    path = os.path.join(run_folder, "hyperparams.yaml")
    if not os.path.isdir(run_folder):
        raise MissingInputError(
            f"run folder {run_folder} does not exist: give --run the output_folder of a "
            "train.py run (e.g. results/msp_podcast/teacher/1986)"
        )
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{run_folder} has no hyperparams.yaml, so it is not a train.py run's "
            "output_folder: give --run the folder that holds hyperparams.yaml and save/"
        )
    with open(path) as fin:
        values = yaml.load(fin, Loader=_PlainLoader) or {}
    missing = [key for key in _RUN_KEYS if key not in values]
    if missing:
        raise DataError(
            f"{path} lacks {', '.join(missing)}: it was not written by this recipe's train.py"
        )
    return {key: values[key] for key in _RUN_KEYS}


def _selected_checkpoint(run_folder, epoch):
    """The checkpoint to export and its epoch.

    ``epoch``'s, or the one the run's evaluation treats as its best (the first
    of ``evaluation.json``), or else the best dev checkpoint.
    """
    save_folder = os.path.join(run_folder, "save")
    checkpoints = {}
    if os.path.isdir(save_folder):
        checkpoints = end_of_epoch_checkpoints(
            sb.utils.checkpoints.Checkpointer(save_folder)
        )
    if not checkpoints:
        raise MissingInputError(
            f"{save_folder} holds no end-of-epoch checkpoint: train the run for at least one "
            "epoch (or give --run the output_folder of a run that has)"
        )
    if epoch is None:
        evaluation = os.path.join(run_folder, "evaluation.json")
        if os.path.isfile(evaluation):
            with open(evaluation) as fin:
                epoch = json.load(fin)["checkpoints"][0]["epoch"]
        else:
            scores = {
                number: ckpt.meta["ccc"] for number, ckpt in checkpoints.items()
            }
            epoch = select_checkpoints(scores, 1)[0]
            logger.warning(
                "%s has no evaluation.json (the run has not finished): exporting its best dev "
                "checkpoint, of epoch %d",
                run_folder,
                epoch,
            )
    if epoch not in checkpoints:
        raise SettingsError(
            f"{save_folder} has no checkpoint of epoch {epoch}; its epochs are "
            f"{', '.join(map(str, sorted(checkpoints)))}"
        )
    return epoch, checkpoints[epoch]


def _check_out_folder(out_folder, overwrite):
    """Raises ExistingOutputError unless an export may write ``out_folder``."""
    if not os.path.exists(out_folder):
        return
    if not os.path.isdir(out_folder):
        raise ExistingOutputError(
            f"{out_folder} is a file: choose a folder for --out"
        )
    found = set(os.listdir(out_folder))
    if not found:
        return
    if not overwrite:
        raise ExistingOutputError(
            f"{out_folder} exists and is not empty: choose another --out, or add --overwrite "
            "to replace the model exported there"
        )
    if not found <= _EXPORTED:
        raise ExistingOutputError(
            f"{out_folder} holds files that are not an exported model's "
            f"({', '.join(sorted(found - _EXPORTED))}); --overwrite replaces only an exported "
            "model: choose another --out"
        )


def export_run(
    run_folder,
    out_folder,
    *,
    epoch=None,
    window_seconds=WINDOW_SECONDS,
    overwrite=False,
):
    """Writes a trained run's model as a self-contained folder.

    Works for teacher and student runs alike. The folder is written under a
    temporary name, checked by loading the checkpoint into the model its
    ``hyperparams.yaml`` builds, and only then renamed to ``out_folder``, so a
    folder of that name is always complete. Exporting needs the run's encoder as
    it was trained (its local folder or download cache, e.g. run from where
    train.py ran); the exported folder does not.

    Arguments
    ---------
    run_folder : str
        The run's ``output_folder`` (holding ``hyperparams.yaml`` and
        ``save/``).
    out_folder : str
        The model folder to write; it must not exist, or be empty.
    epoch : int or None
        Export the checkpoint of this epoch (the ``checkpoint`` column of
        ``predictions.csv``); None: the one the run's evaluation treats as its
        best (the first in ``evaluation.json``, whose numbers are in
        ``test_results.json``).
    window_seconds : float
        Default window length for long files (see ``EmotionRegressor``).
    overwrite : bool
        Replace an earlier export in ``out_folder``.

    Returns
    -------
    exported : dict
        ``epoch`` and ``dev_ccc`` of the exported checkpoint, and
        ``out_folder``.

    Raises
    ------
    MissingInputError
        When the run is not a finished ``train.py`` run, has no end-of-epoch
        checkpoint, or its encoder cannot be rebuilt here.
    SettingsError
        When the run has no checkpoint of ``epoch``.
    ExistingOutputError
        When ``out_folder`` holds something an export must not replace.
    """
    run_folder, out_folder = str(run_folder), str(out_folder)
    settings = run_settings(run_folder)
    epoch, checkpoint = _selected_checkpoint(run_folder, epoch)
    _check_out_folder(out_folder, overwrite)

    encoder_file = encoder_hparams_path(settings["encoder_hparams"])
    try:
        encoder = load_encoder(
            encoder_file,
            save_path=settings["encoder_cache"],
            source=settings["encoder_source"],
            num_layers=settings["encoder_layers"],
        )
    except (OSError, ValueError) as error:
        raise MissingInputError(
            f"cannot rebuild the encoder of {run_folder} ({encoder_file}, source "
            f"{settings['encoder_source']}, cache {settings['encoder_cache']}): {error}. Export "
            "where the run was trained, from the folder train.py ran in."
        ) from None
    hf_class = type(encoder.ssl)
    text = _HPARAMS.format(
        run=os.path.abspath(run_folder),
        epoch=epoch,
        dev_ccc=checkpoint.meta["ccc"],
        hf_class=f"{hf_class.__module__}.{hf_class.__qualname__}",
        input_size=encoder.output_size,
        num_outputs=len(ATTRIBUTES),
        window_seconds=float(window_seconds),
        **{
            key: settings[key]
            for key in _RUN_KEYS
            if not key.startswith("encoder_")
        },
    )

    parent = os.path.dirname(os.path.abspath(out_folder))
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers(out_folder)
    # The process id keeps concurrent exports apart, as in write_text_atomic.
    staging = _beside(out_folder, "partial")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        encoder.ssl.model.config.save_pretrained(
            os.path.join(staging, "encoder")
        )
        encoder.ssl.feature_extractor.save_pretrained(
            os.path.join(staging, "encoder")
        )
        for name in ("encoder", "head"):
            shutil.copyfile(
                os.path.join(checkpoint.path, f"{name}.ckpt"),
                os.path.join(staging, f"{name}.ckpt"),
            )
        write_text_atomic(os.path.join(staging, "hyperparams.yaml"), text)
        _check_loadable(staging)
        earlier = _beside(out_folder, "old")
        if os.path.isdir(
            out_folder
        ):  # empty, or an earlier export (checked above)
            os.replace(out_folder, earlier)
        os.replace(staging, out_folder)
        shutil.rmtree(earlier, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {
        "epoch": epoch,
        "dev_ccc": checkpoint.meta["ccc"],
        "out_folder": out_folder,
    }


def _beside(out_folder, kind):
    """A hidden folder next to ``out_folder`` for this process.

    The export being written (``partial``) or the earlier export being replaced
    (``old``).
    """
    parent, name = os.path.split(os.path.abspath(out_folder))
    return os.path.join(parent, f".{name}.{os.getpid()}.{kind}")


def _remove_leftovers(out_folder):
    """Removes what an export killed while writing ``out_folder`` left."""
    parent, name = os.path.split(os.path.abspath(out_folder))
    for entry in os.listdir(parent):
        match = re.fullmatch(
            rf"\.{re.escape(name)}\.(\d+)\.(partial|old)", entry
        )
        if match is None or process_running(int(match.group(1))):
            continue
        logger.warning("removing %s, left by an export that was stopped", entry)
        shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _check_loadable(folder):
    """Builds the model of ``folder``'s hyperparams.yaml, loads its weights.

    The weights are loaded strictly (the pretrainer alone would only warn about
    a missing or unexpected weight).
    """
    with open(os.path.join(folder, "hyperparams.yaml")) as fin:
        hparams = load_hyperpyyaml(fin, {"model_folder": folder})
    for name, module in hparams["modules"].items():
        state = torch.load(
            os.path.join(folder, f"{name}.ckpt"), map_location="cpu"
        )
        module.load_state_dict(state, strict=True)
