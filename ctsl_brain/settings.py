"""A run's settings: the stage's YAML with the command line's overrides, checked before anything
runs, and the run's folder.
"""

import errno
import inspect
import logging
import numbers
import os

from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAMLError

import speechbrain as sb

from .custom_interface import usable_precision
from .dataio import MissingInputError, SettingsError

__all__ = [
    "load_yaml",
    "check_prepare_options",
    "check_settings",
    "unwritable_folder_error",
    "device_precision",
    "load_hparams",
]

logger = logging.getLogger(__name__)

# What an OSError says when a folder cannot be made or written.
UNWRITABLE = {
    errno.EACCES,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EROFS,
}


def load_hparams(hparams_file, overrides):
    """Reads a stage's YAML with the command line's overrides.

    Arguments
    ---------
    hparams_file : str
        The stage's YAML (``hparams/teacher.yaml`` or ``hparams/student.yaml``).
    overrides : str or dict
        HyperPyYAML overrides, as ``speechbrain.parse_arguments`` returns them.

    Returns
    -------
    dict
        The loaded hyperparameters, objects built.

    Raises
    ------
    SettingsError
        An override of no key, a YAML syntax error, a ``!PLACEHOLDER`` left unset, or a folder
        the YAML's objects cannot create; the message names the key and says what to do.
    MissingInputError
        No such YAML file.
    """
    if not os.path.isfile(hparams_file):
        raise MissingInputError(
            f"no hyperparameter file {hparams_file}: give hparams/teacher.yaml or "
            "hparams/student.yaml (the first argument of train.py)"
        )
    return load_yaml(hparams_file, overrides)


def load_yaml(hparams_file, overrides):
    """Loads a HyperPyYAML file with overrides, a mistake in either being one
    message.

    Arguments
    ---------
    hparams_file : str
        An existing YAML file (a stage's, or an encoder file).
    overrides : str or dict
        HyperPyYAML overrides.

    Returns
    -------
    dict
        The loaded hyperparameters, objects built.

    Raises
    ------
    SettingsError
        An override of no key, a YAML syntax error, a ``!PLACEHOLDER`` left
        unset, or a folder the YAML's objects cannot create.
    """
    try:
        with open(hparams_file, encoding="utf-8") as fin:
            return load_hyperpyyaml(fin, overrides)
    except KeyError as error:
        text = str(error.args[0]) if error.args else ""
        if not text.startswith(
            "Override '"
        ):  # HyperPyYAML: "Override 'x' not found in: ..."
            raise
        key = text.split("'")[1]
        raise SettingsError(
            f"--{key} is not a setting of {hparams_file}: check its spelling (the settings are "
            "the top-level keys of the file)"
        ) from None
    except YAMLError as error:
        raise SettingsError(
            f"cannot read the settings of {hparams_file} and the command line: "
            + " ".join(str(error).split())
        ) from None
    except OSError as error:  # building the objects creates the run's folders
        if error.errno not in UNWRITABLE:
            raise
        raise SettingsError(
            f"cannot create {error.filename} ({error.strerror}): set --results_folder (or the "
            "setting holding that path) to a folder you can write to"
        ) from None
    except ValueError as error:
        if "!PLACEHOLDER" not in str(error):
            raise
        key = str(error).split("'")[1]
        raise SettingsError(f"{key} is not set: add --{key} <value>") from None


