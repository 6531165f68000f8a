"""A finished run as a self-contained model folder for
:class:`ctsl_brain.deployment.inference.EmotionRegressor`: the checkpoint's weights, the pruned
encoder's configuration, ``hyperparams.yaml`` in SpeechBrain's pretrained form, the model card,
and ONNX models on request.
"""

import json
import logging
import math
import os
import re
import shutil
import sys
import warnings

import numpy as np
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml

import speechbrain as sb

from .. import custom_interface
from ..checkpoints import end_of_epoch_checkpoints
from ..dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    SettingsError,
    UserError,
    longest_duration,
    process_running,
    write_text_atomic,
)
from ..models import encoder_hparams_path, load_encoder
from ..statistics import select_checkpoints
from .card import model_card

__all__ = [
    "export_run",
    "export_onnx",
    "quantize_int8",
    "data_window",
    "WINDOW_SECONDS",
]

logger = logging.getLogger(__name__)


class ExistingOutputError(UserError, FileExistsError):
    """The --out folder holds something an export must not replace."""


WINDOW_SECONDS = (
    10.0  # about the longest MSP-Podcast utterance (11 s) the model trained on
)
# What an exported folder holds; --overwrite replaces only a folder holding nothing else.
_EXPORTED = {
    "hyperparams.yaml",
    "encoder.ckpt",
    "head.ckpt",
    "custom_interface.py",
    "README.md",
    "model.onnx",
    "model.int8.onnx",
    "encoder",  # the encoder's configuration, in earlier exports
}
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

# Keys read when present, for the model card and the window.
_CARD_KEYS = (
    "corpus",
    "output_folder",
    "manifest_folder",
    "train_annotation",
    "dev_annotation",
    "teacher_folder",
    "field_folder",
    "lambda_tl",
    "lambda_cl",
    "adapt_snr",
    "freeze_encoder",
    "number_of_epochs",
    "test_snrs",
    "recorded_test_folders",
)

