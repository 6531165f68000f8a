#!/usr/bin/env python3
"""Recipe for noise-robust speech emotion recognition by contrastive teacher-student learning
(Leem et al., ICASSP 2023). The teacher is an SSL encoder and a regression head fine-tuned on
clean speech; the student, a copy of it, is retrained on the same speech mixed with the target
noise, guided by the frozen teacher:

    python train.py hparams/teacher.yaml --data_folder <MSP-Podcast> --noise_folder <noise>
    python train.py hparams/student.yaml --data_folder <MSP-Podcast> --noise_folder <noise>

How the stages train and what they write: docs/training.md. ``python study.py`` runs the
paper's six systems and its statistics.

Authors
 * The ctsl-brain contributors
"""

import copy
import os
import sys
import time

import torch
import yaml
from corpus_prepare import CORPORA, prepare_corpus
from ctsl_brain.checkpoints import (
    AtomicCheckpointer,
    RandomStates,
    end_of_epoch_checkpoints,
    kept_random_states,
    trim_train_log,
)
from ctsl_brain.conditions import condition_manifest, condition_names
from ctsl_brain.dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    SettingsError,
    check_manifest_columns,
    describe_audio_problem,
    disk_full_message,
    from_unit_scale,
    load_audio,
    run_command,
    to_unit_scale,
)
from ctsl_brain.evaluation import write_evaluation
from ctsl_brain.locks import FolderLock
from ctsl_brain.losses import (
    INFONCE_DENOMINATORS,
    NEGATIVE_BOUNDARIES,
    NEGATIVE_RULES,
    TRANSFER_FORMS,
    ccc_loss,
    concordance_cc,
    info_nce,
    transfer_loss,
)
from ctsl_brain.models import TeacherEmbeddingCache
from ctsl_brain.settings import (
    check_settings,
    device_precision,
    load_hparams,
    unwritable_folder_error,
)
from ctsl_brain.statistics import select_checkpoints

import speechbrain as sb
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.sampler import DynamicBatchSampler
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process, run_on_main