def check_settings(hparams, *, choices=None, at_least=None, above=None):
    """Refuses values a recipe cannot use before anything runs, naming the key.

    Keys absent from ``hparams`` are not checked (the teacher's YAML has no student keys).

    Arguments
    ---------
    hparams : dict
        The loaded hyperparameters.
    choices : dict
        Key -> the words its value must be one of.
    at_least : dict
        Key -> the smallest number its value may be.
    above : dict
        Key -> a number its value must exceed.

    Raises
    ------
    SettingsError
        The first value refused, with the key and what it must be.

    Example
    -------
    >>> check_settings(
    ...     {"lr": 0.1, "sorting": "random"},
    ...     choices={"sorting": ("random",)},
    ...     above={"lr": 0},
    ... )
    >>> check_settings({"lr": 0}, above={"lr": 0})
    Traceback (most recent call last):
    ...
    ctsl_brain.custom_interface.SettingsError: lr must be a number above 0; got 0
    """
    for key, allowed in (choices or {}).items():
        if key in hparams and hparams[key] not in allowed:
            raise SettingsError(
                f"{key} must be one of {', '.join(allowed)}; got {hparams[key]!r}"
            )
    for bounds, strict in ((at_least or {}, False), (above or {}, True)):
        for key, low in bounds.items():
            if key not in hparams:
                continue
            value = hparams[key]
            number = isinstance(value, numbers.Real) and not isinstance(
                value, bool
            )
            if not number or value < low or (strict and value == low):
                relation = "above" if strict else "at least"
                raise SettingsError(
                    f"{key} must be a number {relation} {low}; got {value!r}"
                )


def unwritable_folder_error(error, output_folder):
    """The message for a run's folder that cannot be written, or None for another error.

    ``speechbrain.create_experiment_directory`` is called by the recipe's script itself (it
    copies the file that calls it into the run's folder); an ``OSError`` it raises is turned
    into this.

    Arguments
    ---------
    error : OSError
        What ``create_experiment_directory`` raised.
    output_folder : str
        The run's folder.

    Returns
    -------
    SettingsError or None
        A message naming the folder and results_folder when the folder cannot be made or
        written; None when the error is another one (a bug, to be raised as it is).

    Example
    -------
    >>> error = PermissionError(errno.EACCES, "Permission denied")
    >>> print(unwritable_folder_error(error, "/results/run"))
    cannot write the run's folder /results/run (Permission denied): set --results_folder to a folder you can write to
    """
    if error.errno not in UNWRITABLE:
        return None
    return SettingsError(
        f"cannot write the run's folder {output_folder} "
        f"({error.strerror or error}): set --results_folder to a folder you can "
        "write to"
    )


def device_precision(run_opts):
    """Keeps ``--precision`` and ``--eval_precision`` to what the device computes in.

    bf16 runs on GPUs and on CPUs with bfloat16 units; fp16 on GPUs. Elsewhere
    the run is in float32, with a warning that gives the reason
    (:func:`ctsl_brain.custom_interface.usable_precision`).

    Arguments
    ---------
    run_opts : dict
        SpeechBrain's run options; changed in place (with a warning) where the
        device lacks a precision.

    Returns
    -------
    dict
        ``run_opts``.

    Example
    -------
    >>> device_precision({"device": "cpu", "precision": "fp16"})["precision"]
    'fp32'
    """
    device = run_opts.get("device") or sb.utils.distributed.infer_device()
    for key in ("precision", "eval_precision"):
        asked = run_opts.get(key) or "fp32"
        precision, reason = usable_precision(asked, device)
        if reason is not None:
            logger.warning(
                "--%s %s ignored on %s: %s; running in float32",
                key,
                asked,
                device,
                reason,
            )
            run_opts[key] = precision
    return run_opts


def check_prepare_options(prepare, options, corpus, taken=()):
    """Refuses ``prepare_options`` that the corpus' preparation does not take.

    Arguments
    ---------
    prepare : callable
        The corpus' preparation; its keyword-only parameters are its options.
    options : dict
        ``prepare_options``.
    corpus : str
        The corpus' name, for the message.
    taken : iterable
        Parameters the recipe sets from its own keys (not options).
    """
    parameters = inspect.signature(prepare).parameters
    known = [name for name, p in parameters.items() if p.kind == p.KEYWORD_ONLY]
    known = [
        name for name in known if name not in taken and name != "skip_prep"
    ]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SettingsError(
            f"prepare_options: {', '.join(unknown)} is no option of the {corpus} corpus; its "
            f"options are {', '.join(known) or 'none'}"
        )
