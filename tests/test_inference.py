"""Using a trained model: export a run, load it, predict files of any kind, and the command line.

The tiny teacher of conftest's ``teacher_export`` (two epochs on an MSP-Podcast-like release)
and a student of it (one epoch): their exports must give the predictions of the runs' own
evaluation."""

import inspect
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile
import torch
import torchaudio
from ctsl_brain import custom_interface
from ctsl_brain.__main__ import main
from ctsl_brain.dataio import (
    ATTRIBUTES,
    AUDIO_ADVICE,
    DataError,
    MissingInputError,
    describe_audio_problem,
    inspect_audio,
)
from ctsl_brain.deployment.export import export_run
from ctsl_brain.deployment.inference import EmotionRegressor, audio_files
from recipe_run import (
    RATE,
    ROOT,
    TEST_SECONDS,
    evaluated_epoch,
    prediction_values,
    run_checked,
    run_predictions,
    run_train,
)


@pytest.fixture(scope="module")
def runs(teacher_export, tmp_path_factory):
    """The teacher run of ``teacher_export`` (2 epochs) and a student of it (1 epoch), each
    exported, and the exports moved: a model folder does not depend on where it was written."""
    base = tmp_path_factory.mktemp("inference")
    results = teacher_export["results"]
    run_train("hparams/student.yaml", results, *teacher_export["arguments"])
    teacher_run = teacher_export["run"]
    student_run = str(results / "msp_podcast" / "rm_tl_cl" / "1986")
    other_epoch = 3 - evaluated_epoch(
        teacher_run
    )  # the one the evaluation did not choose

    out = str(base / "export" / "teacher")
    run_checked(
        [
            sys.executable,
            "-m",
            "ctsl_brain",
            "export",
            "--run",
            teacher_run,
            "--out",
            out,
        ]
    )
    export_run(student_run, base / "export" / "student")
    export_run(teacher_run, base / "export" / "other", epoch=other_epoch)
    shutil.move(base / "export", base / "moved")
    models = {
        name: str(base / "moved" / name)
        for name in ("teacher", "student", "other")
    }
    speech = [
        path
        for path in teacher_export["test_files"]
        if soundfile.info(path).samplerate == RATE
        and soundfile.info(path).channels == 1
    ]
    return {
        "results": results,
        "data_folder": teacher_export["data_folder"],
        "manifests": teacher_export["manifests"],
        "runs": {"teacher": teacher_run, "student": student_run},
        "models": models,
        "other_epoch": other_epoch,
        "speech": speech,
    }


@pytest.fixture(scope="module")
def model(runs):
    return EmotionRegressor.from_hparams(
        source=runs["models"]["teacher"], run_opts={"device": "cpu"}
    )


def _run_predictions(runs, system, epoch):
    """The run's own predictions of the test files of every condition, by file path."""
    return run_predictions(
        runs["runs"][system], runs["manifests"], runs["data_folder"], epoch
    )


def _largest_difference(model, expected, count=None):
    return max(
        np.abs(prediction_values(model.predict_file(path)) - values).max()
        for path, values in list(expected.items())[:count]
    )


# ----- Export, then load -----


@pytest.mark.parametrize("system", ["teacher", "student"])
@pytest.mark.slow
def test_exported_model_predicts_what_the_run_evaluated(runs, system):
    model = EmotionRegressor.from_hparams(source=runs["models"][system])
    epoch = evaluated_epoch(runs["runs"][system])
    expected = _run_predictions(runs, system, epoch)
    assert len(expected) == 2 * len(TEST_SECONDS), "clean and 0 dB test files"
    # predictions.csv keeps 6 significant digits.
    assert _largest_difference(model, expected) < 1e-4


@pytest.mark.slow
def test_checkpoint_option_exports_that_epoch(runs):
    other = EmotionRegressor.from_hparams(source=runs["models"]["other"])
    expected = _run_predictions(
        runs, "teacher", evaluated_epoch(runs["runs"]["teacher"])
    )
    assert _largest_difference(other, expected, 2) > 1e-3, (
        "the other epoch predicts the same"
    )
    with open(os.path.join(runs["models"]["other"], "hyperparams.yaml")) as fin:
        assert f"the checkpoint of epoch {runs['other_epoch']}," in fin.read()


