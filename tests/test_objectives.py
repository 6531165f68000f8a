"""The Brain's objective against the paper's equations, computed independently.

The student stage's ``compute_objectives`` is run on a small batch through a tiny model built
from ``hparams/student.yaml`` itself (only the encoder swapped for a tiny one), and its loss and
logged terms are compared with ``tests/reference.py``, written from the paper, fed the same
predictions and embeddings. The reference's settings are the paper's values below, not the
YAML's, so a changed default, a dropped weight, a swapped argument or a margin applied on the
wrong scale fails here.
"""

import copy
import os

import numpy as np
import pytest
import reference
import soundfile
import torch
from hyperpyyaml import load_hyperpyyaml
from train import EmotionBrain

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The student stage's loss settings as the paper and the authors' code set them.
PAPER = {
    "label_min": 1.0,
    "label_max": 7.0,
    "lambda_tl": 100,
    "lambda_cl": 10,
    "transfer_rmse": "batch",
    "temperature": 0.1,
    "negative_margin": 0.5,
    "negative_rule": "all",
    "negative_boundary": "more_than",
    "negative_margin_tolerance": 1e-4,
    "infonce_denominator": "with_positive",
}

# Each case overrides some of them, through the YAML, as a user would on the command line.
CASES = {
    "paper": {},
    "RM+TL": {"lambda_cl": 0},
    "RM+CL": {"lambda_tl": 0},
    "RM": {"lambda_tl": 0, "lambda_cl": 0},
    "weights": {"lambda_tl": 1, "lambda_cl": 0.5},
    "odd_weights": {"lambda_tl": 37.5, "lambda_cl": 3},
    "temperature": {"temperature": 0.5},
    "cold": {"temperature": 0.05, "negative_margin": 1.0},
    "margin": {"negative_margin": 0.25, "negative_rule": "any"},
    "wide_margin": {"negative_margin": 2.0},
    "at_least": {"negative_boundary": "at_least"},
    "tolerance": {"negative_margin_tolerance": 0.3},
    "typeset": {
        "transfer_rmse": "utterance",
        "infonce_denominator": "negatives",
    },
    "all_changed": {
        "lambda_tl": 7,
        "lambda_cl": 2,
        "temperature": 0.2,
        "negative_margin": 1.0,
        "negative_rule": "any",
        "negative_boundary": "at_least",
        "transfer_rmse": "utterance",
        "infonce_denominator": "negatives",
    },
    "label_scale": {"label_min": 0.5, "label_max": 7.5},
}

