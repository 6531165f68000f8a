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
"""

import copy
import sys

import speechbrain as sb
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from ctsl_brain.brain import EmotionBrain
from ctsl_brain.data import dataio_prepare, prepare_corpus


def load_teacher(hparams):
    """Loads the teacher's best checkpoint into the student's modules; returns a frozen copy.

    The teacher's files are only read: the pretrainer links them into this run's folder.
    """
    folder = hparams["teacher_folder"]
    checkpoint = sb.utils.checkpoints.Checkpointer(folder).find_checkpoint(max_key="ccc")
    if checkpoint is None:
        raise FileNotFoundError(
            f"teacher_folder: no teacher checkpoint in {folder}; train the teacher first "
            "(python train.py hparams/teacher.yaml ...) or point --teacher_folder at its "
            "save folder"
        )
    pretrainer = hparams["pretrainer"]
    run_on_main(pretrainer.collect_files, kwargs={"default_source": checkpoint.path})
    try:
        pretrainer.load_collected()
    except RuntimeError as error:
        raise RuntimeError(
            f"the teacher checkpoint {checkpoint.path} does not fit this model: run the student "
            "with the encoder and head settings of the teacher run (encoder_hparams, "
            f"head_hidden_size, head_hidden_layers). {str(error)[:300]}"
        ) from error
    return copy.deepcopy(hparams["encoder"])


if __name__ == "__main__":
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    # Under torchrun (DDP), joins the process group; a plain run is left alone.
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)

    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )

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