@pytest.mark.slow
def test_exported_folder_is_self_contained_and_lint_clean(runs):
    folder = runs["models"]["teacher"]
    assert sorted(os.listdir(folder)) == [
        "README.md",
        "custom_interface.py",
        "encoder.ckpt",
        "head.ckpt",
        "hyperparams.yaml",
    ]
    with open(os.path.join(folder, "custom_interface.py")) as fin:
        assert fin.read() == inspect.getsource(custom_interface), (
            "the exported code is not the project's"
        )
    with open(os.path.join(folder, "hyperparams.yaml")) as fin:
        text = fin.read()
    assert runs["runs"]["teacher"] in text and "label_min: 1.0" in text
    yamllint = os.path.join(os.path.dirname(sys.executable), "yamllint")
    linted = subprocess.run(
        [yamllint, "--strict", os.path.join(folder, "hyperparams.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert linted.returncode == 0, linted.stdout

    # Without the encoder the run was trained from, the model still loads and predicts.
    cache = runs["results"] / "encoders"
    os.rename(cache, f"{cache}.away")
    try:
        model = EmotionRegressor.from_hparams(source=folder)
        expected = _run_predictions(
            runs, "teacher", evaluated_epoch(runs["runs"]["teacher"])
        )
        assert _largest_difference(model, expected, 1) < 1e-4
    finally:
        os.rename(f"{cache}.away", cache)


@pytest.mark.slow
def test_default_checkpoint_is_the_one_the_evaluation_chose(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["runs"]["teacher"], run)
    best = evaluated_epoch(run)
    # Told by evaluation.json that the other epoch is its best, the export follows it.
    evaluation = json.loads((run / "evaluation.json").read_text())
    evaluation["checkpoints"] = [{"epoch": runs["other_epoch"], "dev_ccc": 0.0}]
    (run / "evaluation.json").write_text(json.dumps(evaluation))
    assert export_run(run, tmp_path / "told")["epoch"] == runs["other_epoch"]
    # A run not evaluated yet: its best dev checkpoint, the one its evaluation will choose.
    (run / "evaluation.json").unlink()
    assert export_run(run, tmp_path / "unfinished")["epoch"] == best


@pytest.mark.slow
def test_export_refusals_name_the_path_and_the_way_out(runs, tmp_path, capsys):
    teacher_run = runs["runs"]["teacher"]
    missing = str(tmp_path / "no_run")
    assert main(["export", "--run", missing, "--out", str(tmp_path / "m")]) == 1
    assert missing in capsys.readouterr().err

    no_checkpoint = tmp_path / "fresh_run"
    no_checkpoint.mkdir()
    shutil.copy(os.path.join(teacher_run, "hyperparams.yaml"), no_checkpoint)
    assert (
        main(
            [
                "export",
                "--run",
                str(no_checkpoint),
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 1
    )
    assert "no end-of-epoch checkpoint" in capsys.readouterr().err

    assert main(
        [
            "export",
            "--run",
            teacher_run,
            "--out",
            str(tmp_path / "m"),
            "--checkpoint",
            "9",
        ]
    )
    assert "its epochs are 1, 2" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "m")

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert (
            main(
                ["export", "--run", teacher_run, "--out", str(occupied), *extra]
            )
            == 1
        )
        error = capsys.readouterr().err
        assert str(occupied) in error and ("--overwrite" in error)
    assert os.listdir(occupied) == ["notes.txt"]

    with pytest.raises(SystemExit) as usage:
        main(["export", "--run", teacher_run])
    assert usage.value.code == 2


@pytest.mark.slow
def test_overwrite_replaces_an_earlier_export(runs, tmp_path):
    out = str(tmp_path / "model")
    export_run(runs["runs"]["teacher"], out, epoch=runs["other_epoch"])
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_run(runs["runs"]["teacher"], out)
    done = export_run(runs["runs"]["teacher"], out, overwrite=True)
    assert done["epoch"] == evaluated_epoch(runs["runs"]["teacher"])
    assert sorted(os.listdir(tmp_path)) == ["model"], (
        "a staging folder was left behind"
    )


@pytest.mark.slow
def test_an_export_killed_half_way_is_redone_by_the_same_command(
    runs, tmp_path
):
    """What a killed export leaves beside its --out folder (the model being written, or an
    earlier export being replaced) is removed by the next export, which then succeeds."""
    out = tmp_path / "model"
    dead = 2**22 + 12345  # above Linux' default pid_max: no process has this id
    for kind in ("partial", "old"):
        leftover = tmp_path / f".model.{dead}.{kind}"
        leftover.mkdir()
        (leftover / "head.ckpt").write_bytes(b"cut sh")
    export_run(runs["runs"]["teacher"], str(out))
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert EmotionRegressor.from_hparams(source=str(out)) is not None


# ----- Audio as it comes -----


def _speech(runs, index=0):
    """The ``index``-th of the test utterances recorded at 16 kHz in mono."""
    data, rate = soundfile.read(runs["speech"][index], dtype="float32")
    assert rate == RATE
    return data


def _write(path, data, rate=RATE, subtype="FLOAT"):
    soundfile.write(str(path), data, rate, subtype=subtype)
    return str(path)


def _batch(model, signal):
    return model.predict_batch(
        torch.as_tensor(signal, dtype=torch.float32)[None]
    )[0].numpy()


@pytest.mark.slow
def test_predict_file_is_predict_batch_of_the_waveform(model, runs, tmp_path):
    speech = _speech(runs)
    prediction = model.predict_file(_write(tmp_path / "mono.wav", speech))
    assert list(prediction) == list(ATTRIBUTES)
    # Shorter than the window: one window, exactly the waveform's prediction.
    assert np.array_equal(
        prediction_values(prediction), _batch(model, speech).astype(np.float64)
    )
    embedding = model.encode_batch(torch.as_tensor(speech)[None])
    assert embedding.shape == (1, model.mods.encoder.output_size)


@pytest.mark.slow
def test_channels_are_averaged(model, runs, tmp_path):
    speech, other = _speech(runs, 0), _speech(runs, 1)
    mono = prediction_values(
        model.predict_file(_write(tmp_path / "mono.wav", speech))
    )
    twice = model.predict_file(
        _write(tmp_path / "twice.wav", np.stack([speech, speech], 1))
    )
    assert np.array_equal(prediction_values(twice), mono)

    other = np.resize(other, len(speech))
    stereo = model.predict_file(
        _write(tmp_path / "stereo.wav", np.stack([speech, other], 1))
    )
    assert np.allclose(
        prediction_values(stereo),
        _batch(model, (speech + other) / 2),
        atol=1e-5,
    )
    assert not np.allclose(prediction_values(stereo), mono, atol=1e-3)


@pytest.mark.parametrize("rate", [44100, 8000])
@pytest.mark.slow
def test_other_sample_rates_are_resampled(model, runs, tmp_path, rate):
    speech = torch.as_tensor(_speech(runs))
    recorded = torchaudio.functional.resample(speech, RATE, rate).numpy()
    prediction = model.predict_file(
        _write(tmp_path / f"{rate}.wav", recorded, rate)
    )
    heard = torchaudio.functional.resample(
        torch.as_tensor(recorded), rate, RATE
    )
    assert np.allclose(
        prediction_values(prediction), _batch(model, heard), atol=1e-5
    )


@pytest.mark.slow
def test_integer_and_float_wav_give_the_same_prediction(model, runs, tmp_path):
    quantised = np.round(_speech(runs) * 32767).astype(np.int16)
    as_int = model.predict_file(
        _write(tmp_path / "int16.wav", quantised, subtype="PCM_16")
    )
    as_float = model.predict_file(
        _write(tmp_path / "float.wav", quantised / 32768.0)
    )
    assert np.array_equal(
        prediction_values(as_int), prediction_values(as_float)
    )


def _manual_windows(model, signal, count, *, by_frames=True):
    """The documented rule, computed step by step: ``count`` equal windows, each embedded
    alone, their embeddings averaged with their frame counts as weights (or equal weights),
    then the head."""
    bounds = [len(signal) * i // count for i in range(count + 1)]
    embeddings, frames = [], []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        embeddings.append(
            model.encode_batch(torch.as_tensor(signal[start:end])[None])[0]
        )
        frames.append(
            float(model.mods.encoder.frame_lengths(torch.tensor(end - start)))
        )
    frames = torch.tensor(frames) if by_frames else torch.ones(count)
    embedding = (
        torch.stack(embeddings) * (frames / frames.sum())[:, None]
    ).sum(0)
    return (model.mods.head(embedding[None])[0] * 6 + 1).numpy()


@pytest.mark.slow
def test_long_files_are_embedded_in_windows(model, runs, tmp_path):
    speech = np.concatenate([_speech(runs, i) for i in range(3)])
    seconds = len(speech) / RATE
    path = _write(tmp_path / "long.wav", speech)

    # Exactly three windows of one second: the plain mean of their embeddings.
    exact = speech[: 3 * RATE]
    by_window = model.predict_file(
        _write(tmp_path / "three.wav", exact), window_seconds=1.0
    )
    windows = [
        model.encode_batch(torch.as_tensor(exact[i * RATE : (i + 1) * RATE]))
        for i in range(3)
    ]
    mean = torch.cat(windows).mean(0, keepdim=True)
    expected = (model.mods.head(mean)[0] * 6 + 1).numpy()
    assert np.allclose(prediction_values(by_window), expected, atol=1e-5)

    count = int(np.ceil(seconds / 2.0))
    assert count >= 3
    windowed = model.predict_file(path, window_seconds=2.0, batch_size=2)
    assert np.allclose(
        prediction_values(windowed),
        _manual_windows(model, speech, count),
        atol=1e-5,
    )
    assert not np.allclose(
        prediction_values(windowed), _batch(model, speech), atol=1e-3
    )

    # Two windows a frame apart (one sample apart, across a frame boundary): weighted by their
    # frame counts, not equally.
    frames = model.mods.encoder.frame_lengths
    edge = next(
        n
        for n in range(4000, 5000)
        if frames(torch.tensor(n)) > frames(torch.tensor(n - 1))
    )
    pair = speech[RATE : RATE + 2 * edge - 1]
    uneven = model.predict_file(
        _write(tmp_path / "pair.wav", pair), window_seconds=edge / RATE
    )
    weighted = _manual_windows(model, pair, 2)
    assert not np.allclose(
        weighted, _manual_windows(model, pair, 2, by_frames=False), atol=1e-5
    )
    assert np.allclose(prediction_values(uneven), weighted, atol=1e-6)

    # The window is a key of the model too, and a window as long as the file is the file.
    shorter = EmotionRegressor.from_hparams(
        source=runs["models"]["teacher"], overrides={"window_seconds": 2.0}
    )
    assert np.allclose(
        prediction_values(shorter.predict_file(path)),
        prediction_values(windowed),
        atol=1e-6,
    )
    whole = model.predict_file(path, window_seconds=seconds)
    assert np.array_equal(
        prediction_values(whole), _batch(model, speech).astype(np.float64)
    )
    with pytest.raises(ValueError, match="window_seconds=0.1"):
        model.predict_file(path, window_seconds=0.1)


@pytest.mark.slow
def test_unusable_files_are_clear_errors(model, tmp_path):
    empty = _write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))
    nothing = tmp_path / "nothing.wav"
    nothing.write_bytes(b"")
    short = _write(tmp_path / "short.wav", np.ones(400, dtype=np.float32) * 0.1)
    folder = tmp_path / "take1.wav"
    folder.mkdir()
    link = tmp_path / "link.wav"
    link.symlink_to(tmp_path / "moved.wav")
    cases = {
        empty: "holds no samples",
        str(nothing): "convert it to WAV or FLAC",
        short: "needs at least 0.1 s",
        str(tmp_path / "absent.wav"): "does not exist",
        str(folder): "not a file: .* is a folder; put the audio file itself",
        str(link): "broken link: .* links to .*moved.wav, which does not exist",
    }
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as error:
            model.predict_file(path)
        assert path in str(error.value)


def test_model_folder_must_exist_and_be_an_export(tmp_path):
    with pytest.raises(
        MissingInputError, match="model folder .*absent does not exist: give"
    ):
        EmotionRegressor.from_hparams(source=str(tmp_path / "absent"))
    with pytest.raises(
        MissingInputError, match="is not a model folder .* export a trained run"
    ):
        EmotionRegressor.from_hparams(source=str(tmp_path))


@pytest.mark.slow
def test_silent_and_non_finite_files_are_refused_as_in_training(
    model, runs, tmp_path
):
    """The verdict, kind and advice of the training data preparation, word for word."""
    speech = _speech(runs)
    with_nan, with_inf = speech.copy(), speech.copy()
    with_nan[RATE // 2] = np.nan
    with_inf[-1] = np.inf
    files = {
        "silent audio": _write(tmp_path / "silent.wav", np.zeros_like(speech)),
        "non-finite audio": _write(tmp_path / "nan.wav", with_nan),
    }
    files["inf"] = _write(tmp_path / "inf.wav", with_inf)
    for kind, path in files.items():
        _, problem = inspect_audio(path, min_duration=0.1)
        assert problem[0] == ("non-finite audio" if kind == "inf" else kind)
        with pytest.raises(DataError) as error:
            model.predict_file(path)
        assert str(error.value) == describe_audio_problem(*problem)
    assert str(error.value).endswith(AUDIO_ADVICE["non-finite audio"])


@pytest.mark.slow
def test_a_prediction_that_is_not_a_number_is_an_error(
    model, runs, tmp_path, monkeypatch
):
    path = _write(tmp_path / "speech.wav", _speech(runs))
    monkeypatch.setattr(
        model,
        "predict_from_embeddings",
        lambda embeddings: torch.full((len(embeddings), 3), np.nan),
    )
    with pytest.raises(
        DataError, match="non-finite prediction: the model gives arousal nan"
    ):
        model.predict_file(path)
    frame = model.predict_files([path])
    assert frame.loc[path, "error"].startswith("non-finite prediction")
    assert frame.loc[path, list(ATTRIBUTES)].isna().all()


# ----- The command line -----


@pytest.mark.slow
def test_predict_command_reports_a_broken_file_and_predicts_the_rest(
    model, runs, tmp_path
):
    folder = tmp_path / "calls"
    (folder / "day2").mkdir(parents=True)
    speech = _speech(runs, 2)
    good = [
        _write(folder / "a.wav", _speech(runs, 0), subtype="PCM_16"),
        _write(
            folder / "b.flac",
            np.stack([speech, speech * 0.5], 1),
            44100,
            subtype="PCM_24",
        ),
        _write(folder / "day2" / "c.wav", _speech(runs, 3)),
    ]
    broken = folder / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x10\x00\x00WAVE" + bytes(range(256)) * 4)
    (folder / "notes.txt").write_text("not audio")
    out = tmp_path / "predictions.csv"

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctsl_brain",
            "predict",
            "--model",
            runs["models"]["teacher"],
            str(folder),
            "--out",
            str(out),
            "--batch_size",
            "2",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "3 of 4 files predicted, 1 failed" in done.stderr
    table = pd.read_csv(out, keep_default_na=False).set_index("file")
    assert list(table.columns) == ["duration", *ATTRIBUTES, "error"]
    assert sorted(table.index) == sorted([*good, str(broken)])
    assert str(broken) in table.loc[str(broken), "error"]
    assert (table.loc[str(broken), list(ATTRIBUTES)] == "").all()
    for path in good:
        assert table.loc[path, "error"] == ""
        expected = prediction_values(model.predict_file(path))
        assert np.allclose(
            table.loc[path, list(ATTRIBUTES)].astype(float), expected, atol=1e-4
        )
    duration = float(table.loc[good[0], "duration"])
    assert duration == pytest.approx(len(_speech(runs, 0)) / RATE, abs=1e-3)


@pytest.mark.slow
def test_predict_command_exits_0_when_all_files_succeed(runs, tmp_path, capsys):
    path = _write(tmp_path / "one.wav", _speech(runs))
    out = tmp_path / "one.csv"
    status = main(
        [
            "predict",
            "--model",
            runs["models"]["teacher"],
            path,
            "--out",
            str(out),
            "--noprogressbar",
        ]
    )
    assert status == 0, capsys.readouterr().err
    assert pd.read_csv(out)["error"].isna().all()

    with pytest.raises(SystemExit) as usage:
        main(["predict", "--model", runs["models"]["teacher"], path])
    assert usage.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_audio_files_searches_folders_and_keeps_named_files(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    for name in ("x/b.WAV", "x/y/a.flac", "x/readme.md", "x/c.ogg"):
        (tmp_path / name).write_bytes(b"")
    found = audio_files(
        [str(tmp_path / "x"), str(tmp_path / "x" / "readme.md"), "missing.wav"]
    )
    assert found == [
        str(tmp_path / "x" / "b.WAV"),
        str(tmp_path / "x" / "c.ogg"),
        str(tmp_path / "x" / "y" / "a.flac"),
        str(tmp_path / "x" / "readme.md"),
        "missing.wav",
    ]


@pytest.mark.slow
def test_predict_reports_bad_audio_and_never_writes_nan(
    model, runs, tmp_path, capsys
):
    """NaN, infinite and silent files are error rows with the reason, the good files are
    predicted, a folder named like a file is searched, and no number in the CSV is NaN."""
    folder = tmp_path / "calls"
    (folder / "take2.wav").mkdir(parents=True)  # a folder, searched as one
    speech = _speech(runs)
    with_nan, with_inf = speech.copy(), speech.copy()
    with_nan[::1000] = np.nan
    with_inf[RATE // 4] = -np.inf
    good = [
        _write(folder / "good.wav", speech),
        _write(folder / "take2.wav" / "in.wav", speech),
    ]
    bad = {
        _write(folder / "nan.wav", with_nan): "non-finite audio: ",
        _write(folder / "inf.wav", with_inf): "non-finite audio: ",
        _write(folder / "silent.wav", np.zeros_like(speech)): "silent audio: ",
    }
    out = tmp_path / "predictions.csv"
    model_folder = runs["models"]["teacher"]
    arguments = [
        "predict",
        "--model",
        model_folder,
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main([*arguments, str(folder), "--noprogressbar"]) == 1
    assert "2 of 5 files predicted, 3 failed" in capsys.readouterr().err
    table = pd.read_csv(out, keep_default_na=False, dtype=str).set_index("file")
    numbers = table[["duration", *ATTRIBUTES]].to_numpy().ravel()
    assert all(value == "" or np.isfinite(float(value)) for value in numbers)
    assert sorted(table.index) == sorted([*good, *bad])
    for path, reason in bad.items():
        assert table.loc[path, "error"] == describe_audio_problem(
            *inspect_audio(path, min_duration=0.1)[1]
        )
        assert table.loc[path, "error"].startswith(reason)
        assert (table.loc[path, ["duration", *ATTRIBUTES]] == "").all()
    for path in good:
        assert table.loc[path, "error"] == ""
        expected = prediction_values(model.predict_file(path))
        assert np.allclose(
            table.loc[path, list(ATTRIBUTES)].astype(float), expected, atol=1e-4
        )

    # A folder named like a file that holds no audio: said at once, nothing is predicted.
    empty = tmp_path / "take1.wav"
    empty.mkdir()
    os.remove(out)
    assert main([*arguments, str(empty), good[0], "--noprogressbar"]) == 1
    error = capsys.readouterr().err
    assert (
        f"{empty} is a folder and holds no audio file (searched for .wav"
        in error
    )
    assert not out.exists()


@pytest.mark.slow
def test_bf16_predicts_close_to_float32_and_the_cli_takes_it(
    runs, monkeypatch, tmp_path
):
    """bf16 autocast runs on any CPU (fast only with bfloat16 units): here the CPU is taken for
    one that has them, so that the bf16 path is checked everywhere."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    source = runs["models"]["teacher"]
    full = EmotionRegressor.from_hparams(
        source=source, run_opts={"device": "cpu"}
    )
    half = EmotionRegressor.from_hparams(
        source=source, run_opts={"device": "cpu", "precision": "bf16"}
    )
    assert half.precision == "bf16" and full.precision == "fp32"
    paths = [_write(tmp_path / f"{i}.wav", _speech(runs, i)) for i in range(4)]
    expected = np.array(
        [prediction_values(full.predict_file(p)) for p in paths]
    )
    got = np.array([prediction_values(half.predict_file(p)) for p in paths])
    assert got.dtype == np.float64 and np.isfinite(got).all()
    # bfloat16 keeps 8 bits of mantissa: close on the 1-7 scale, yet not the float32 numbers.
    assert np.abs(got - expected).max() < 0.05
    assert not np.array_equal(got, expected)
    embedding = half.encode_batch(torch.as_tensor(_speech(runs))[None])
    assert embedding.dtype == torch.float32

    out = tmp_path / "onnx.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctsl_brain",
            "predict",
            "--model",
            source,
            "--precision",
            "bf16",
            "--backend",
            "onnx",
            "--out",
            str(out),
            paths[0],
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "is for the PyTorch backend" in done.stderr


@pytest.mark.slow
def test_fp16_on_cpu_predicts_in_float32_with_the_reason(runs):
    with pytest.warns(UserWarning, match="fp16 is for GPUs"):
        model = EmotionRegressor.from_hparams(
            source=runs["models"]["teacher"],
            run_opts={"device": "cpu", "precision": "fp16"},
        )
    assert model.precision == "fp32"


@pytest.mark.slow
def test_embeddings_come_with_the_predictions(model, runs, tmp_path, capsys):
    short = _speech(runs)
    long = np.concatenate([_speech(runs, i) for i in range(3)])
    paths = [
        _write(tmp_path / "short.wav", short),
        _write(tmp_path / "long.wav", long),
    ]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    out = tmp_path / "scores.csv"
    window = f"{len(short) / RATE + 0.1:.3f}"  # the short file whole, the long in windows
    status = main(
        [
            "predict",
            "--model",
            runs["models"]["teacher"],
            *paths,
            str(broken),
            "--out",
            str(out),
            "--window_seconds",
            window,
            "--embeddings",
            "--noprogressbar",
        ]
    )
    assert status == 1  # the broken file
    capsys.readouterr()
    saved = np.load(tmp_path / "scores.embeddings.npz")
    scores = pd.read_csv(out)
    assert saved["files"].tolist() == paths == scores["file"][:2].tolist()
    assert saved["embeddings"].dtype == np.float32
    embeddings = torch.from_numpy(saved["embeddings"])  # torch reads it too
    # A short file: its embedding; a long one: the frame-weighted mean of its windows', which
    # gives its prediction through the head.
    torch.testing.assert_close(
        embeddings[0], model.encode_batch(torch.as_tensor(short))[0]
    )
    from_embedding = model.predict_from_embeddings(embeddings)
    torch.testing.assert_close(
        from_embedding.double(),
        torch.tensor(
            scores[["arousal", "dominance", "valence"]][:2].to_numpy()
        ),
        atol=1e-5,
        rtol=0,
    )
    frame, table = model.predict_files(
        [*paths, str(broken)], window_seconds=float(window), embeddings=True
    )
    assert np.isnan(table[2]).all() and frame["error"].iloc[2]
    np.testing.assert_allclose(table[:2], saved["embeddings"], atol=1e-6)