# The orders of the training set (sorting).
SORT_ORDERS = ("random", "ascending", "descending")
# Keys whose value must be one of a few words (checked before anything runs).
CHOICES = {
    "transfer_rmse": TRANSFER_FORMS,
    "negative_rule": NEGATIVE_RULES,
    "negative_boundary": NEGATIVE_BOUNDARIES,
    "infonce_denominator": INFONCE_DENOMINATORS,
    "sorting": SORT_ORDERS,
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

logger = sb.utils.logger.get_logger(__name__)


# The per-epoch running figures of the training stage, saved with intra-epoch checkpoints.
EPOCH_FIGURES = ("loss_sums", "loss_count", "samples_real", "samples_padded")


@register_checkpoint_hooks
class EmotionBrain(sb.Brain):
    """Speech emotion regression: the teacher stage, or the student's with a frozen ``teacher``."""

    def __init__(self, *args, teacher=None, **kwargs):
        kwargs["run_opts"] = device_precision(
            dict(kwargs.get("run_opts") or {})
        )
        super().__init__(*args, **kwargs)
        self.teacher = None
        self.teacher_cache = None
        if teacher is not None:
            # Out of modules: neither optimised, nor checkpointed, nor put in train mode.
            self.teacher = teacher.to(self.device).eval()
            for param in self.teacher.parameters():
                param.requires_grad_(False)
            if getattr(self.hparams, "cache_teacher_embeddings", False):
                self.teacher_cache = TeacherEmbeddingCache(self.teacher)
        # What the next step depends on beyond the modules and the optimiser; optional, so
        # that checkpoints saved without them still load.
        self.random_states = RandomStates()
        self.recovered_epoch = None
        if self.checkpointer is not None:
            self.checkpointer.add_recoverable(
                "random_states", self.random_states, optional_load=True
            )
            if self.teacher_cache is not None:
                self.checkpointer.add_recoverable(
                    "teacher_cache", self.teacher_cache, optional_load=True
                )
        self.test_condition = "clean"
        self.test_results = {}
        self.eval_checkpoint = None
        self.collect_embeddings = False

    @mark_as_saver
    def _save(self, path):
        """Saves SpeechBrain's step counters and the epoch's running figures (YAML)."""
        now = time.monotonic()
        state = {
            "step": self.step,
            "avg_train_loss": self.avg_train_loss,
            "optimizer_step": self.optimizer_step,
            "nonfinite_count": self.nonfinite_count,
            "epoch_seconds": now - getattr(self, "epoch_start", now),
        }
        state.update(
            {name: getattr(self, name, None) for name in EPOCH_FIGURES}
        )
        with open(path, "w", encoding="utf-8") as fout:
            yaml.safe_dump(state, fout, sort_keys=False)

    @mark_as_loader
    def _recover(self, path, end_of_epoch):
        """Loads what :meth:`_save` saved; an intra-epoch checkpoint's figures go on in
        :meth:`on_stage_start`."""
        super()._recover(path, end_of_epoch)
        with open(path, encoding="utf-8") as fin:
            state = yaml.safe_load(fin)
        self.recovered_epoch = None
        if not end_of_epoch and all(
            state.get(name) is not None for name in EPOCH_FIGURES
        ):
            self.recovered_epoch = state

    def on_fit_start(self):
        """Recovers the newest checkpoint, then cuts the train log back to its epochs."""
        if not isinstance(self.checkpointer, type(None) | AtomicCheckpointer):
            logger.warning(
                "checkpointer is a %s: a run killed while it saves a checkpoint may not resume; "
                "ctsl_brain.checkpoints.AtomicCheckpointer saves them atomically",
                type(self.checkpointer).__name__,
            )
        super().on_fit_start()
        # An epoch's log line comes just before its checkpoint, the test lines at the end: a
        # killed run redoes and logs again what it had not saved, so its older lines go.
        if self.checkpointer is not None and if_main_process():
            trim_train_log(
                self.hparams.train_logger.save_file,
                self.hparams.epoch_counter.current,
            )

    def scale_labels(self, labels):
        """Maps labels from the corpus' scale to [0, 1], as the authors did ((y - 1) / 6 on 1-7)."""
        return to_unit_scale(
            labels, low=self.hparams.label_min, high=self.hparams.label_max
        )

    def unscale_labels(self, values):
        """Maps predictions on [0, 1] back to the corpus' scale, that of every reported number."""
        return from_unit_scale(
            values, low=self.hparams.label_min, high=self.hparams.label_max
        )

    def noise_for(self, stage):
        """The stage's noise mixer, or None for clean audio (the noisy test audio is on disk)."""
        if stage == sb.Stage.TRAIN:
            return getattr(self.hparams, "train_noise", None)
        if stage == sb.Stage.VALID:
            return getattr(self.hparams, "dev_noise", None)
        return None

    def uses_teacher(self, stage):
        """Whether the teacher runs: where its embedding enters the loss, and on dev (logs)."""
        if self.teacher is None or stage == sb.Stage.TEST:
            return False
        if stage == sb.Stage.TRAIN:
            return self.hparams.lambda_tl > 0 or self.hparams.lambda_cl > 0
        return True

    def compute_forward(self, batch, stage):
        """Embeds the (noisy) batch with the student and the clean batch with the teacher."""
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        if stage == sb.Stage.TRAIN:
            # Padding share of the training batches, reported per epoch.
            self.samples_real += float(wav_lens.sum()) * wavs.shape[1]
            self.samples_padded += wavs.shape[0] * wavs.shape[1]
        outputs = {"teacher_embedding": None}
        if self.uses_teacher(stage):
            if self.teacher_cache is not None:
                outputs["teacher_embedding"] = self.teacher_cache(
                    batch.id, wavs, wav_lens
                )
            else:
                with torch.no_grad():
                    outputs["teacher_embedding"] = self.teacher(wavs, wav_lens)
        noise = self.noise_for(stage)
        if noise is not None:
            wavs = noise(wavs, wav_lens)
        outputs["embedding"] = self.modules.encoder(wavs, wav_lens)
        outputs["prediction"] = self.modules.head(outputs["embedding"])
        return outputs

    def infonce_settings(self):
        """The keyword arguments of :func:`ctsl_brain.losses.info_nce`, from the YAML."""
        return {
            "margin": self.hparams.negative_margin,
            "rule": self.hparams.negative_rule,
            "boundary": self.hparams.negative_boundary,
            "tolerance": self.hparams.negative_margin_tolerance,
            "temperature": self.hparams.temperature,
            "denominator": self.hparams.infonce_denominator,
        }

    def compute_objectives(self, predictions, batch, stage):
        """Computes L_CCC (+ lambda_tl L_TL + lambda_cl L_CL with a teacher) in float32."""
        labels = batch.labels.data.float()
        device_type = torch.device(self.device).type
        with torch.autocast(device_type=device_type, enabled=False):
            prediction = predictions["prediction"].float()
            losses = {
                "ccc_loss": ccc_loss(prediction, self.scale_labels(labels))
            }
            loss = losses["ccc_loss"]
            teacher_embedding = predictions["teacher_embedding"]
            if teacher_embedding is not None:
                student_embedding = predictions["embedding"].float()
                teacher_embedding = teacher_embedding.float()
                losses["tl_loss"] = transfer_loss(
                    teacher_embedding,
                    student_embedding,
                    form=self.hparams.transfer_rmse,
                )
                # The margin is on the corpus' label scale, so the labels are not rescaled.
                losses["cl_loss"] = info_nce(
                    student_embedding,
                    teacher_embedding,
                    labels,
                    **self.infonce_settings(),
                )
                loss = (
                    loss
                    + self.hparams.lambda_tl * losses["tl_loss"]
                    + self.hparams.lambda_cl * losses["cl_loss"]
                )

        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + float(
                value.detach()
            )
        self.loss_count += 1
        if stage != sb.Stage.TRAIN:
            self.ids.extend(batch.id)
            self.predicted.append(
                self.unscale_labels(prediction.detach()).cpu()
            )
            self.targets.append(labels.cpu())
            if self.collect_embeddings:
                self.embeddings.append(
                    predictions["embedding"].detach().float().cpu()
                )
        return loss

    def on_stage_start(self, stage, epoch=None):
        """Fresh accumulators, or those of the recovered intra-epoch checkpoint; the dev mixer
        restarts, so every epoch hears the same dev audio."""
        self.loss_sums, self.loss_count = {}, 0
        self.samples_real, self.samples_padded = 0.0, 0
        self.ids, self.predicted, self.targets, self.embeddings = [], [], [], []
        noise = self.noise_for(stage)
        if stage == sb.Stage.VALID:
            # A checkpoint after the epoch's last batch: the generators go on from here.
            self.random_states.restore()
            self.recovered_epoch = None
            if noise is not None:
                noise.reset()
        if stage == sb.Stage.TRAIN:
            self.epoch_start = time.monotonic()
            if self.recovered_epoch is not None:
                for name in EPOCH_FIGURES:
                    setattr(self, name, self.recovered_epoch[name])
                self.epoch_start -= self.recovered_epoch["epoch_seconds"]

    def on_fit_batch_start(self, batch, should_step):
        """Restores the generators and the non-finite count of a recovered intra-epoch
        checkpoint before its next batch (SpeechBrain zeroes the count after on_stage_start)."""
        self.random_states.restore()
        if self.recovered_epoch is not None:
            self.nonfinite_count = self.recovered_epoch["nonfinite_count"]
            self.recovered_epoch = None

    def _should_save_intra_epoch_ckpt(self, last_ckpt_time, steps_since_ckpt):
        """SpeechBrain's decision, held back while gradients are being accumulated (they are
        not saved)."""
        if self.step % self.grad_accumulation_factor:
            return False
        return super()._should_save_intra_epoch_ckpt(
            last_ckpt_time, steps_since_ckpt
        )

    def stage_statistics(self, stage_loss):
        """Mean loss terms of the stage, and the CCC per attribute on the corpus' scale."""
        stats = {"loss": stage_loss}
        stats.update(
            {k: v / max(self.loss_count, 1) for k, v in self.loss_sums.items()}
        )
        if self.predicted:
            ccc = concordance_cc(
                torch.cat(self.predicted).double(),
                torch.cat(self.targets).double(),
            )
            for name, value in zip(ATTRIBUTES, ccc.tolist(), strict=True):
                stats[f"ccc_{name}"] = value
            stats["ccc"] = float(ccc.mean())
        return stats

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, keeps the best dev checkpoints, and stores the test results."""
        stats = self.stage_statistics(stage_loss)
        if stage == sb.Stage.TRAIN:
            self.train_stats = stats
            if self.samples_padded:
                stats["padding"] = 1 - self.samples_real / self.samples_padded
            if self.teacher_cache is not None:
                stats["teacher_cache_MB"] = self.teacher_cache.nbytes / 1e6
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "epoch": f"{epoch}/{self.hparams.epoch_counter.limit}",
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": round(time.monotonic() - self.epoch_start),
                },
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta={**stats, "epoch": epoch},
                max_keys=["ccc"],
                num_to_keep=self.hparams.keep_checkpoints,
            )
            # The epoch is saved whole: its intra-epoch checkpoint (ckpt_interval_minutes or
            # _steps), which the ccc-keyed clean-up above does not consider, is obsolete.
            self.checkpointer.delete_checkpoints(
                num_to_keep=0,
                ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG in c.meta,
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "condition": self.test_condition,
                    "checkpoint of epoch": self.hparams.epoch_counter.current,
                },
                test_stats=stats,
            )
            self.test_results[self.test_condition] = stats

    def on_evaluate_start(self, max_key=None, min_key=None):
        """Loads the checkpoint chosen by :meth:`evaluate_conditions`, else the best one."""
        if self.eval_checkpoint is not None:
            self.checkpointer.load_checkpoint(self.eval_checkpoint)
        else:
            super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def evaluate_rows(self, dataset, test_loader_kwargs):
        """Evaluates a dataset; returns its statistics and rows (ID, predicted, true attributes)."""
        self.evaluate(dataset, test_loader_kwargs=test_loader_kwargs)
        predicted = torch.cat(self.predicted).tolist()
        targets = torch.cat(self.targets).tolist()
        rows = [
            [utt_id, *(f"{value:.6g}" for value in (*pred, *true))]
            for utt_id, pred, true in zip(
                self.ids, predicted, targets, strict=True
            )
        ]
        return self.test_results[self.test_condition], rows

    def evaluate_conditions(
        self, conditions, dev_conditions=None, *, test_loader_kwargs=None
    ):
        """Evaluates the ``eval_checkpoints`` best dev checkpoints from non-consecutive epochs
        on each test condition (paper section 4.1), embeds each dev condition with the best one
        (4.2), writes it all (:func:`ctsl_brain.evaluation.write_evaluation`) and returns the
        best one's statistics by test condition.
        """
        checkpoints = end_of_epoch_checkpoints(self.checkpointer)
        epochs = select_checkpoints(
            {epoch: ckpt.meta["ccc"] for epoch, ckpt in checkpoints.items()},
            self.hparams.eval_checkpoints,
        )
        if not epochs:
            raise RuntimeError(
                f"no dev checkpoint in {self.checkpointer.checkpoints_dir}: the run must train "
                "at least one epoch before it is evaluated"
            )
        results, rows = {}, []
        for epoch in epochs:
            self.eval_checkpoint = checkpoints[epoch]
            for name, dataset in conditions.items():
                self.test_condition = name
                stats, utterances = self.evaluate_rows(
                    dataset, test_loader_kwargs
                )
                rows.extend(
                    [row[0], name, epoch, *row[1:]] for row in utterances
                )
                if epoch == epochs[0]:
                    results[name] = stats
        embedded = {}
        self.eval_checkpoint = checkpoints[epochs[0]]
        self.collect_embeddings = True
        for name, dataset in (dev_conditions or {}).items():
            self.test_condition = f"dev {name}"
            self.evaluate(dataset, test_loader_kwargs=test_loader_kwargs)
            embedded[name] = {
                "ids": list(self.ids),
                "embeddings": torch.cat(self.embeddings),
                "labels": torch.cat(self.targets),
            }
        self.collect_embeddings = False
        self.eval_checkpoint = None
        self.test_condition = "clean"
        self.test_results = results
        if if_main_process():
            summary = {
                "checkpoints": [
                    {"epoch": epoch, "dev_ccc": checkpoints[epoch].meta["ccc"]}
                    for epoch in epochs
                ],
                "test_conditions": list(results),
                "dev_conditions": list(embedded),
            }
            if self.teacher is not None:
                summary["infonce"] = self.infonce_settings()
            write_evaluation(
                self.hparams.output_folder,
                rows=rows,
                embedded=embedded,
                test_results=results,
                summary=summary,
            )
        return results


def dataio_prepare(hparams):
    """Builds the datasets ``train``, ``dev``, ``test`` and ``dev_conditions`` (both by condition)
    from the manifests, with items ``id``, ``sig`` and ``labels``. Evaluation sets are sorted by
    duration; train follows ``sorting`` and ``dynamic_batching``, which adapt
    ``train_dataloader_opts``.
    """

    def audio_pipeline(manifest):
        """The audio pipeline of one manifest (named in its errors)."""

        @sb.utils.data_pipeline.takes("id", "wav")
        @sb.utils.data_pipeline.provides("sig")
        def load(utterance, wav):
            """Loads a waveform, mono at sample_rate, refusing non-finite samples."""
            signal = load_audio(wav, hparams["sample_rate"])
            # Manifests written by hand are not inspected: without this, a NaN sample shows up
            # epochs later as a non-finite loss that names no file.
            if not torch.isfinite(signal).all():
                raise DataError(
                    describe_audio_problem(
                        "non-finite audio",
                        f"{wav} (item {utterance} of {manifest}) holds NaN or infinite samples",
                    )
                    + ", or remove its row from the manifest"
                )
            return signal

        return load

    @sb.utils.data_pipeline.takes(*ATTRIBUTES)
    @sb.utils.data_pipeline.provides("labels")
    def label_pipeline(*values):
        """The three attributes as a tensor, on the manifest's scale."""
        return torch.tensor([float(v) for v in values])

    def dataset(path):
        """A manifest's dataset, its columns checked first."""
        check_manifest_columns(path)
        return DynamicItemDataset.from_csv(
            csv_path=path,
            replacements={"data_root": hparams["data_folder"]},
            dynamic_items=[audio_pipeline(path), label_pipeline],
            output_keys=["id", "sig", "labels"],
        )

    manifests = hparams["manifest_folder"]
    datasets = {
        "train": dataset(hparams["train_annotation"]),
        "dev": dataset(hparams["dev_annotation"]),
        "test": {
            name: dataset(condition_manifest(manifests, name))
            for name in condition_names(
                hparams["test_snrs"], hparams["recorded_test_folders"]
            )
        },
        "dev_conditions": {
            name: dataset(path)
            for name in condition_names(
                hparams["test_snrs"], hparams["recorded_dev_folders"]
            )
            if os.path.isfile(
                path := condition_manifest(manifests, name, "dev")
            )
        },
    }

    # Evaluation batches of similar durations: padding cost about a quarter of the
    # evaluation's compute on random batches (predictions do not depend on the batching).
    datasets["dev"] = datasets["dev"].filtered_sorted(sort_key="duration")
    for group in ("test", "dev_conditions"):
        datasets[group] = {
            name: data.filtered_sorted(sort_key="duration")
            for name, data in datasets[group].items()
        }

    sorting = hparams["sorting"]
    if sorting in ("ascending", "descending"):
        datasets["train"] = datasets["train"].filtered_sorted(
            sort_key="duration", reverse=sorting == "descending"
        )
        hparams["train_dataloader_opts"]["shuffle"] = False
    elif sorting not in SORT_ORDERS:
        raise SettingsError(
            f"sorting must be one of {', '.join(SORT_ORDERS)}; got {sorting!r}"
        )
    if hparams["dynamic_batching"]:
        if sorting != "random":
            raise SettingsError(
                "dynamic_batching: the sampler makes its own (shuffled, length-bucketed) "
                f"batches; run with --sorting random (got {sorting!r})"
            )
        # Batches of similar lengths up to a total of max_batch_length seconds, drawn from
        # shuffled buckets: far less padding than random fixed-size batches.
        sampler = DynamicBatchSampler(
            datasets["train"],
            length_func=lambda row: float(row["duration"]),
            **hparams["dynamic_batch_sampler"],
        )
        options = dict(hparams["train_dataloader_opts"])
        for key in ("batch_size", "shuffle", "drop_last", "sampler"):
            options.pop(key, None)
        hparams["train_dataloader_opts"] = {**options, "batch_sampler": sampler}
    return datasets


def load_teacher(hparams):
    """Loads the teacher's best checkpoint into the student's modules; returns a frozen copy."""
    folder = hparams["teacher_folder"]
    teacher_command = (
        "python train.py hparams/teacher.yaml ... (the same settings)"
    )
    checkpoint = None
    if os.path.isdir(folder):
        checkpoint = sb.utils.checkpoints.Checkpointer(folder).find_checkpoint(
            max_key="ccc"
        )
    if checkpoint is None:
        raise MissingInputError(
            f"teacher_folder: no teacher checkpoint in {folder}; train the teacher first "
            f"({teacher_command}) or point --teacher_folder at its save folder"
        )
    # Written last: the teacher's best checkpoint is then the one its evaluation chose.
    evaluation = os.path.join(
        os.path.dirname(os.path.abspath(folder)), "evaluation.json"
    )
    if not os.path.isfile(evaluation):
        raise MissingInputError(
            f"teacher_folder: the teacher run of {folder} has not finished ({evaluation} is "
            f"missing): run the teacher stage again to finish it ({teacher_command})"
        )
    pretrainer = hparams["pretrainer"]
    run_on_main(
        pretrainer.collect_files, kwargs={"default_source": checkpoint.path}
    )
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
    check_settings(hparams, choices=CHOICES, at_least=AT_LEAST, above=ABOVE)
    if not hparams["label_min"] < hparams["label_max"]:
        raise SettingsError(
            f"label_min ({hparams['label_min']}) must be below label_max ({hparams['label_max']})"
        )
    # One run per output folder: a second run stops before it writes in it.
    lock = FolderLock(hparams["output_folder"])
    try:
        # SpeechBrain's experiment folder: the YAML, this script (the caller's file is copied), the log.
        try:
            if if_main_process():
                lock.acquire()
            sb.create_experiment_directory(
                experiment_directory=hparams["output_folder"],
                hyperparams_to_save=hparams_file,
                overrides=overrides,
            )
        except OSError as error:
            if disk_full_message(error) is not None:
                # SpeechBrain writes its copies in place: on a full disk one may be cut short,
                # so they go (every run writes them again).
                for name in (
                    "hyperparams.yaml",
                    os.path.basename(__file__),
                    "env.log",
                ):
                    path = os.path.join(hparams["output_folder"], name)
                    if os.path.isfile(path):
                        os.remove(path)
                raise
            message = unwritable_folder_error(error, hparams["output_folder"])
            if message is None:
                raise
            raise message from None

        # The preparation's keys, named here: SpeechBrain wants each key used by this script.
        preparation = {
            "corpus": hparams["corpus"],
            "data_folder": hparams["data_folder"],
            "manifest_folder": hparams["manifest_folder"],
            "skip_prep": hparams["skip_prep"],
            "prepare_options": hparams["prepare_options"],
            "noise_folder": hparams["noise_folder"],
            "adapt_noise_minutes": hparams["adapt_noise_minutes"],
            "test_set": hparams["test_set"],
            "min_duration": hparams["min_duration"],
            "drop_bad_rows": hparams["drop_bad_rows"],
            "label_min": hparams["label_min"],
            "label_max": hparams["label_max"],
            "sample_rate": hparams["sample_rate"],
            "field_folder": hparams["field_folder"],
            "field_bank_folder": hparams["field_bank_folder"],
            "field_vad_threshold": hparams["field_vad_threshold"],
            "field_margin_seconds": hparams["field_margin_seconds"],
            "field_min_stretch_seconds": hparams["field_min_stretch_seconds"],
            "field_min_total_seconds": hparams["field_min_total_seconds"],
            "field_foreground_db": hparams["field_foreground_db"],
            "test_snrs": hparams["test_snrs"],
            "recorded_test_folders": hparams["recorded_test_folders"],
            "test_noise_csv": hparams["test_noise_csv"],
            "test_noise_seed": hparams["test_noise_seed"],
            "recorded_dev_folders": hparams["recorded_dev_folders"],
            "adapt_noise_csv": hparams["adapt_noise_csv"],
            "dev_noise_seed": hparams["dev_noise_seed"],
        }
        # Training draws the same numbers whether the data was prepared now or earlier.
        with kept_random_states():
            run_on_main(prepare_corpus, args=[preparation])
        if "training_noise_csv" in hparams:
            logger.info(
                "adaptation noise bank: %s", hparams["training_noise_csv"]
            )
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
    finally:
        lock.release()


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
