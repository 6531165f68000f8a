#!/usr/bin/env python3
"""Noise-robust speech emotion recognition by contrastive teacher-student learning.

Leem et al., "Adapting a self-supervised speech representation for noisy speech emotion
recognition by using contrastive teacher-student learning", ICASSP 2023.

Stage 1 fine-tunes an SSL encoder and a regression head on clean speech (the teacher):

    python train.py hparams/teacher.yaml --data_folder <corpus>

Stage 2 retrains a copy on the same speech mixed with the target noise, guided by the frozen
teacher (the student; the baselines RH, RM, RM+TL, RM+CL are overrides of the same file):

    python train.py hparams/student.yaml --data_folder <corpus>

Both stages end by evaluating the three best dev checkpoints from non-consecutive epochs on the
clean test set and on each noisy test condition (recorded noisy versions of the test set, or the
test set mixed with held-out noise at each SNR of ``test_snrs``), writing per-utterance
predictions, and by embedding the clean and noisy dev sets with the best one. ``python study.py``
runs both stages for all six systems of the paper and its statistics.

A mistake the user can fix (a setting, a missing file, bad data) ends the run with one message
and exit status 1; set the environment variable CTSL_TRACEBACK=1 to see its traceback too.
"""

import copy
import errno
import numbers
import os
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from ruamel.yaml import YAMLError
from speechbrain.utils.distributed import run_on_main

from ctsl_brain.brain import EmotionBrain
from ctsl_brain.data import (
    CORPORA,
    SORTINGS,
    MissingInputError,
    SettingsError,
    dataio_prepare,
    prepare_corpus,
    run_command,
)
from ctsl_brain.losses import (
    INFONCE_DENOMINATORS,
    NEGATIVE_BOUNDARIES,
    NEGATIVE_RULES,
    TRANSFER_FORMS,
)

# Keys whose value must be one of a few words (checked before anything runs).
CHOICES = {
    "transfer_rmse": TRANSFER_FORMS,
    "negative_rule": NEGATIVE_RULES,
    "negative_boundary": NEGATIVE_BOUNDARIES,
    "infonce_denominator": INFONCE_DENOMINATORS,
    "sorting": SORTINGS,
    "corpus": CORPORA,
}
# Keys whose value must be a number at least as large as this (> for the strict ones).
AT_LEAST = {
    "lambda_tl": 0,
    "lambda_cl": 0,
    "negative_margin": 0,
    "negative_margin_tolerance": 0,
    "number_of_epochs": 1,
    "batch_size": 1,
    "test_batch_size": 1,
    "eval_checkpoints": 1,
    "min_duration": 0,
}
ABOVE = {"temperature": 0, "lr": 0, "adapt_noise_minutes": 0, "sample_rate": 0}
# What an OSError says when a folder cannot be made or written.
UNWRITABLE = {errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EROFS, errno.ENOSPC}


def load_hparams(hparams_file, overrides):
    """Reads the stage's YAML with the command line's overrides; a mistake in either is a
    :class:`SettingsError` naming the key and saying what to do."""
    if not os.path.isfile(hparams_file):
        raise MissingInputError(
            f"no hyperparameter file {hparams_file}: give hparams/teacher.yaml or "
            "hparams/student.yaml (the first argument of train.py)"
        )
    try:
        with open(hparams_file) as fin:
            return load_hyperpyyaml(fin, overrides)
    except KeyError as error:
        text = str(error.args[0]) if error.args else ""
        if not text.startswith("Override '"):  # HyperPyYAML: "Override 'x' not found in: ..."
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


def check_settings(hparams):
    """Refuses values the recipe cannot use before anything runs, naming the key."""
    for key, choices in CHOICES.items():
        if key in hparams and hparams[key] not in choices:
            raise SettingsError(f"{key} must be one of {', '.join(choices)}; got {hparams[key]!r}")
    for bounds, strict in ((AT_LEAST, False), (ABOVE, True)):
        for key, low in bounds.items():
            if key not in hparams:
                continue
            value = hparams[key]
            number = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if not number or value < low or (strict and value == low):
                relation = "above" if strict else "at least"
                raise SettingsError(f"{key} must be a number {relation} {low}; got {value!r}")
    if not hparams["label_min"] < hparams["label_max"]:
        raise SettingsError(
            f"label_min ({hparams['label_min']}) must be below label_max ({hparams['label_max']})"
        )


def create_output_folder(hparams_file, hparams, overrides):
    """SpeechBrain's experiment folder (the YAML, the script, the log); a folder that cannot be
    written is a :class:`SettingsError` naming results_folder."""
    try:
        sb.create_experiment_directory(
            experiment_directory=hparams["output_folder"],
            hyperparams_to_save=hparams_file,
            overrides=overrides,
        )
    except OSError as error:
        if error.errno not in UNWRITABLE:
            raise
        raise SettingsError(
            f"cannot write the run's folder {hparams['output_folder']} "
            f"({error.strerror or error}): set --results_folder to a folder you can write to"
        ) from None


def load_teacher(hparams):
    """Loads the teacher's best checkpoint into the student's modules; returns a frozen copy.

    The teacher's files are only read: the pretrainer links them into this run's folder. The
    teacher run must have finished (its ``evaluation.json`` is written last), so that its best
    checkpoint is the one its evaluation chose.
    """
    folder = hparams["teacher_folder"]
    teacher_command = "python train.py hparams/teacher.yaml ... (the same settings)"
    checkpoint = None
    if os.path.isdir(folder):
        checkpoint = sb.utils.checkpoints.Checkpointer(folder).find_checkpoint(max_key="ccc")
    if checkpoint is None:
        raise MissingInputError(
            f"teacher_folder: no teacher checkpoint in {folder}; train the teacher first "
            f"({teacher_command}) or point --teacher_folder at its save folder"
        )
    evaluation = os.path.join(os.path.dirname(os.path.abspath(folder)), "evaluation.json")
    if not os.path.isfile(evaluation):
        raise MissingInputError(
            f"teacher_folder: the teacher run of {folder} has not finished ({evaluation} is "
            f"missing): run the teacher stage again to finish it ({teacher_command})"
        )
    pretrainer = hparams["pretrainer"]
    run_on_main(pretrainer.collect_files, kwargs={"default_source": checkpoint.path})
    try:
        pretrainer.load_collected()
    except RuntimeError as error:
        raise SettingsError(
            f"the teacher checkpoint {checkpoint.path} does not fit this model: run the student "
            "with the encoder and head settings of the teacher run (encoder_hparams, "
            f"head_hidden_size, head_hidden_layers). {str(error)[:300]}"
        ) from None
    return copy.deepcopy(hparams["encoder"])


def main(argv):
    """Runs one stage: ``python train.py hparams/<stage>.yaml [--key value ...]``."""
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    # Under torchrun (DDP), joins the process group; a plain run is left alone.
    sb.utils.distributed.ddp_init_group(run_opts)
    hparams = load_hparams(hparams_file, overrides)
    check_settings(hparams)
    create_output_folder(hparams_file, hparams, overrides)

    run_on_main(prepare_corpus, args=[hparams])
    datasets = dataio_prepare(hparams)

    teacher = load_teacher(hparams) if "teacher_folder" in hparams else None
    brain = EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
        teacher=teacher,
    )
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["dev"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["test_dataloader_opts"],
    )
    brain.evaluate_conditions(
        datasets["test"],
        datasets["dev_conditions"],
        test_loader_kwargs=hparams["test_dataloader_opts"],
    )


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
