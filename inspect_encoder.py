#!/usr/bin/env python3
"""Loads an encoder file of hparams/encoders/ as training does and describes it
(source, transformer layers kept, parameters, embedding size, frames per second
of audio), printed and written to ``<output_folder>/encoder.json``:

    python inspect_encoder.py hparams/encoders/wav2vec2_large_robust.yaml \\
        [--source HUB_ID_OR_FOLDER] [--num_layers N] [--key value ...]

Its options: docs/training.md.
"""

import errno
import json
import os
import sys

import torch
from ctsl_brain.dataio import (
    MissingInputError,
    SettingsError,
    run_command,
    write_text_atomic,
)
from ctsl_brain.models import encoder_hparams_path
from ctsl_brain.settings import load_yaml
from ruamel.yaml import YAML, YAMLError

import speechbrain as sb

ENCODER_FOLDER = os.path.join("hparams", "encoders")
DEFAULT_SAVE_PATH = "pretrained_models"  # train.py's encoder_cache
DEFAULT_RESULTS = os.path.join("results", "encoders")
SAMPLE_RATE = 16000  # the encoders' rate


def parse_overrides(overrides):
    """Reads the command line's overrides into a dictionary.

    Arguments
    ---------
    overrides : str
        The YAML text that ``speechbrain.parse_arguments`` makes of the
        options it does not know.

    Returns
    -------
    dict
        Key -> value.
    """
    try:
        values = YAML(typ="safe", pure=True).load(overrides or "") or {}
    except YAMLError as error:
        detail = " ".join(str(error).split())
        raise SettingsError(f"cannot read the options: {detail}") from None
    if not isinstance(values, dict):
        raise SettingsError(f"cannot read the options: {overrides!r}")
    return values


def encoder_files():
    """The encoder files of this recipe, for messages.

    Returns
    -------
    list
        Their paths, relative to the recipe folder.
    """
    recipe = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(recipe, ENCODER_FOLDER)
    if not os.path.isdir(folder):
        return []
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yaml"))
    return [os.path.join(ENCODER_FOLDER, name) for name in names]


def load_encoder_hparams(hparams_file, overrides):
    """Loads an encoder file with overrides, as ``load_encoder`` does.

    Training builds its encoder with ``ctsl_brain.models.load_encoder``: the
    file takes ``save_path``, ``freeze``, ``source`` and ``num_layers`` and
    defines ``encoder``. Here any key of the file can be overridden.

    Arguments
    ---------
    hparams_file : str
        Path of the encoder's YAML; a relative one is looked up in the recipe's
        folder, then in the current one, as in training.
    overrides : dict
        Key -> value; ``save_path`` defaults to ``pretrained_models`` and
        ``freeze`` to False, as in training.

    Returns
    -------
    dict
        The loaded hyperparameters, ``encoder`` among them.
    """
    try:
        hparams_file = encoder_hparams_path(hparams_file)
    except MissingInputError:
        files = ", ".join(encoder_files()) or "the files of hparams/encoders/"
        raise MissingInputError(
            f"no encoder file {hparams_file}: give one of {files}, or the path "
            "of your own (the first argument of inspect_encoder.py)"
        ) from None
    overrides = {"save_path": DEFAULT_SAVE_PATH, "freeze": False, **overrides}
    overrides["save_path"] = str(overrides["save_path"])
    try:
        return load_yaml(hparams_file, overrides)
    except MissingInputError as error:
        # The encoder's message names train.py's option; this script's differs.
        message = str(error).replace("--encoder_source", "--source")
        raise MissingInputError(message) from None


@torch.no_grad()
def describe_encoder(encoder, device="cpu", sample_rate=SAMPLE_RATE):
    """Runs one second of audio through the encoder and describes it.

    Arguments
    ---------
    encoder : ctsl_brain.models.SSLEncoder
        The encoder an encoder file defines.
    device : str
        Where to run it.
    sample_rate : int
        The encoder's sample rate, in Hz.

    Returns
    -------
    dict
        ``family``, ``classes``, ``layers_kept``, ``parameters`` (total and
        trainable), ``embedding_size``, ``frames_per_second``, ``frozen``.
    """
    parameters = list(encoder.parameters())
    trainable = sum(p.numel() for p in parameters if p.requires_grad)
    model = encoder.ssl.model
    was_training = encoder.training
    encoder.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    wavs = 0.1 * torch.randn(1, sample_rate, generator=generator)
    embedding = encoder(wavs.to(device), torch.ones(1, device=device))
    frames = encoder.frame_lengths(torch.tensor([sample_rate]))
    encoder.train(was_training)
    if embedding.shape != (1, encoder.output_size):
        raise RuntimeError(
            f"the encoder gave an embedding of shape {tuple(embedding.shape)} "
            f"for one utterance, not (1, {encoder.output_size})"
        )
    return {
        "family": model.config.model_type,
        "classes": {
            "encoder": _qualified_name(encoder),
            "wrapper": _qualified_name(encoder.ssl),
            "model": _qualified_name(model),
        },
        "layers_kept": len(model.encoder.layers),
        "parameters": {
            "total": sum(p.numel() for p in parameters),
            "trainable": trainable,
        },
        "embedding_size": int(encoder.output_size),
        "embedding_finite": bool(torch.isfinite(embedding).all()),
        "frames_per_second": int(frames[0]),
        "frozen": bool(encoder.freeze),
    }


def _qualified_name(obj):
    """The module and class name of an object's class."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_description(output_folder, description):
    """Writes ``encoder.json`` into the output folder, atomically.

    Arguments
    ---------
    output_folder : str
        Created if needed.
    description : dict
        What :func:`describe_encoder` returns, and more.

    Returns
    -------
    str
        The path of ``encoder.json``.
    """
    path = os.path.join(output_folder, "encoder.json")
    try:
        os.makedirs(output_folder, exist_ok=True)
        write_text_atomic(path, json.dumps(description, indent=2) + "\n")
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise SettingsError(
            f"cannot write {path} ({error.strerror}): set --output_folder to "
            "a folder you can write to"
        ) from None
    return path


def main(argv):
    """Describes one encoder file: ``inspect_encoder.py <file> [options]``.

    Arguments
    ---------
    argv : list
        The command line's arguments.
    """
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    overrides = parse_overrides(overrides)
    name = os.path.splitext(os.path.basename(hparams_file))[0]
    default_folder = os.path.join(DEFAULT_RESULTS, name)
    output_folder = str(overrides.pop("output_folder", default_folder))
    device = run_opts.get("device") or "cpu"

    hparams = load_encoder_hparams(hparams_file, overrides)
    description = {
        "hparams_file": hparams_file,
        "source": str(hparams["source"]),
        **describe_encoder(hparams["encoder"], device=device),
    }
    path = write_description(output_folder, description)
    print(json.dumps(description, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
