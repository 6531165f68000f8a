"""A model where its users run it: loaded without the project, from ONNX, on long recordings.

The tiny teacher of conftest's ``teacher_export`` is trained on an MSP-Podcast-like release
whose utterances last 2 to 13 s, some of them at 44.1 kHz in stereo, and exported with its
ONNX models. The tests check that the export reproduces the run's own predictions on every
test utterance, that the folder loads with SpeechBrain's ``foreign_class`` in a Python that
cannot import this project, that ONNX gives PyTorch's numbers, and the time series of long
recordings.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
from ctsl_brain.__main__ import main
from ctsl_brain.custom_interface import load_audio, read_segment
from ctsl_brain.dataio import ATTRIBUTES
from ctsl_brain.deployment.export import export_onnx, export_run
from ctsl_brain.deployment.inference import EmotionRegressor
from recipe_run import (
    RATE,
    ROOT,
    TEST_SECONDS,
    environment_without_the_project,
    prediction_values,
    run_predictions,
    voice,
)


@pytest.fixture(scope="module")
def model(teacher_export):
    return EmotionRegressor.from_hparams(
        source=teacher_export["model"], run_opts={"device": "cpu"}
    )


def _run_predictions(teacher_export):
    """The run's own predictions of its evaluated checkpoint, by audio file."""
    return run_predictions(
        teacher_export["run"],
        teacher_export["manifests"],
        teacher_export["data_folder"],
    )


# ----- Export parity -----


@pytest.mark.slow
def test_export_reproduces_the_runs_predictions_of_every_test_utterance(
    teacher_export, model
):
    expected = _run_predictions(teacher_export)
    assert len(expected) == 2 * len(TEST_SECONDS), "clean and 0 dB test files"
    # Every utterance like the run's is embedded whole, as its evaluation did.
    assert model.hparams.window_seconds >= max(TEST_SECONDS)
    worst = max(
        np.abs(prediction_values(model.predict_file(path)) - values).max()
        for path, values in expected.items()
    )
    assert worst < 1e-4  # predictions.csv keeps 6 significant digits

    # Windowed at the 10 s that exports used before, the longer utterances came out different:
    # that was the difference between an export and its run on corpora with long utterances.
    windowed = {
        path: np.abs(
            prediction_values(model.predict_file(path, window_seconds=10.0))
            - values
        ).max()
        for path, values in expected.items()
    }
    long = [p for p in windowed if soundfile.info(p).duration > 10.0]
    assert len(long) == 6 and min(windowed[p] for p in long) > 1e-4
    assert all(windowed[p] < 1e-4 for p in windowed if p not in long)


@pytest.mark.slow
def test_window_is_the_longest_utterance_of_the_runs_manifests(
    teacher_export, tmp_path
):
    longest = max(
        pd.read_csv(os.path.join(teacher_export["manifests"], f"{name}.csv"))[
            "duration"
        ].max()
        for name in ("train", "dev", "test")
    )
    with open(os.path.join(teacher_export["model"], "hyperparams.yaml")) as fin:
        text = fin.read()
    window = float(text.split("\nwindow_seconds: ")[1].split()[0])
    assert longest <= window < longest + 0.1
    # Exported from elsewhere, the run's relative manifest paths are still found.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctsl_brain",
            "export",
            "--run",
            teacher_export["run"],
            "--out",
            str(tmp_path / "again"),
        ],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"window {window:g} s" in done.stdout


# ----- Loaded where the project is not -----


