"""The Brain of both stages: clean fine-tuning (teacher) and contrastive teacher-student adaptation.

One class serves both. Without a teacher and without noise it fine-tunes the SER model with
L_CCC on clean speech (the paper's "Original" model). With a frozen teacher and a noise mixer it
is the student of section 2: the teacher embeds the clean batch, the student embeds the same
batch mixed with noise, and the loss is ``L_CCC + lambda_TL * L_TL + lambda_CL * L_CL``. The
paper's baselines (RH, RM, RM+TL, RM+CL) are settings of the same class.
"""

import json
import os

import speechbrain as sb
import torch

from ctsl_brain.data import ATTRIBUTES, write_text_atomic
from ctsl_brain.losses import ccc_loss, concordance_cc, info_nce, transfer_loss

__all__ = ["EmotionBrain"]


class EmotionBrain(sb.Brain):
    """Speech emotion regression with optional noise and teacher.

    Expects in ``modules``: ``encoder`` (waveform -> pooled embedding) and ``head``
    (embedding -> 3 attributes). Reads from ``hparams``: ``label_min``, ``label_max``,
    and for the student ``lambda_tl``, ``lambda_cl``, ``negative_margin``, ``negative_rule``,
    ``temperature``, ``train_noise``, ``dev_noise``.

    Arguments
    ---------
    teacher : torch.nn.Module or None
        Frozen encoder embedding the clean audio (student stage only). It is kept out of
        ``modules``, so it is neither optimised, nor checkpointed, nor put in train mode.
    *args, **kwargs
        As for ``speechbrain.Brain``.
    """

    def __init__(self, *args, teacher=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = None
        if teacher is not None:
            self.teacher = teacher.to(self.device).eval()
            for param in self.teacher.parameters():
                param.requires_grad_(False)
        self.test_condition = "clean"
        self.test_results = {}

    # ----- labels -----
    def scale_labels(self, labels):
        """Maps labels to [0, 1] for training, as the authors did ((y - 1) / 6 on 1-7)."""
        low, high = self.hparams.label_min, self.hparams.label_max
        return (labels - low) / (high - low)

    def unscale_labels(self, values):
        """Inverse of :meth:`scale_labels`: every reported number is on the corpus' scale."""
        low, high = self.hparams.label_min, self.hparams.label_max
        return values * (high - low) + low

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
        outputs = {"teacher_embedding": None}
        if self.uses_teacher(stage):
            with torch.no_grad():
                outputs["teacher_embedding"] = self.teacher(wavs, wav_lens)
        noise = self.noise_for(stage)
        if noise is not None:
            wavs = noise(wavs, wav_lens)
        outputs["embedding"] = self.modules.encoder(wavs, wav_lens)
        outputs["prediction"] = self.modules.head(outputs["embedding"])
        return outputs

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
                losses["tl_loss"] = transfer_loss(teacher_embedding, student_embedding)
                losses["cl_loss"] = info_nce(
                    student_embedding,
                    teacher_embedding,
                    labels,
                    margin=self.hparams.negative_margin,
                    rule=self.hparams.negative_rule,
                    temperature=self.hparams.temperature,
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
        return loss

    # ----- stages -----
    def on_stage_start(self, stage, epoch=None):
        """Fresh accumulators; the dev mixer restarts so every epoch hears the same dev audio."""
        self.loss_sums, self.loss_count = {}, 0
        self.ids, self.predicted, self.targets = [], [], []
        noise = self.noise_for(stage)
        if stage == sb.Stage.VALID and noise is not None:
            noise.reset()

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
        elif stage == sb.Stage.VALID:
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats=self.train_stats,
                valid_stats=stats,
            )
            self.checkpointer.save_and_keep_only(
                meta=stats, max_keys=["ccc"], num_to_keep=self.hparams.keep_checkpoints
            )
        else:
            self.hparams.train_logger.log_stats(
                stats_meta={
                    "condition": self.test_condition,
                    "epoch loaded": self.hparams.epoch_counter.current,
                },
                test_stats=stats,
            )
            self.test_results[self.test_condition] = stats

    def evaluate_conditions(self, conditions, **kwargs):
        """Evaluates the best dev checkpoint on each test condition.

        Arguments
        ---------
        conditions : dict
            Condition name (``clean``, ``0dB``, ...) -> test dataset.
        **kwargs
            Passed to ``Brain.evaluate`` (``max_key``, ``test_loader_kwargs``).

        Returns
        -------
        dict
            Condition name -> statistics (``ccc_arousal``, ``ccc_dominance``, ``ccc_valence``,
            ``ccc``, losses); also written to ``<output_folder>/test_results.json``.
        """
        for name, dataset in conditions.items():
            self.test_condition = name
            self.evaluate(dataset, **kwargs)
        self.test_condition = "clean"
        if sb.utils.distributed.if_main_process():
            write_text_atomic(
                os.path.join(self.hparams.output_folder, "test_results.json"),
                json.dumps(self.test_results, indent=2),
            )
        return self.test_results
