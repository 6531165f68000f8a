"""Audio a model cannot hear: refused by the same verdict wherever it is read.

Preparation (tests/test_msp_podcast.py) and prediction (tests/test_inference.py) test the
verdicts on whole corpora and folders; here are the verdicts alone.
"""

import numpy as np
import soundfile

from ctsl_brain.data import inspect_audio

RATE = 16000


def _tone(seconds=0.5):
    return 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * RATE)) / RATE)


def test_channels_that_cancel_out_are_silent(tmp_path):
    """The model hears the channels' average: opposite channels are silence to it."""
    soundfile.write(tmp_path / "opposite.wav", np.stack([_tone(), -_tone()], 1), RATE)
    soundfile.write(tmp_path / "stereo.wav", np.stack([_tone(), -0.5 * _tone()], 1), RATE)
    _, problem = inspect_audio(str(tmp_path / "opposite.wav"), min_duration=0.1)
    assert problem == (
        "silent audio",
        f"{tmp_path / 'opposite.wav'} is silent once its channels are averaged to mono",
    )
    assert inspect_audio(str(tmp_path / "stereo.wav"), min_duration=0.1) == (0.5, None)
    # Without decoding, only the header is judged.
    assert (
        inspect_audio(str(tmp_path / "opposite.wav"), min_duration=0.1, check_silence=False)[1]
        is None
    )
