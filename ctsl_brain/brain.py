"""The Brain of both stages: clean fine-tuning (teacher) and contrastive teacher-student adaptation.

One class serves both. Without a teacher and without noise it fine-tunes the SER model with
L_CCC on clean speech (the paper's "Original" model). With a frozen teacher and a noise mixer it
is the student of section 2: the teacher embeds the clean batch, the student embeds the same
batch mixed with noise, and the loss is ``L_CCC + lambda_TL * L_TL + lambda_CL * L_CL``. The
paper's baselines (RH, RM, RM+TL, RM+CL) are settings of the same class.
"""

import io
import json
import logging
import os
import re
import time

import speechbrain as sb
import torch
from speechbrain.core import INTRA_EPOCH_CKPT_FLAG

from ctsl_brain.checkpoints import AtomicCheckpointer
from ctsl_brain.data import (
    ATTRIBUTES,
    from_unit_scale,
    remove_stale_staging,
    to_unit_scale,
    write_bytes_atomic,
    write_csv_atomic,
    write_text_atomic,
)
from ctsl_brain.losses import ccc_loss, concordance_cc, info_nce, transfer_loss
from ctsl_brain.models import TeacherEmbeddingCache
from ctsl_brain.statistics import select_checkpoints

__all__ = ["EmotionBrain", "end_of_epoch_checkpoints", "trim_train_log"]

logger = logging.getLogger(__name__)


def _float32_on_cpu(run_opts):
    """``--precision``/``--eval_precision`` other than fp32 are for GPUs: on CPU, fp16 autocast
    is unsupported and bf16 ran about 14 times slower than float32, so CPU runs stay fp32."""
    device = run_opts.get("device") or sb.utils.distributed.infer_device()
    if str(device).startswith("cpu"):
        for key in ("precision", "eval_precision"):
            if run_opts.get(key, "fp32") != "fp32":
                logger.warning("--%s %s ignored on CPU: training in float32", key, run_opts[key])
                run_opts[key] = "fp32"
    return run_opts


def end_of_epoch_checkpoints(checkpointer):
    """Epoch -> end-of-epoch checkpoint kept by ``checkpointer`` (with its dev ``ccc``)."""
    found = {}
    for checkpoint in checkpointer.list_checkpoints():
        if "ccc" not in checkpoint.meta:
            continue  # intra-epoch checkpoints carry no dev score
        epoch = checkpoint.meta.get("epoch")
        if epoch is None:  # runs saved before the epoch entered the meta
            with open(os.path.join(checkpoint.path, "counter.ckpt")) as fin:
                epoch = int(fin.read())
        found[int(epoch)] = checkpoint
    return found


def trim_train_log(path, epochs_done):
    r"""Keeps the lines of epochs 1 to ``epochs_done`` in a train log and drops the rest: lines
    of later epochs and test lines, written by an attempt that was stopped before its next
    checkpoint. The log is rewritten atomically, and only if something goes.

    >>> log = getfixture("tmp_path") / "train_log.txt"
    >>> _ = log.write_text("epoch: 1/3 - x\nepoch: 2/3 - x\ncondition: clean - x\n")
    >>> trim_train_log(log, 1)
    >>> log.read_text()
    'epoch: 1/3 - x\n'
    """
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as fin:
        lines = fin.readlines()
    kept = []
    for line in lines:
        match = re.match(r"epoch: (\d+)/", line)
        if match and int(match.group(1)) <= epochs_done:
            kept.append(line)
    if kept != lines:
        write_text_atomic(str(path), "".join(kept))


