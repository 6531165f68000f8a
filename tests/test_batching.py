"""Length-aware batching: SpeechBrain's DynamicBatchSampler behind the dynamic_batching key."""

import csv
import os

import numpy as np
import pytest
from ctsl_brain.dataio import MANIFEST_COLUMNS, SettingsError
from recipe_run import demo_arguments, run_train
from train import dataio_prepare


def _manifest(path, durations):
    with open(path, "w", newline="") as fout:
        writer = csv.writer(fout)
        writer.writerow(MANIFEST_COLUMNS)
        for i, duration in enumerate(durations):
            writer.writerow(
                [
                    f"utt{i:04d}",
                    f"/nowhere/{i}.wav",
                    f"{duration:.3f}",
                    4,
                    4,
                    4,
                    "s1",
                ]
            )


def _hparams(tmp_path, durations, dynamic):
    manifest = str(tmp_path / "train.csv")
    _manifest(manifest, durations)
    _manifest(str(tmp_path / "test.csv"), durations[:2])
    return {
        "sample_rate": 16000,
        "data_folder": str(tmp_path),
        "manifest_folder": str(tmp_path),
        "train_annotation": manifest,
        "dev_annotation": manifest,
        "test_snrs": [],
        "recorded_test_folders": None,
        "recorded_dev_folders": None,
        "sorting": "random",
        "dynamic_batching": dynamic,
        "dynamic_batch_sampler": {
            "max_batch_length": 32 * 5.0,
            "num_buckets": 60,
            "shuffle": True,
            "batch_ordering": "random",
        },
        "train_dataloader_opts": {
            "batch_size": 32,
            "shuffle": True,
            "num_workers": 0,
        },
    }


def _padding(batches, durations):
    real = sum(durations[i] for batch in batches for i in batch)
    padded = sum(
        len(batch) * max(durations[i] for i in batch) for batch in batches
    )
    return 1 - real / padded


def test_dynamic_batches_cover_every_utterance_once_with_less_padding(tmp_path):
    # MSP-Podcast-like durations: 2.75 to 11 s, more short than long.
    rng = np.random.default_rng(0)
    durations = np.clip(2.75 + rng.gamma(1.5, 2.0, 2000), 2.75, 11.0).tolist()
    hparams = _hparams(tmp_path, durations, dynamic=True)
    dataio_prepare(hparams)
    options = hparams["train_dataloader_opts"]
    assert "batch_size" not in options and "shuffle" not in options
    sampler = options["batch_sampler"]
    batches = list(iter(sampler))
    assert sorted(i for batch in batches for i in batch) == list(
        range(len(durations))
    )
    assert all(
        sum(durations[i] for i in batch) <= 32 * 5.0 for batch in batches
    )

    order = rng.permutation(len(durations))
    random_batches = [
        order[i : i + 32].tolist() for i in range(0, len(order), 32)
    ]
    dynamic, fixed = (
        _padding(batches, durations),
        _padding(random_batches, durations),
    )
    assert dynamic < 0.08 < 0.3 < fixed, (dynamic, fixed)


def test_dynamic_batching_needs_random_sorting(tmp_path):
    hparams = _hparams(tmp_path, [3.0] * 10, dynamic=True)
    hparams["sorting"] = "ascending"
    with pytest.raises(
        SettingsError, match="dynamic_batching: .* run with --sorting random"
    ):
        dataio_prepare(hparams)


@pytest.mark.slow
def test_training_with_dynamic_batches_reports_its_padding(tmp_path):
    data_folder = str(tmp_path / "demo")
    run_train(
        "hparams/teacher.yaml",
        tmp_path / "results",
        "--data_folder",
        data_folder,
        *demo_arguments(n_train=24),
        "--dynamic_batching",
        "True",
        "--dynamic_batch_sampler",
        "{max_batch_length: 12, num_buckets: 4, shuffle: True, batch_ordering: random}",
    )
    log = open(
        os.path.join(
            tmp_path, "results", "demo", "teacher", "1986", "train_log.txt"
        )
    )
    assert "train padding" in log.read()