# Labels with gaps equal to the margin (1.6/2.1, 4.2/4.7, 4.0/4.5), gaps between the margin and
# 3 points (what 0.5 on the [0, 1] training scale would be) and gaps larger than that.
LABELS = [
    [1.6, 1.6, 1.6],
    [2.1, 2.1, 2.1],
    [4.2, 4.2, 4.2],
    [4.7, 4.7, 4.7],
    [6.8, 6.5, 6.9],
    [4.0, 3.0, 5.5],
    [4.5, 3.5, 6.0],
    [3.1, 5.9, 2.4],
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A noise bank and a batch of eight utterances of different lengths."""
    folder = tmp_path_factory.mktemp("objectives")
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    soundfile.write(folder / "noise.wav", noise, 16000)
    (folder / "noise.csv").write_text(
        f"ID,duration,wav\nnoise,2.0,{folder / 'noise.wav'}\n"
    )
    items = []
    for i, labels in enumerate(LABELS):
        n = 8000 + 1500 * i
        t = np.arange(n) / 16000
        wav = 0.3 * np.sin(
            2 * np.pi * (120 + 20 * i) * t
        ) + 0.05 * rng.standard_normal(n)
        items.append(
            {
                "id": f"utt{i}",
                "sig": torch.tensor(wav, dtype=torch.float32),
                "labels": torch.tensor(labels, dtype=torch.float32),
            }
        )
    return folder, PaddedBatch(items)


def _load_stage(stage, folder, overrides):
    base = {
        "data_folder": str(folder),
        "results_folder": str(folder / "results"),
        "encoder_hparams": os.path.join(
            ROOT, "hparams/encoders/tiny_wav2vec2.yaml"
        ),
        "encoder_cache": str(folder / "encoders"),
        "head_hidden_size": 16,
    }
    if stage == "student":
        base["adapt_noise_csv"] = str(folder / "noise.csv")
    with open(os.path.join(ROOT, "hparams", f"{stage}.yaml")) as fin:
        return load_hyperpyyaml(fin, {**base, **overrides})


def _brain(stage, folder, overrides=None):
    """The stage's Brain as train.py builds it; the student's teacher is a perturbed copy of
    the student, standing in for a teacher checkpoint, so that their embeddings differ."""
    hparams = _load_stage(stage, folder, overrides or {})
    teacher = None
    if "teacher_folder" in hparams:
        teacher = copy.deepcopy(hparams["encoder"])
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for param in teacher.parameters():
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    return EmotionBrain(
        modules=hparams["modules"],
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts={"device": "cpu"},
        teacher=teacher,
    )


def _objective(brain, batch, stage):
    """Runs one batch; returns the forward outputs, the loss and the logged terms."""
    brain.on_stage_start(stage)
    brain.modules.train(stage == sb.Stage.TRAIN)
    with torch.no_grad():
        outputs = brain.compute_forward(batch, stage)
        loss = brain.compute_objectives(outputs, batch, stage)
    return outputs, loss, dict(brain.loss_sums)


RTOL, ATOL = 2e-5, 1e-6  # float32 against float64


def _assert_matches(expected, loss, logged):
    assert set(logged) == set(expected) - {"loss"}, (
        "other loss terms were logged"
    )
    for name, value in logged.items():
        assert value == pytest.approx(expected[name], rel=RTOL, abs=ATOL), name
    assert loss.item() == pytest.approx(expected["loss"], rel=RTOL, abs=ATOL), (
        "total loss"
    )


def _far_apart(a, b):
    """Farther apart than 100 times the comparisons' tolerance."""
    return abs(a - b) > 100 * (RTOL * abs(b) + ATOL)


@pytest.mark.parametrize(
    "stage", [sb.Stage.TRAIN, sb.Stage.VALID], ids=["train", "dev"]
)
@pytest.mark.parametrize("case", list(CASES))
def test_student_objective_matches_the_paper(workspace, case, stage):
    folder, batch = workspace
    settings = {**PAPER, **CASES[case]}
    brain = _brain("student", folder, CASES[case])
    outputs, loss, logged = _objective(brain, batch, stage)

    teacher = outputs["teacher_embedding"]
    # In training the teacher runs only where its embedding enters the loss (not for RH, RM).
    needs_teacher = (
        stage != sb.Stage.TRAIN
        or settings["lambda_tl"]
        or settings["lambda_cl"]
    )
    assert (teacher is not None) == bool(needs_teacher)
    if teacher is not None:
        assert not torch.allclose(teacher, outputs["embedding"], atol=1e-3)
    expected = reference.student_objective(
        outputs["prediction"],
        batch.labels.data,
        outputs["embedding"],
        teacher,
        settings,
    )
    _assert_matches(expected, loss, logged)


def test_the_cases_tell_the_settings_apart(workspace):
    """Each setting the cases vary changes the loss on this batch, so that comparing with the
    reference checks it: the batch has negatives that each margin, rule and boundary keeps or
    drops, and embeddings whose RMSE forms differ."""
    folder, batch = workspace
    brain = _brain("student", folder)
    outputs, _, _ = _objective(brain, batch, sb.Stage.TRAIN)
    args = (outputs["prediction"], batch.labels.data, outputs["embedding"])
    teacher = outputs["teacher_embedding"]
    paper = reference.student_objective(*args, teacher, PAPER)
    for case, overrides in CASES.items():
        if case == "paper":
            continue
        other = reference.student_objective(
            *args, teacher, {**PAPER, **overrides}
        )
        assert any(_far_apart(other[name], paper[name]) for name in paper), case
    # A margin of 0.5 on the [0, 1] training scale is 3 points: other negatives.
    unit = (batch.labels.data - 1) / 6
    on_unit_scale = reference.info_nce(
        outputs["embedding"],
        teacher,
        unit,
        **{
            "margin": 0.5,
            "rule": "all",
            "boundary": "more_than",
            "tolerance": 1e-4,
        },
        temperature=0.1,
        denominator="with_positive",
    )
    assert _far_apart(on_unit_scale, paper["cl_loss"])
    # Teacher and student swapped in InfoNCE.
    swapped = reference.info_nce(
        teacher,
        outputs["embedding"],
        batch.labels.data,
        **{
            "margin": 0.5,
            "rule": "all",
            "boundary": "more_than",
            "tolerance": 1e-4,
        },
        temperature=0.1,
        denominator="with_positive",
    )
    assert _far_apart(swapped, paper["cl_loss"])


@pytest.mark.parametrize(
    "stage", [sb.Stage.TRAIN, sb.Stage.VALID], ids=["train", "dev"]
)
def test_teacher_stage_objective_is_ccc_alone(workspace, stage):
    """The teacher stage (the paper's Original) has no teacher, no noise and no TL or CL term,
    whatever the student's settings would be."""
    folder, batch = workspace
    brain = _brain("teacher", folder)
    for key in (
        "teacher_folder",
        "lambda_tl",
        "lambda_cl",
        "train_noise",
        "dev_noise",
    ):
        assert not hasattr(brain.hparams, key), f"teacher.yaml defines {key}"
    outputs, loss, logged = _objective(brain, batch, stage)
    assert outputs["teacher_embedding"] is None
    assert brain.noise_for(stage) is None, (
        "the teacher stage trains on clean speech"
    )
    if (
        stage == sb.Stage.VALID
    ):  # without dropout: the embedding is the clean audio's
        with torch.no_grad():
            clean = brain.modules.encoder(batch.sig.data, batch.sig.lengths)
        assert torch.allclose(outputs["embedding"], clean, atol=1e-5)
    expected = reference.student_objective(
        outputs["prediction"], batch.labels.data, None, None, PAPER
    )
    _assert_matches(expected, loss, logged)
