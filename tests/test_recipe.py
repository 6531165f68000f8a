"""The recipe as users run it: YAML consistency, lint, the Brain's training rules, and an
end-to-end run of both stages on a few demo utterances."""

import copy
import glob
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from ctsl_brain import custom_interface
from ctsl_brain.models import RegressionHead, load_encoder
from ctsl_brain.noise import UtteranceAddNoise
from recipe_run import demo_arguments, run_train
from train import EmotionBrain

import speechbrain as sb
from speechbrain.dataio.batch import PaddedBatch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The script SpeechBrain's check_yaml_vs_script reads a stage's keys in: train.py alone.
STAGE_SCRIPT = os.path.join(ROOT, "train.py")
# Keys an encoder file receives from ctsl_brain.models.load_encoder.
ENCODER_LOADER_KEYS = {"encoder", "save_path", "freeze", "source", "num_layers"}


def _top_level_keys(path):
    with open(path) as fin:
        return [
            m.group(1)
            for m in re.finditer(r"^([A-Za-z_]\w*):", fin.read(), re.M)
        ]


@pytest.mark.parametrize(
    "yaml_file",
    sorted(
        glob.glob(os.path.join(ROOT, "hparams", "**", "*.yaml"), recursive=True)
    ),
)
def test_every_top_level_yaml_key_is_used(yaml_file):
    """SpeechBrain's recipe rule: each key is read by the training script (not only by the
    library it calls) or referenced by another key."""
    with open(yaml_file) as fin:
        text = fin.read()
    with open(STAGE_SCRIPT) as fin:
        code = fin.read()
    is_encoder_file = os.path.basename(os.path.dirname(yaml_file)) == "encoders"
    unused = []
    for key in _top_level_keys(yaml_file):
        if key.startswith("__"):
            continue
        referenced = re.search(rf"<{key}[>\[]", text)
        read = re.search(
            rf"hparams\[\"{key}\"\]|hparams\.{key}\b|hparams, \"{key}\"", code
        )
        if not (
            referenced
            or read
            or (is_encoder_file and key in ENCODER_LOADER_KEYS)
        ):
            unused.append(key)
    assert not unused, (
        f"{os.path.relpath(yaml_file, ROOT)}: unused keys {unused}"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "format", "--check", "."],
        ["ruff", "check", "."],
        ["yamllint", "--strict", "."],
        ["codespell"],
    ],
    ids=["ruff-format", "ruff-check", "yamllint", "codespell"],
)
def test_lint_is_clean(command):
    tool = os.path.join(os.path.dirname(sys.executable), command[0])
    result = subprocess.run(
        [tool, *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ----- The Brain's rules, in process -----


def _batch(data_folder, manifest, n=6):
    rows = open(manifest).read().splitlines()[1 : n + 1]
    items = []
    for row in rows:
        utt, wav, _, a, d, v, _ = row.split(",")
        sig = sb.dataio.dataio.read_audio(
            wav.replace("$data_root", data_folder)
        )
        items.append(
            {
                "id": utt,
                "sig": sig,
                "labels": torch.tensor([float(a), float(d), float(v)]),
            }
        )
    return PaddedBatch(items)


def _student_brain(
    tmp_path, demo_corpus, *, freeze_encoder, lambda_tl, lambda_cl, cache=False
):
    data_folder, paths = demo_corpus
    encoder = load_encoder(
        os.path.join(ROOT, "hparams/encoders/tiny_wav2vec2.yaml"),
        save_path=str(tmp_path / "enc"),
        freeze=freeze_encoder,
    )
    head = RegressionHead(
        encoder.output_size, hidden_size=16, num_hidden_layers=1
    )
    noise = UtteranceAddNoise(
        paths["noise_adapt"], replacements={"data_root": data_folder}
    )
    hparams = {
        "label_min": 1.0,
        "label_max": 7.0,
        "lambda_tl": lambda_tl,
        "lambda_cl": lambda_cl,
        "transfer_rmse": "batch",
        "negative_margin": 0.5,
        "negative_rule": "all",
        "negative_boundary": "more_than",
        "negative_margin_tolerance": 1e-4,
        "temperature": 0.1,
        "infonce_denominator": "with_positive",
        "train_noise": noise,
        "cache_teacher_embeddings": cache,
    }
    brain = EmotionBrain(
        modules={"encoder": encoder, "head": head},
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-2),
        hparams=hparams,
        run_opts={"device": "cpu"},
        teacher=copy.deepcopy(encoder),
    )
    brain.init_optimizers()
    brain.on_stage_start(sb.Stage.TRAIN)
    brain.modules.train()
    return brain


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def _unchanged(before, module):
    return all(
        torch.equal(before[k], v) for k, v in module.state_dict().items()
    )


def test_teacher_is_frozen_during_student_steps(tmp_path, demo_corpus):
    brain = _student_brain(
        tmp_path, demo_corpus, freeze_encoder=False, lambda_tl=100, lambda_cl=10
    )
    teacher_before = _state(brain.teacher)
    student_before = _state(brain.modules.encoder)
    batch = _batch(demo_corpus[0], demo_corpus[1]["train"])
    for _ in range(2):
        brain.fit_batch(batch)
    assert not brain.teacher.training
    assert all(
        p.grad is None and not p.requires_grad
        for p in brain.teacher.parameters()
    )
    assert _unchanged(teacher_before, brain.teacher)
    assert not _unchanged(student_before, brain.modules.encoder), (
        "the student did not learn"
    )
    assert brain.loss_sums["tl_loss"] > 0


def test_cached_teacher_embeddings_equal_recomputed_ones(tmp_path, demo_corpus):
    """The cache runs the teacher once per utterance; what it returns later, for the same
    utterances in another batch (other padding, other order), is what the teacher computes."""
    brain = _student_brain(
        tmp_path,
        demo_corpus,
        freeze_encoder=False,
        lambda_tl=100,
        lambda_cl=10,
        cache=True,
    )
    calls = []
    brain.teacher.register_forward_hook(
        lambda module, args, out: calls.append(len(out))
    )
    first = _batch(demo_corpus[0], demo_corpus[1]["train"], n=6)
    brain.fit_batch(first)
    assert calls == [6] and len(brain.teacher_cache) == 6

    # The same utterances, reversed and without the longest: padded differently.
    rows = sorted(range(6), key=lambda i: -first.sig.lengths[i])[1:]
    items = [
        {
            "id": first.id[i],
            "sig": first.sig.data[i],
            "labels": first.labels.data[i],
        }
        for i in rows
    ]
    for item, i in zip(items, rows, strict=True):
        length = int(
            round(float(first.sig.lengths[i]) * first.sig.data.shape[1])
        )
        item["sig"] = item["sig"][:length]
    second = PaddedBatch(items[::-1])
    cached = brain.compute_forward(second, sb.Stage.TRAIN)["teacher_embedding"]
    assert calls == [6], "the teacher ran again for cached utterances"
    with torch.no_grad():
        recomputed = brain.teacher(second.sig.data, second.sig.lengths)
    assert cached.dtype == torch.float32
    assert torch.allclose(cached, recomputed, atol=1e-5, rtol=1e-4)
    assert brain.teacher_cache.nbytes == 6 * recomputed.shape[1] * 4


def test_rh_updates_no_encoder_parameter(tmp_path, demo_corpus):
    brain = _student_brain(
        tmp_path, demo_corpus, freeze_encoder=True, lambda_tl=0, lambda_cl=0
    )
    encoder_before = _state(brain.modules.encoder)
    head_before = _state(brain.modules.head)
    batch = _batch(demo_corpus[0], demo_corpus[1]["train"])
    for _ in range(2):
        brain.fit_batch(batch)
    assert _unchanged(encoder_before, brain.modules.encoder)
    assert not brain.modules.encoder.training
    assert not _unchanged(head_before, brain.modules.head)
    assert "tl_loss" not in brain.loss_sums, (
        "RH should not run the teacher in training"
    )


def test_losses_are_float32_under_autocast(tmp_path, demo_corpus):
    brain = _student_brain(
        tmp_path, demo_corpus, freeze_encoder=False, lambda_tl=100, lambda_cl=10
    )
    batch = _batch(demo_corpus[0], demo_corpus[1]["train"])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = brain.compute_forward(batch, sb.Stage.TRAIN)
        loss = brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    assert outputs["prediction"].dtype == torch.bfloat16, (
        "autocast was not active"
    )
    # The same outputs scored outside autocast: any loss op left to autocast would differ.
    with torch.no_grad():
        reference = brain.compute_objectives(outputs, batch, sb.Stage.TRAIN)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


# ----- End to end, as a user runs it -----


def _train(stage, data_folder, results, *extra, cwd=ROOT):
    return run_train(
        f"hparams/{stage}.yaml",
        results,
        "--data_folder",
        data_folder,
        *demo_arguments(),
        *extra,
        cwd=cwd,
    )


def _digests(folder):
    digests = {}
    for path in sorted(
        glob.glob(os.path.join(folder, "**", "*"), recursive=True)
    ):
        if os.path.isfile(path):
            with open(path, "rb") as fin:
                digests[path] = hashlib.sha256(fin.read()).hexdigest()
    return digests


@pytest.mark.slow
def test_teacher_then_student_end_to_end(demo_corpus, tmp_path):
    data_folder, _ = demo_corpus
    results = str(tmp_path / "results")
    _train("teacher", data_folder, results)
    teacher_save = os.path.join(results, "demo", "teacher", "1986", "save")
    # SpeechBrain's experiment folder holds the YAML and the script that ran.
    for name in ("train.py", "hyperparams.yaml", "log.txt", "env.log"):
        assert os.path.isfile(
            os.path.join(results, "demo", "teacher", "1986", name)
        )
    teacher_files = _digests(teacher_save)
    assert any(p.endswith("encoder.ckpt") for p in teacher_files)

    # Started from another folder: the YAML's encoder file is the recipe's, not the current
    # folder's (which has none).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _train("student", data_folder, results, cwd=elsewhere)
    assert not os.path.exists(elsewhere / "hparams")
    # The data is prepared: skip_prep leaves it alone, and the run reads the manifests.
    manifests = os.path.join(results, "demo", "manifests")
    before = _digests(manifests)
    _train(
        "student",
        data_folder,
        results,
        "--experiment_name",
        "rh",
        "--freeze_encoder",
        "True",
        "--lambda_tl",
        "0",
        "--lambda_cl",
        "0",
        "--skip_prep",
        "True",
    )
    assert _digests(manifests) == before
    assert _digests(teacher_save) == teacher_files, (
        "a student run wrote to the teacher"
    )

    for system in ("teacher", "rm_tl_cl", "rh"):
        with open(
            os.path.join(results, "demo", system, "1986", "test_results.json")
        ) as fin:
            scores = json.load(fin)
        assert set(scores) == {"clean", "0dB"}
        for condition in scores.values():
            for name in ("arousal", "dominance", "valence"):
                assert -1 <= condition[f"ccc_{name}"] <= 1

    # RH trained the head only: its encoder checkpoint holds the teacher's weights.
    teacher_ckpt = glob.glob(
        os.path.join(teacher_save, "CKPT+*", "encoder.ckpt")
    )[0]
    rh_ckpt = glob.glob(
        os.path.join(results, "demo", "rh", "1986", "save", "CKPT+*")
    )[0]
    teacher_encoder = torch.load(teacher_ckpt)
    rh_encoder = torch.load(os.path.join(rh_ckpt, "encoder.ckpt"))
    assert all(
        torch.equal(teacher_encoder[k], rh_encoder[k]) for k in teacher_encoder
    )
    student_log = open(
        os.path.join(results, "demo", "rm_tl_cl", "1986", "train_log.txt")
    ).read()
    assert "tl_loss" in student_log and "cl_loss" in student_log


def _brain(precision):
    head = RegressionHead(8, hidden_size=4, num_hidden_layers=1)
    return EmotionBrain(
        modules={"head": head},
        hparams={"label_min": 1.0, "label_max": 7.0},
        run_opts={
            "device": "cpu",
            "precision": precision,
            "eval_precision": precision,
        },
    )


@pytest.mark.parametrize("units", [True, False])
def test_bf16_runs_on_cpus_with_bfloat16_units_only(units, monkeypatch, caplog):
    monkeypatch.setattr(custom_interface, "cpu_has_bf16", lambda: units)
    brain = _brain("bf16")
    assert (
        brain.precision == brain.eval_precision == ("bf16" if units else "fp32")
    )
    if not units:
        assert (
            "--precision bf16 ignored on cpu: this CPU has no bfloat16 units"
            in (caplog.text)
        )


def test_fp16_on_cpu_runs_in_float32(caplog):
    brain = _brain("fp16")
    assert brain.precision == brain.eval_precision == "fp32"
    assert "--precision fp16 ignored on cpu: fp16 is for GPUs" in caplog.text
