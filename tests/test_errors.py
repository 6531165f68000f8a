"""Mistakes a user can make end in one clear message and a non-zero status, not a traceback."""

import os
import subprocess
import sys

import pytest
import torch
import train
from ctsl_brain import __main__ as cli
from ctsl_brain.checkpoints import AtomicCheckpointer
from ctsl_brain.dataio import (
    TRACEBACK_VARIABLE,
    DataError,
    MissingInputError,
    SettingsError,
    UserError,
    run_command,
)
from recipe_run import ROOT

TINY = os.path.join(ROOT, "hparams", "encoders", "tiny_wav2vec2.yaml")


def _fail(error):
    def main():
        raise error

    return main


def test_a_user_error_is_its_message_and_status_1(capsys, monkeypatch):
    monkeypatch.delenv(TRACEBACK_VARIABLE, raising=False)
    assert (
        run_command(_fail(MissingInputError("no file x.wav: check the path")))
        == 1
    )
    assert capsys.readouterr().err == "error: no file x.wav: check the path\n"
    assert run_command(lambda: None) == 0 and run_command(lambda: 3) == 3
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_command(_fail(KeyError("x")))
    monkeypatch.setenv(TRACEBACK_VARIABLE, "1")
    with pytest.raises(MissingInputError):
        run_command(_fail(MissingInputError("shown with its traceback")))


def test_an_error_of_a_dataloader_worker_is_shown_without_the_workers_traceback(
    capsys,
):
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            raise DataError(
                "utterance u1: x.wav holds NaN samples; write it again"
            )

    def main():
        for _ in torch.utils.data.DataLoader(Broken(), num_workers=1):
            pass

    assert run_command(main) == 1
    assert capsys.readouterr().err == (
        "error: utterance u1: x.wav holds NaN samples; write it again\n"
    )


def _train(tmp_path, *arguments, stage="teacher", results=None):
    """train.py's main in this process, with a tiny encoder, up to its first error."""
    return run_command(
        train.main,
        [
            os.path.join(ROOT, "hparams", f"{stage}.yaml"),
            "--encoder_hparams",
            TINY,
            "--encoder_cache",
            str(tmp_path / "encoders"),
            "--results_folder",
            str(results or tmp_path / "results"),
            *arguments,
        ],
    )


def _message(capsys):
    """What the command printed last on stderr: its one message (progress bars of the
    encoder's loading may come before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


@pytest.mark.parametrize(
    "arguments, message",
    [
        ([], "error: data_folder is not set: add --data_folder <value>"),
        (
            ["--data_folder", "d", "--lamda_tl", "3"],
            "error: --lamda_tl is not a setting of",
        ),
        (
            ["--data_folder", "d", "--batch_size", "[1"],
            "cannot read the settings of",
        ),
        (
            ["--data_folder", "d", "--corpus", "iemocap"],
            "corpus must be one of",
        ),
        (
            ["--data_folder", "d", "--sorting", "shuffled"],
            "sorting must be one of",
        ),
        (
            ["--data_folder", "d", "--number_of_epochs", "0"],
            "number_of_epochs must be a number",
        ),
        (
            ["--data_folder", "d", "--label_min", "7"],
            "label_min (7) must be below label_max",
        ),
        (
            ["--data_folder", "d", "--encoder_layers", "9"],
            "choose --encoder_layers from 1 to",
        ),
    ],
)
def test_wrong_settings_are_named(tmp_path, capsys, arguments, message):
    assert _train(tmp_path, *arguments) == 1
    assert message in _message(capsys)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            ["--negative_rule", "most"],
            "negative_rule must be one of all, any; got 'most'",
        ),
        (
            ["--negative_boundary", "above"],
            "negative_boundary must be one of more_than,",
        ),
        (
            ["--infonce_denominator", "x"],
            "infonce_denominator must be one of with_positive,",
        ),
        (
            ["--transfer_rmse", "mean"],
            "transfer_rmse must be one of batch, utterance",
        ),
        (["--temperature", "0"], "temperature must be a number above 0; got 0"),
        (
            ["--lambda_cl", "-1"],
            "lambda_cl must be a number at least 0; got -1",
        ),
    ],
)
def test_wrong_student_settings_are_named(tmp_path, capsys, arguments, message):
    assert (
        _train(tmp_path, "--data_folder", "d", *arguments, stage="student") == 1
    )
    assert message in _message(capsys)


def test_a_results_folder_that_cannot_be_made_is_named(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert _train(tmp_path, "--data_folder", "d", results=blocker / "r") == 1
    err = _message(capsys)
    assert f"cannot create {blocker}" in err and "--results_folder" in err


def test_a_missing_or_unfinished_teacher_run_is_named(tmp_path):
    save = tmp_path / "teacher" / "save"
    with pytest.raises(
        MissingInputError, match="no teacher checkpoint in .*train the teacher"
    ):
        train.load_teacher({"teacher_folder": str(save)})
    AtomicCheckpointer(
        save, recoverables={"head": torch.nn.Linear(2, 2)}
    ).save_checkpoint(meta={"ccc": 0.5})
    with pytest.raises(
        MissingInputError, match="has not finished .*evaluation.json is missing"
    ):
        train.load_teacher({"teacher_folder": str(save)})


@pytest.mark.slow
def test_train_py_prints_one_line_and_the_traceback_only_when_asked(tmp_path):
    command = [
        sys.executable,
        "train.py",
        "hparams/teacher.yaml",
        "--data_folder",
        "d",
    ]
    command += ["--results_folder", str(tmp_path), "--lamda", "1"]
    env = {k: v for k, v in os.environ.items() if k != TRACEBACK_VARIABLE}
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --lamda is not a setting")
    )
    env[TRACEBACK_VARIABLE] = "1"
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, env=env
    )
    assert done.returncode == 1 and "Traceback" in done.stderr


def test_the_model_commands_name_a_missing_model_or_run(tmp_path, capsys):
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    missing = str(tmp_path / "no_model")
    assert (
        cli.main(["predict", "--model", missing, str(audio), "--out", "p.csv"])
        == 1
    )
    assert (
        f"error: model folder {missing} does not exist"
        in capsys.readouterr().err
    )
    assert (
        cli.main(["export", "--run", missing, "--out", str(tmp_path / "m")])
        == 1
    )
    assert (
        f"error: run folder {missing} does not exist" in capsys.readouterr().err
    )


def test_the_error_types_are_the_builtin_ones_too():
    """Code that catches ValueError or FileNotFoundError keeps working."""
    assert issubclass(SettingsError, ValueError) and issubclass(
        DataError, ValueError
    )
    assert issubclass(MissingInputError, FileNotFoundError)
    assert all(
        issubclass(t, UserError)
        for t in (SettingsError, DataError, MissingInputError)
    )
