"""Audio a model cannot hear: refused by the same verdict wherever it is read, and by the
training loader, not epochs later.

Preparation (tests/test_msp_podcast.py) and prediction (tests/test_inference.py) test the
verdicts on whole corpora and folders; here are the training loader and the verdicts alone.
"""

import numpy as np
import pytest
import soundfile
from ctsl_brain.dataio import (
    AUDIO_ADVICE,
    MANIFEST_COLUMNS,
    DataError,
    inspect_audio,
)
from train import dataio_prepare

RATE = 16000


def _tone(seconds=0.5):
    return 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * RATE)) / RATE)


def _hparams(folder):
    return {
        "data_folder": str(folder),
        "train_annotation": str(folder / "train.csv"),
        "dev_annotation": str(folder / "dev.csv"),
        "manifest_folder": str(folder),
        "test_snrs": [],
        "recorded_test_folders": None,
        "recorded_dev_folders": None,
        "sorting": "random",
        "dynamic_batching": False,
        "train_dataloader_opts": {},
        "sample_rate": RATE,
    }


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_training_refuses_a_non_finite_waveform_of_a_hand_written_manifest(
    tmp_path, value
):
    """A manifest written by hand is not inspected: loading the item names the file, its item
    and manifest, and what to do, instead of a non-finite loss naming nothing."""
    broken = _tone()
    broken[100] = value
    soundfile.write(tmp_path / "good.wav", _tone(), RATE)
    soundfile.write(tmp_path / "broken.wav", broken, RATE, subtype="FLOAT")
    rows = [
        "good,$data_root/good.wav,0.5,3,4,5,s1",
        "utt7,$data_root/broken.wav,0.5,3,4,5,s1",
    ]
    for name in ("train", "dev", "test"):
        (tmp_path / f"{name}.csv").write_text(
            "\n".join([",".join(MANIFEST_COLUMNS), *rows])
        )
    train = dataio_prepare(_hparams(tmp_path))["train"]
    assert train[0]["sig"].shape == (len(_tone()),)
    with pytest.raises(DataError) as caught:
        train[1]
    assert str(caught.value) == (
        f"non-finite audio: {tmp_path / 'broken.wav'} (item utt7 of {tmp_path / 'train.csv'}) "
        f"holds NaN or infinite samples; {AUDIO_ADVICE['non-finite audio']}, or remove its row "
        "from the manifest"
    )


def test_channels_that_cancel_out_are_silent(tmp_path):
    """The model hears the channels' average: opposite channels are silence to it."""
    soundfile.write(
        tmp_path / "opposite.wav", np.stack([_tone(), -_tone()], 1), RATE
    )
    soundfile.write(
        tmp_path / "stereo.wav", np.stack([_tone(), -0.5 * _tone()], 1), RATE
    )
    _, problem = inspect_audio(str(tmp_path / "opposite.wav"), min_duration=0.1)
    assert problem == (
        "silent audio",
        f"{tmp_path / 'opposite.wav'} is silent once its channels are averaged to mono",
    )
    assert inspect_audio(str(tmp_path / "stereo.wav"), min_duration=0.1) == (
        0.5,
        None,
    )
    # Without decoding, only the header is judged.
    assert (
        inspect_audio(
            str(tmp_path / "opposite.wav"),
            min_duration=0.1,
            check_silence=False,
        )[1]
        is None
    )