@pytest.mark.slow
def test_foreign_class_loads_the_folder_without_the_project(
    teacher_export, model, tmp_path
):
    """In an empty folder, with neither the project nor pandas importable, SpeechBrain's
    foreign_class loads a copy of the folder and predicts exactly what the project does."""
    copy = tmp_path / "copied model"
    shutil.copytree(teacher_export["model"], copy)
    files = sorted(_run_predictions(teacher_export))[:3]
    script = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        assert importlib.util.find_spec("ctsl_brain") is None, "the project is importable"
        sys.modules["pandas"] = None  # not needed to predict
        import torch
        from speechbrain.inference.interfaces import foreign_class
        model = foreign_class(
            source={str(copy)!r},
            pymodule_file="custom_interface.py",
            classname="EmotionRegressor",
            savedir={str(tmp_path / "savedir")!r},
            run_opts={{"device": "cpu"}},
        )
        files = {files!r}
        found = {{path: model.predict_file(path) for path in files}}
        wav = model.load_audio(files[0])
        batch = torch.stack([wav, torch.cat([wav[: len(wav) // 2], torch.zeros(len(wav) - len(wav) // 2)])])
        found["batch"] = model.predict_batch(batch, torch.tensor([1.0, 0.5])).tolist()
        print(json.dumps(found))
        """
    )
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = environment_without_the_project()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for path in files:
        assert found[path] == model.predict_file(path)
    wav = model.load_audio(files[0])
    half = torch.cat(
        [wav[: len(wav) // 2], torch.zeros(len(wav) - len(wav) // 2)]
    )
    ours = model.predict_batch(
        torch.stack([wav, half]), torch.tensor([1.0, 0.5])
    )
    assert np.array_equal(np.array(found["batch"]), ours.numpy())


@pytest.mark.slow
def test_model_card_describes_this_model(teacher_export):
    with open(os.path.join(teacher_export["model"], "README.md")) as fin:
        card = fin.read()
    with open(os.path.join(teacher_export["run"], "test_results.json")) as fin:
        results = json.load(fin)
    for condition, stats in results.items():
        row = f"| {condition} | {len(TEST_SECONDS)} | " + " | ".join(
            f"{stats[f'ccc_{name}']:.3f}" for name in ATTRIBUTES
        )
        assert row in card, row
    for needed in (
        "1-7 scale",
        "can leave the scale",
        "clip_to_scale",
        "Silence",
        "shorter than 0.1 s",
        "foreign_class",
        "model.int8.onnx",
        "--hop",
        "Licences",
        "MSP-Podcast",
    ):
        assert needed in card, needed

    # What the Hub reads, as huggingface_hub parses it.
    from huggingface_hub import ModelCard

    data = ModelCard(card).data
    assert data.library_name == "speechbrain" and data.license == "apache-2.0"
    assert data.language == ["en"] and data.datasets == ["MSP-Podcast"]
    assert data.inference is False  # no hosted widget for a foreign_class model
    assert data.min_speechbrain_version == "1.1.2"
    found = {
        (result.dataset_config, result.metric_name): result.metric_value
        for result in data.eval_results
    }
    assert len(found) == 3 * len(results)
    for condition, stats in results.items():
        for name in ATTRIBUTES:
            value = found[(condition, f"CCC {name}")]
            assert value == pytest.approx(stats[f"ccc_{name}"], abs=5e-5)


def test_the_card_gives_the_licence_of_every_encoder_the_recipe_offers():
    import glob

    from ctsl_brain.deployment.card import ENCODER_LICENCES

    for path in glob.glob(os.path.join(ROOT, "hparams", "encoders", "*.yaml")):
        with open(path) as fin:
            sources = [
                line.split(":", 1)[1].strip()
                for line in fin
                if line.startswith("source:") and "!apply" not in line
            ]
        for source in sources:
            assert source in ENCODER_LICENCES, (path, source)


# ----- ONNX -----


@pytest.mark.slow
def test_onnx_backend_gives_pytorchs_predictions(
    teacher_export, model, tmp_path
):
    files = sorted(_run_predictions(teacher_export))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt not audio")
    tables = {}
    for backend in ("torch", "onnx", "int8"):
        out = tmp_path / f"{backend}.csv"
        options = {
            "torch": [],
            "onnx": ["--backend", "onnx"],
            "int8": ["--backend", "onnx", "--int8"],
        }[backend]
        status = main(
            [
                "predict",
                "--model",
                teacher_export["model"],
                *files,
                str(broken),
                "--out",
                str(out),
                "--batch_size",
                "3",
                "--noprogressbar",
                *options,
            ]
        )
        assert status == 1, "the broken file is an error row"
        tables[backend] = pd.read_csv(out, keep_default_na=False)
    torch_table, onnx_table = tables["torch"], tables["onnx"]
    assert list(onnx_table.columns) == list(torch_table.columns)
    assert list(onnx_table["file"]) == list(torch_table["file"])
    assert list(onnx_table["error"]) == list(torch_table["error"])
    good = torch_table["error"] == ""
    assert good.sum() == len(files)
    numbers = [*ATTRIBUTES]
    as_float = lambda table: table.loc[good, numbers].astype(float).to_numpy()  # noqa: E731
    assert np.abs(as_float(onnx_table) - as_float(torch_table)).max() < 1e-4
    int8 = np.abs(as_float(tables["int8"]) - as_float(torch_table)).max()
    assert 0 < int8 < 0.5, "int8 is an approximation, not another model"


@pytest.mark.slow
def test_onnx_model_takes_any_batch_and_length(teacher_export, model):
    """Padding is masked in ONNX as in PyTorch: a batch of other sizes and lengths than the
    traced one gives PyTorch's numbers."""
    onnx_model = EmotionRegressor.from_hparams(source=teacher_export["model"])
    onnx_model.use_onnx(teacher_export["model"])
    rng = np.random.default_rng(3)
    for lengths in ([RATE], [3 * RATE, RATE // 2, 2 * RATE + 17], [RATE] * 6):
        wavs = torch.zeros(len(lengths), max(lengths))
        for row, length in enumerate(lengths):
            wavs[row, :length] = torch.as_tensor(
                0.2 * rng.standard_normal(length), dtype=torch.float32
            )
        lens = torch.tensor(lengths, dtype=torch.float32) / max(lengths)
        expected = model.predict_batch(wavs, lens).numpy()
        assert (
            np.abs(
                onnx_model.predict_batch(wavs, lens).numpy() - expected
            ).max()
            < 1e-4
        )
        embedded = onnx_model.encode_batch(wavs, lens).numpy()
        assert (
            np.abs(embedded - model.encode_batch(wavs, lens).numpy()).max()
            < 1e-4
        )


@pytest.mark.slow
def test_an_onnx_model_that_differs_is_not_written(model, tmp_path):
    from ctsl_brain.custom_interface import EmotionGraph

    graph = EmotionGraph(model.mods.encoder, model.mods.head, 1.0, 7.0).eval()
    with pytest.raises(ValueError, match="differs from the PyTorch model"):
        export_onnx(graph, str(tmp_path / "model.onnx"), tolerance=0.0)
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_onnx_backend_without_an_onnx_export_says_how_to_get_one(
    teacher_export, tmp_path, capsys
):
    plain = tmp_path / "plain"
    export_run(teacher_export["run"], plain)
    wav = sorted(_run_predictions(teacher_export))[0]
    out = tmp_path / "p.csv"
    assert (
        main(
            [
                "predict",
                "--model",
                str(plain),
                wav,
                "--out",
                str(out),
                "--backend",
                "onnx",
            ]
        )
        == 1
    )
    error = capsys.readouterr().err
    assert "model.onnx" in error and "--onnx" in error
    assert not out.exists()


# ----- Output scale -----


@pytest.mark.slow
def test_clipping_to_the_label_scale_is_an_option(teacher_export, model):
    wav = sorted(_run_predictions(teacher_export))[0]
    clipped = EmotionRegressor.from_hparams(
        source=teacher_export["model"], overrides={"clip_to_scale": True}
    )
    for regressor in (model, clipped):
        regressor.mods.head[-1].bias.data += 100.0  # far above the scale
    try:
        assert min(model.predict_file(wav).values()) > 7.0
        assert list(clipped.predict_file(wav).values()) == [7.0, 7.0, 7.0]
    finally:
        for regressor in (model, clipped):
            regressor.mods.head[-1].bias.data -= 100.0


# ----- Long recordings -----


@pytest.mark.parametrize(
    "rate,channels", [(16000, 1), (44100, 2), (8000, 1), (22050, 2)]
)
def test_a_part_of_a_file_is_read_as_the_whole_file_is(
    tmp_path, rate, channels
):
    rng = np.random.default_rng(rate)
    audio = 0.3 * rng.standard_normal((int(7.3 * rate), channels))
    path = str(tmp_path / "long.wav")
    soundfile.write(path, audio, rate, subtype="FLOAT")
    whole = load_audio(path, RATE)
    for start, stop in (
        (0, 5000),
        (12345, 40000),
        (len(whole) - 7000, len(whole)),
        (0, len(whole)),
    ):
        part = read_segment(path, start, stop, RATE)
        assert part.shape == (stop - start,)
        assert (part - whole[start:stop]).abs().max() < 1e-6


@pytest.mark.slow
def test_long_files_are_read_a_window_at_a_time(model, tmp_path, monkeypatch):
    """An hour needs no more memory than a minute: no read is longer than a window (plus the
    resampling margin), whatever the file's length."""
    rate = 22050
    path = str(tmp_path / "long.flac")
    soundfile.write(
        path, np.concatenate([voice(5.0, i, rate) for i in range(12)]), rate
    )
    reads = []
    real_read = soundfile.read

    def read(file, *args, **kwargs):
        data, found = real_read(file, *args, **kwargs)
        reads.append(len(data))
        return data, found

    monkeypatch.setattr(soundfile, "read", read)
    model.predict_file(path, window_seconds=2.0, batch_size=2)
    model.predict_trajectory(path, 1.0, window_seconds=2.0, batch_size=2)
    assert (
        reads and max(reads) < 2.25 * rate
    )  # 2 s and a margin of 0.06 s each side


@pytest.mark.slow
def test_trajectory_predicts_each_window_as_its_own_waveform(model, tmp_path):
    path = str(tmp_path / "call.wav")
    soundfile.write(
        path, np.concatenate([voice(2.0, i) for i in range(4)]), RATE
    )
    rows = model.predict_trajectory(
        path, 0.75, window_seconds=2.0, batch_size=3
    )
    signal = model.load_audio(path)
    starts = [row["start"] for row in rows]
    assert starts[:-1] == [0.75 * i for i in range(len(rows) - 1)]
    assert rows[-1]["end"] == pytest.approx(8.0) and rows[-1][
        "start"
    ] == pytest.approx(6.0)
    for row in rows:
        piece = signal[round(row["start"] * RATE) : round(row["end"] * RATE)]
        assert (
            np.abs(
                prediction_values(row) - model.predict_batch(piece)[0].numpy()
            ).max()
            < 1e-5
        )
    with pytest.raises(ValueError, match="hop_seconds=0"):
        model.predict_trajectory(path, 0)


@pytest.mark.slow
def test_predict_hop_writes_each_files_time_series_and_plots(
    teacher_export, tmp_path
):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        soundfile.write(
            tmp_path / folder / "call.wav",
            np.concatenate([voice(2.0, i + len(folder)) for i in range(3)]),
            RATE,
        )
    silent = tmp_path / "a" / "silent.wav"
    soundfile.write(silent, np.zeros(3 * RATE, np.float32), RATE)
    out = tmp_path / "out" / "predictions.csv"
    status = main(
        [
            "predict",
            "--model",
            teacher_export["model"],
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--out",
            str(out),
            "--hop",
            "1",
            "--window_seconds",
            "2",
            "--plot",
            "--noprogressbar",
        ]
    )
    assert status == 1, "the silent file is an error"
    summary = pd.read_csv(out, keep_default_na=False)
    assert (
        summary.set_index("file")
        .loc[str(silent), "error"]
        .startswith("silent audio")
    )
    windows = pd.read_csv(tmp_path / "out" / "predictions.windows.csv")
    assert list(windows.columns) == ["file", "start", "end", *ATTRIBUTES]
    for name in ("a", "b"):
        rows = windows[windows["file"] == str(tmp_path / name / "call.wav")]
        assert list(rows["start"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert list(rows["end"]) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert str(silent) not in set(windows["file"])
    plots = sorted(os.listdir(tmp_path / "out" / "predictions.plots"))
    assert plots == ["a__call.png", "b__call.png"]
    with open(tmp_path / "out" / "predictions.plots" / plots[0], "rb") as fin:
        assert fin.read(8) == b"\x89PNG\r\n\x1a\n"