class EmotionBrain(sb.Brain):
    """Speech emotion regression with optional noise and teacher.

    Expects in ``modules``: ``encoder`` (waveform -> pooled embedding) and ``head``
    (embedding -> 3 attributes). Reads from ``hparams``: ``label_min``, ``label_max``,
    and for the student ``lambda_tl``, ``lambda_cl``, ``transfer_rmse`` (see
    :func:`ctsl_brain.losses.transfer_loss`), the InfoNCE settings ``negative_margin``,
    ``negative_rule``, ``negative_boundary``, ``negative_margin_tolerance``, ``temperature`` and
    ``infonce_denominator`` (see :func:`ctsl_brain.losses.info_nce`), ``train_noise``,
    ``dev_noise`` and ``cache_teacher_embeddings`` (the teacher's clean embeddings are computed
    once and reused, see :class:`ctsl_brain.models.TeacherEmbeddingCache`).

    Arguments
    ---------
    teacher : torch.nn.Module or None
        Frozen encoder embedding the clean audio (student stage only). It is kept out of
        ``modules``, so it is neither optimised, nor checkpointed, nor put in train mode.
    *args, **kwargs
        As for ``speechbrain.Brain``.
    """

    def __init__(self, *args, teacher=None, **kwargs):
        kwargs["run_opts"] = _float32_on_cpu(dict(kwargs.get("run_opts") or {}))
        super().__init__(*args, **kwargs)
        self.teacher = None
        self.teacher_cache = None
        if teacher is not None:
            self.teacher = teacher.to(self.device).eval()
            for param in self.teacher.parameters():
                param.requires_grad_(False)
            if getattr(self.hparams, "cache_teacher_embeddings", False):
                self.teacher_cache = TeacherEmbeddingCache(self.teacher)
        self.test_condition = "clean"
        self.test_results = {}
        self.eval_checkpoint = None
        self.collect_embeddings = False

    # ----- resuming -----
    def on_fit_start(self):
        """As SpeechBrain's (which recovers the newest checkpoint); then the train log is cut
        back to the epochs that checkpoint holds.

        The log line of an epoch is written just before its checkpoint, and the test lines at
        the end: a run killed in between redoes that epoch or that evaluation and logs it again,
        so the lines of the killed attempt go, and the finished log holds each epoch once.
        """
        if not isinstance(self.checkpointer, (type(None), AtomicCheckpointer)):
            logger.warning(
                "checkpointer is a %s: a run killed while it saves a checkpoint may not resume; "
                "ctsl_brain.checkpoints.AtomicCheckpointer saves them atomically",
                type(self.checkpointer).__name__,
            )
        super().on_fit_start()
        if self.checkpointer is not None and sb.utils.distributed.if_main_process():
            trim_train_log(self.hparams.train_logger.save_file, self.hparams.epoch_counter.current)

    # ----- labels -----
    def scale_labels(self, labels):
        """Maps labels to [0, 1] for training, as the authors did ((y - 1) / 6 on 1-7)."""
        return to_unit_scale(labels, low=self.hparams.label_min, high=self.hparams.label_max)

    def unscale_labels(self, values):
        """Inverse of :meth:`scale_labels`: every reported number is on the corpus' scale."""
        return from_unit_scale(values, low=self.hparams.label_min, high=self.hparams.label_max)

    # ----- forward -----
    def noise_for(self, stage):
        """The noise mixer of ``stage``, or None for clean audio (test audio is on disk)."""
        if stage == sb.Stage.TRAIN:
            return getattr(self.hparams, "train_noise", None)
        if stage == sb.Stage.VALID:
            return getattr(self.hparams, "dev_noise", None)
        return None

    def uses_teacher(self, stage):
        """The teacher runs where its embedding enters the loss, and on dev for the logs."""
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
                outputs["teacher_embedding"] = self.teacher_cache(batch.id, wavs, wav_lens)
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
        """The keyword arguments of :func:`ctsl_brain.losses.info_nce` from the YAML."""
        return {
            "margin": self.hparams.negative_margin,
            "rule": self.hparams.negative_rule,
            "boundary": self.hparams.negative_boundary,
            "tolerance": self.hparams.negative_margin_tolerance,
            "temperature": self.hparams.temperature,
            "denominator": self.hparams.infonce_denominator,
        }

    def compute_objectives(self, predictions, batch, stage):
        """L_CCC (+ lambda_TL L_TL + lambda_CL L_CL with a teacher), in float32."""
        labels = batch.labels.data.float()
        device_type = torch.device(self.device).type
        with torch.autocast(device_type=device_type, enabled=False):
            prediction = predictions["prediction"].float()
            losses = {"ccc_loss": ccc_loss(prediction, self.scale_labels(labels))}
            loss = losses["ccc_loss"]
            teacher_embedding = predictions["teacher_embedding"]
            if teacher_embedding is not None:
                student_embedding = predictions["embedding"].float()
                teacher_embedding = teacher_embedding.float()
                losses["tl_loss"] = transfer_loss(
                    teacher_embedding, student_embedding, form=self.hparams.transfer_rmse
                )
                # The margin is on the corpus' label scale, so the labels are not rescaled.
                losses["cl_loss"] = info_nce(
                    student_embedding, teacher_embedding, labels, **self.infonce_settings()
                )
                loss = (
                    loss
                    + self.hparams.lambda_tl * losses["tl_loss"]
                    + self.hparams.lambda_cl * losses["cl_loss"]
                )

        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + float(value.detach())
        self.loss_count += 1
        if stage != sb.Stage.TRAIN:
            self.ids.extend(batch.id)
            self.predicted.append(self.unscale_labels(prediction.detach()).cpu())
            self.targets.append(labels.cpu())
            if self.collect_embeddings:
                self.embeddings.append(predictions["embedding"].detach().float().cpu())
        return loss

    # ----- stages -----
    def on_stage_start(self, stage, epoch=None):
        """Fresh accumulators; the dev mixer restarts so every epoch hears the same dev audio."""
        self.loss_sums, self.loss_count = {}, 0
        self.samples_real, self.samples_padded = 0.0, 0
        self.ids, self.predicted, self.targets, self.embeddings = [], [], [], []
        noise = self.noise_for(stage)
        if stage == sb.Stage.VALID and noise is not None:
            noise.reset()
        if stage == sb.Stage.TRAIN:
            self.epoch_start = time.monotonic()

    def stage_statistics(self, stage_loss):
        """Mean loss terms of the stage, and CCC per attribute on the corpus' label scale."""
        stats = {"loss": stage_loss}
        stats.update({k: v / max(self.loss_count, 1) for k, v in self.loss_sums.items()})
        if self.predicted:
            ccc = concordance_cc(
                torch.cat(self.predicted).double(), torch.cat(self.targets).double()
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
                num_to_keep=0, ckpt_predicate=lambda c: INTRA_EPOCH_CKPT_FLAG in c.meta
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
        """Loads the checkpoint chosen by :meth:`evaluate_conditions` (else the best one)."""
        if self.eval_checkpoint is not None:
            self.checkpointer.load_checkpoint(self.eval_checkpoint)
        else:
            super().on_evaluate_start(max_key=max_key, min_key=min_key)

    def dev_checkpoints(self):
        """Epoch -> end-of-epoch checkpoint kept in the save folder (with its dev ``ccc``)."""
        return end_of_epoch_checkpoints(self.checkpointer)

    def _evaluate_rows(self, dataset, test_loader_kwargs):
        """Runs one evaluation; returns its statistics and per-utterance rows."""
        self.evaluate(dataset, test_loader_kwargs=test_loader_kwargs)
        predicted = torch.cat(self.predicted).tolist()
        targets = torch.cat(self.targets).tolist()
        rows = [
            [utt_id, *(f"{value:.6g}" for value in (*pred, *true))]
            for utt_id, pred, true in zip(self.ids, predicted, targets, strict=True)
        ]
        return self.test_results[self.test_condition], rows

    def evaluate_conditions(self, conditions, dev_conditions=None, *, test_loader_kwargs=None):
        """Evaluates the selected dev checkpoints on each test condition (paper section 4.1).

        The ``eval_checkpoints`` best dev checkpoints from non-consecutive epochs are
        evaluated on every test condition; the best of them also embeds each dev condition
        for the embedding analysis of section 4.2. Written under ``output_folder``:

        - ``predictions.csv``: ``ID, condition, checkpoint`` (the epoch), and predicted and
          true arousal, dominance and valence, one row per utterance, condition and checkpoint;
        - ``embeddings/dev_<condition>.pt``: ``{"ids", "embeddings", "labels"}`` of the best
          checkpoint on each dev condition;
        - ``test_results.json``: statistics of the best checkpoint per test condition;
        - ``evaluation.json``: the evaluated epochs and their dev CCC, written last.

        Arguments
        ---------
        conditions : dict
            Test condition name (``clean``, ``0dB``, ...) -> dataset.
        dev_conditions : dict or None
            Dev condition name -> dataset, embedded with the best checkpoint.
        test_loader_kwargs : dict
            Passed to ``Brain.evaluate``.

        Returns
        -------
        dict
            Test condition name -> statistics of the best checkpoint (``ccc_arousal``,
            ``ccc_dominance``, ``ccc_valence``, ``ccc``, losses).
        """
        checkpoints = self.dev_checkpoints()
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
                stats, utterances = self._evaluate_rows(dataset, test_loader_kwargs)
                rows.extend([row[0], name, epoch, *row[1:]] for row in utterances)
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
        if sb.utils.distributed.if_main_process():
            self._write_evaluation(epochs, checkpoints, rows, embedded)
        return results

    def _write_evaluation(self, epochs, checkpoints, rows, embedded):
        folder = self.hparams.output_folder
        evaluation_path = os.path.join(folder, "evaluation.json")
        if os.path.exists(evaluation_path):
            os.remove(evaluation_path)
        columns = [f"{name}_{kind}" for kind in ("pred", "true") for name in ATTRIBUTES]
        write_csv_atomic(
            os.path.join(folder, "predictions.csv"),
            ["ID", "condition", "checkpoint", *columns],
            rows,
        )
        remove_stale_staging(folder)
        os.makedirs(os.path.join(folder, "embeddings"), exist_ok=True)
        remove_stale_staging(os.path.join(folder, "embeddings"))
        for name, content in embedded.items():
            path = os.path.join(folder, "embeddings", f"dev_{name}.pt")
            buffer = io.BytesIO()
            torch.save(content, buffer)
            write_bytes_atomic(path, buffer.getvalue())
        write_text_atomic(
            os.path.join(folder, "test_results.json"), json.dumps(self.test_results, indent=2)
        )
        summary = {
            "checkpoints": [
                {"epoch": epoch, "dev_ccc": checkpoints[epoch].meta["ccc"]} for epoch in epochs
            ],
            "test_conditions": list(self.test_results),
            "dev_conditions": list(embedded),
        }
        if self.teacher is not None:
            summary["infonce"] = self.infonce_settings()
        write_text_atomic(evaluation_path, json.dumps(summary, indent=2))