_HPARAMS = """\
# ############################################################################
# Speech emotion regression: arousal, dominance and valence on the
# {label_min:g}-{label_max:g} scale of the training labels. Exported from the run
# {run}
# (the checkpoint of epoch {epoch}, dev CCC {dev_ccc:.4f}). README.md is its card.
#
#   from speechbrain.inference.interfaces import foreign_class
#   model = foreign_class(
#       source="<this folder, or its model hub id>",
#       pymodule_file="custom_interface.py",
#       classname="EmotionRegressor",
#   )
#   model.predict_file("speech.wav")
# ############################################################################

sample_rate: {sample_rate}  # Hz; other rates are resampled, channels averaged
label_min: {label_min}  # the scale of the training labels
label_max: {label_max}
# True: predictions are clipped to label_min-label_max (they may step outside).
clip_to_scale: False
min_duration: {min_duration}  # seconds; shorter files are refused
# Longer files are embedded in windows of at most this many seconds (at least
# the longest utterance of the run's data, which was embedded whole).
window_seconds: {window_seconds}

# The pruned encoder, built from its configuration; its weights are
# encoder.ckpt. Nothing is downloaded.
encoder: !new:custom_interface.SSLEncoder
    hf_class: !name:{hf_class}
    pretrained: False
    config:
{config}
    preprocessor_config:
{preprocessor_config}

head: !new:custom_interface.RegressionHead
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
    return {
        key: values[key] for key in (*_RUN_KEYS, *_CARD_KEYS) if key in values
    }


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
    window_seconds=None,
    overwrite=False,
    onnx=False,
    onnx_int8=False,
):
    """Writes a trained run's model (teacher or student) as a self-contained folder.

    ``hyperparams.yaml``, ``encoder.ckpt``, ``head.ckpt``,
    ``custom_interface.py``, the model card ``README.md`` and, with ``onnx``,
    ``model.onnx``: written under a temporary name, checked (the weights load
    strictly; ONNX gives PyTorch's numbers), then renamed to ``out_folder``.
    Exporting needs the run's encoder as it was trained (its local folder or
    download cache); the exported folder does not.

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
    window_seconds : float or None
        The model's window for long files (see ``EmotionRegressor``); None:
        the longest utterance of the run's manifests, rounded up to a tenth
        of a second, and at least :data:`WINDOW_SECONDS`, so that the model
        embeds every utterance like the run's whole, as its evaluation did.
    overwrite : bool
        Replace an earlier export in ``out_folder``.
    onnx : bool
        Also write ``model.onnx`` (see :func:`export_onnx`).
    onnx_int8 : bool
        Also write ``model.onnx`` and its dynamically quantised
        ``model.int8.onnx``.

    Returns
    -------
    exported : dict
        ``epoch`` and ``dev_ccc`` of the exported checkpoint,
        ``out_folder``, ``window_seconds``, and ``onnx_difference`` (largest
        difference between the ONNX and PyTorch models, None without ONNX).

    Raises
    ------
    MissingInputError
        When the run is not a finished ``train.py`` run, has no end-of-epoch
        checkpoint, or its encoder cannot be rebuilt here.
    SettingsError
        When the run has no checkpoint of ``epoch``.
    ExistingOutputError
        When ``out_folder`` holds something an export must not replace.
    DataError
        When the ONNX model does not give the PyTorch model's numbers.
    """
    run_folder, out_folder = str(run_folder), str(out_folder)
    settings = run_settings(run_folder)
    epoch, checkpoint = _selected_checkpoint(run_folder, epoch)
    _check_out_folder(out_folder, overwrite)
    if window_seconds is None:
        window_seconds = data_window(run_folder, settings)

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
    text = _HPARAMS.format(
        run=os.path.abspath(run_folder),
        epoch=epoch,
        dev_ccc=checkpoint.meta["ccc"],
        hf_class=_wrapper_class(encoder),
        config=_yaml_block(encoder.ssl.model.config.to_dict()),
        preprocessor_config=_yaml_block(
            encoder.ssl.feature_extractor.to_dict()
        ),
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
    difference = None
    try:
        for name in ("encoder", "head"):
            shutil.copyfile(
                os.path.join(checkpoint.path, f"{name}.ckpt"),
                os.path.join(staging, f"{name}.ckpt"),
            )
        shutil.copyfile(
            custom_interface.__file__,
            os.path.join(staging, "custom_interface.py"),
        )
        write_text_atomic(os.path.join(staging, "hyperparams.yaml"), text)
        hparams = _check_loadable(staging)
        if onnx or onnx_int8:
            graph = custom_interface.EmotionGraph(
                hparams["encoder"],
                hparams["head"],
                hparams["label_min"],
                hparams["label_max"],
            ).eval()
            difference = export_onnx(
                graph,
                os.path.join(staging, "model.onnx"),
                sample_rate=hparams["sample_rate"],
            )
            if onnx_int8:
                quantize_int8(
                    os.path.join(staging, "model.onnx"),
                    os.path.join(staging, "model.int8.onnx"),
                )
        write_text_atomic(
            os.path.join(staging, "README.md"),
            model_card(
                run_folder,
                settings,
                epoch=epoch,
                dev_ccc=checkpoint.meta["ccc"],
                encoder=encoder,
                window_seconds=float(window_seconds),
                onnx=sorted(
                    name
                    for name in os.listdir(staging)
                    if name.endswith(".onnx")
                ),
            ),
        )
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
        "window_seconds": float(window_seconds),
        "onnx_difference": difference,
    }


def _wrapper_class(encoder):
    """The import path of the SpeechBrain wrapper class of ``encoder``."""
    for cls in type(encoder.ssl).__mro__:
        if cls.__module__.startswith("speechbrain."):
            return f"{cls.__module__}.{cls.__qualname__}"
    raise TypeError(f"{type(encoder.ssl)} is not a SpeechBrain wrapper")


class _RecipeDumper(yaml.SafeDumper):
    """YAML as SpeechBrain's recipes write it (and yamllint accepts).

    Booleans are ``True``/``False``, and block lists are indented under their
    key.
    """

    def increase_indent(self, flow=False, indentless=False):
        """Indents block sequences (PyYAML's default leaves them flush).

        Arguments
        ---------
        flow : bool
            Whether the collection is in flow style.
        indentless : bool
            Ignored: sequences are always indented.

        Returns
        -------
        None
            As PyYAML's.
        """
        return super().increase_indent(flow, False)


_RecipeDumper.add_representer(
    dict,
    lambda dumper, value: dumper.represent_mapping(
        "tag:yaml.org,2002:map", value, flow_style=False
    ),
)
_RecipeDumper.add_representer(
    list,
    lambda dumper, value: dumper.represent_sequence(
        "tag:yaml.org,2002:seq",
        value,
        flow_style=not any(isinstance(item, dict | list) for item in value),
    ),
)
_RecipeDumper.add_representer(
    bool,
    lambda dumper, value: dumper.represent_scalar(
        "tag:yaml.org,2002:bool", "True" if value else "False"
    ),
)


def _yaml_block(mapping, indent=8):
    """``mapping`` as YAML indented under a key, within 80 columns.

    Lists of plain values in flow style (``[512, 512]``), the rest in block
    style. Keys starting with ``_`` (transformers' ``_name_or_path``, where
    the encoder was loaded from) are left out.
    """
    plain = {
        key: value
        for key, value in json.loads(json.dumps(mapping)).items()
        if not key.startswith("_")
    }
    text = yaml.dump(
        plain,
        Dumper=_RecipeDumper,
        indent=4,
        sort_keys=True,
        width=80 - indent,
    )
    return "\n".join(" " * indent + line for line in text.splitlines())


def _resolve(path, run_folder, settings):
    """A path of the run's hyperparams.yaml, as seen from here.

    Relative paths in it are relative to the folder train.py ran in, which is
    where ``run_folder`` is, less the run's own ``output_folder``.
    """
    path = str(path)
    if os.path.isabs(path) or os.path.exists(path):
        return path
    output = os.path.normpath(str(settings.get("output_folder", "")))
    run = os.path.normpath(os.path.abspath(run_folder))
    if output and run.endswith(os.sep + output):
        return os.path.join(run[: -len(output)], path)
    return path


def data_window(run_folder, settings):
    """The window an export uses by default: the longest utterance, or more.

    The longest ``duration`` of the run's train, dev and test manifests,
    rounded up to a tenth of a second, and at least
    :data:`WINDOW_SECONDS`. Where the manifests cannot be found, a warning
    says so and :data:`WINDOW_SECONDS` is used.

    Arguments
    ---------
    run_folder : str
        The run's ``output_folder``.
    settings : dict
        Its settings (:func:`run_settings`).

    Returns
    -------
    seconds : float
        The window.
    """
    manifests = [
        settings.get("train_annotation"),
        settings.get("dev_annotation"),
    ]
    if settings.get("manifest_folder"):
        manifests.append(os.path.join(settings["manifest_folder"], "test.csv"))
    found = [
        path
        for path in (
            _resolve(manifest, run_folder, settings)
            for manifest in filter(None, manifests)
        )
        if os.path.isfile(path)
    ]
    if not found:
        logger.warning(
            "the manifests of %s were not found (run the export from the folder train.py "
            "ran in): its window for long files is %g s, and utterances longer than that "
            "are embedded in windows rather than whole as in the run's evaluation; give "
            "--window_seconds to choose",
            run_folder,
            WINDOW_SECONDS,
        )
        return WINDOW_SECONDS
    longest = longest_duration(found)
    return max(WINDOW_SECONDS, math.ceil(longest * 10 - 1e-9) / 10)


def export_onnx(graph, path, *, sample_rate=16000, tolerance=1e-4):
    """Writes ``graph`` as ONNX, kept only if onnxruntime gives PyTorch's
    outputs within ``tolerance`` on four batches of 1 to 4 rows (two of them
    padded) of other lengths than the traced one.

    Inputs ``wavs`` (``[batch, samples]``, zero-padded) and ``wav_lens``
    (``[batch]``, relative); outputs ``predictions`` (``[batch, 3]``, on the
    label scale) and ``embedding`` (``[batch, D]``); batch and length are
    dynamic.

    Arguments
    ---------
    graph : custom_interface.EmotionGraph
        The model, in eval mode.
    path : str
        The ``.onnx`` file to write.
    sample_rate : int
        The model's sample rate, for the test batches' lengths.
    tolerance : float
        Largest difference allowed.

    Returns
    -------
    difference : float
        The largest difference found.

    Raises
    ------
    MissingInputError
        onnxruntime is not installed.
    DataError
        The ONNX model's outputs differ by more than ``tolerance``.
    """
    ort = _onnxruntime()
    graph = graph.eval()
    generator = torch.Generator().manual_seed(0)

    def batch(seconds):
        """A zero-padded batch of noise, one row per duration, and its lengths."""
        lengths = [round(s * sample_rate) for s in seconds]
        wavs = torch.zeros(len(lengths), max(lengths))
        for row, length in enumerate(lengths):
            wavs[row, :length] = 0.1 * torch.randn(length, generator=generator)
        return wavs, torch.tensor(lengths, dtype=torch.float32) / max(lengths)

    staging = f"{path}.{os.getpid()}.tmp"
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes
            torch.onnx.export(
                graph,
                batch([1.5, 0.9]),
                staging,
                input_names=["wavs", "wav_lens"],
                output_names=["predictions", "embedding"],
                dynamic_axes={
                    "wavs": {0: "batch", 1: "samples"},
                    "wav_lens": {0: "batch"},
                    "predictions": {0: "batch"},
                    "embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        session = ort.InferenceSession(
            staging, providers=["CPUExecutionProvider"]
        )
        difference = 0.0
        for seconds in (
            [1.3],
            [2.1, 0.7, 1.6],
            [1.0, 1.0],
            [0.4, 2.6, 1.2, 2.0],
        ):
            wavs, lens = batch(seconds)
            with torch.no_grad():
                expected = [t.numpy() for t in graph(wavs, lens)]
            found = session.run(
                ["predictions", "embedding"],
                {"wavs": wavs.numpy(), "wav_lens": lens.numpy()},
            )
            for want, got in zip(expected, found, strict=True):
                difference = max(difference, float(np.abs(want - got).max()))
        if not difference <= tolerance:
            raise DataError(
                f"the ONNX model differs from the PyTorch model by {difference:.2g} (more than "
                f"{tolerance:g}) on padded test batches, so it was not written: export without "
                "--onnx, and report the encoder and versions of torch and onnxruntime"
            )
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)
    return difference


def quantize_int8(source, path):
    """Writes a dynamically quantised (int8) copy of an ONNX model.

    The weights of the encoder's matrix products (``MatMul``) become int8,
    with activations quantised on the fly (onnxruntime's
    ``quantize_dynamic``); the convolutions and the head (``Gemm``) stay in
    float32. Written under a temporary name and renamed.

    Arguments
    ---------
    source : str
        The float32 ``.onnx`` file.
    path : str
        The quantised ``.onnx`` file to write.
    """
    _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    staging = f"{path}.{os.getpid()}.tmp.onnx"
    try:
        # Its advice to pre-process first is for static quantisation.
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            quantize_dynamic(
                source,
                staging,
                op_types_to_quantize=["MatMul"],
                weight_type=QuantType.QInt8,
            )
        finally:
            logging.disable(previous)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def _onnxruntime():
    """onnxruntime, or a MissingInputError saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingInputError(
            "ONNX export needs onnx and onnxruntime: pip install -r requirements-onnx.txt"
        ) from None
    return onnxruntime


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
    a missing or unexpected weight). Returns the loaded hyperparameters.
    """
    # The file names the interface as custom_interface, as foreign_class sees it.
    sys.modules.setdefault("custom_interface", custom_interface)
    with open(os.path.join(folder, "hyperparams.yaml")) as fin:
        hparams = load_hyperpyyaml(fin)
    for name, module in hparams["modules"].items():
        state = torch.load(
            os.path.join(folder, f"{name}.ckpt"), map_location="cpu"
        )
        module.load_state_dict(state, strict=True)
        module.eval()
    return hparams
