"""Reading a folder of noise recordings: which files, whether each can be used and how long it
is, and its audio, decoded, downmixed and resampled block by block.
"""

import math
import os
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torchaudio.functional import resample

from ..custom_interface import resampling_reach
from ..dataio import SampleCheck
from .summary import duration_text

__all__ = [
    "Recording",
    "downmix",
    "list_inputs",
    "read_blocks",
    "resample_stream",
    "scan",
]

# Frames decoded at a time.
_READ_FRAMES = 1 << 19


@dataclass
class Recording:
    """A usable input file: where it is and what it holds.

    Arguments
    ---------
    path : str
        The file.
    sample_rate : int
        Its rate, in Hz.
    channels : int
        Its channels.
    frames : int
        Its frames, counted while decoding, not taken from the header.
    length : int
        Its samples at the recipe's rate, as the resampler gives them.
    """

    path: str
    sample_rate: int
    channels: int
    frames: int
    length: int


def list_inputs(noise_folder):
    """Every file of a noise folder and its subfolders, sorted by relative path.

    Hidden files and folders (``.DS_Store``, ``._x.wav`` from macOS, ``.git``) are not noise.

    Arguments
    ---------
    noise_folder : str
        The folder.

    Returns
    -------
    list of list
        ``[relative path (with /), size, mtime_ns]`` of each file.
    """
    inputs = []
    for root, dirs, files in os.walk(noise_folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:  # a broken link: reported when it is read
                stat = os.lstat(path)
            rel = os.path.relpath(path, noise_folder).replace(os.sep, "/")
            inputs.append([rel, stat.st_size, stat.st_mtime_ns])
    inputs.sort(key=lambda entry: entry[0])
    return inputs


def _reason(err):
    """libsndfile's own words, without the path it repeats."""
    return getattr(err, "error_string", None) or str(err) or type(err).__name__


def scan(path, sample_rate):
    """Reads a file through once, to tell whether it can be used and how long it is.

    Decoding stops at the first NaN or infinite sample.

    Arguments
    ---------
    path : str
        The file.
    sample_rate : int
        The recipe's rate, in Hz, at which its length is counted.

    Returns
    -------
    tuple
        ``(Recording, None)``, or ``(None, "path: reason")`` for a file that cannot be used
        (not a regular file, unreadable, corrupt, empty, NaN or infinite samples, silent).
    """
    if not os.path.isfile(path):
        return None, f"{path}: not a regular file (a broken link?)"
    try:
        sound = sf.SoundFile(path)
    # libsndfile and its codecs raise various errors on files they cannot take.
    except Exception as err:
        return None, f"{path}: soundfile cannot open it ({_reason(err)})"
    with sound:
        check = SampleCheck(sound.samplerate)
        try:
            for block in read_blocks(sound):
                check.add(block)
                if check.non_finite:
                    break
        except Exception as err:
            at = duration_text(check.frames / sound.samplerate)
            return (
                None,
                f"{path}: corrupt, decoding failed after {at} ({_reason(err)})",
            )
        orig, channels = sound.samplerate, sound.channels
    frames = check.frames
    if frames == 0:
        return None, f"{path}: empty (0 frames)"
    problem = check.problem(path)
    if problem is not None:  # the same verdicts as for the corpus' audio
        return None, f"{path}: {problem[1].removeprefix(path).strip()}"
    g = math.gcd(orig, sample_rate)
    length = -(
        -frames * (sample_rate // g) // (orig // g)
    )  # ceil, as torchaudio's resample
    return Recording(path, orig, channels, frames, length), None


def read_blocks(sound):
    """The rest of an open file as float32 blocks, never more than one block in memory.

    Arguments
    ---------
    sound : soundfile.SoundFile
        The file, open for reading.

    Returns
    -------
    generator of numpy.ndarray
        Blocks ``[frames, channels]``.
    """
    while True:
        block = sound.read(_READ_FRAMES, dtype="float32", always_2d=True)
        if len(block) == 0:
            return
        yield block


def downmix(block):
    """A block of audio in mono: the mean of its channels.

    Arguments
    ---------
    block : numpy.ndarray
        ``[frames, channels]``, float32.

    Returns
    -------
    numpy.ndarray
        ``[frames]``, float32.

    Example
    -------
    >>> downmix(np.array([[0.5, 0.25], [1.0, 0.0]], np.float32)).tolist()
    [0.375, 0.5]
    """
    return (
        block[:, 0]
        if block.shape[1] == 1
        else block.mean(axis=1, dtype=np.float32)
    )


def resample_stream(blocks, orig_freq, new_freq):
    """Resamples a mono stream given in blocks, block by block, without seams.

    Each call of torchaudio's resampler gets whole output groups and the input its filter
    reaches around them (:func:`ctsl_brain.custom_interface.resampling_reach`), so the output
    is that of one call over the whole stream, up to float rounding.

    Arguments
    ---------
    blocks : iterable of numpy.ndarray
        Consecutive mono float32 blocks of any lengths.
    orig_freq, new_freq : int
        The rates, in Hz.

    Returns
    -------
    generator of numpy.ndarray
        Consecutive output blocks, ``ceil(n * new_freq / orig_freq)`` samples in all for ``n``
        input samples, as ``resample`` gives.

    Example
    -------
    >>> blocks = [np.ones(1000, np.float32), np.ones(600, np.float32)]
    >>> sum(
    ...     len(chunk) for chunk in resample_stream(blocks, 48000, 16000)
    ... )  # ceil(1600 / 3)
    534
    """
    if orig_freq == new_freq:
        yield from blocks
        return
    step_in, step_out, width = resampling_reach(orig_freq, new_freq)
    # How far the filter reaches beyond a group's own input (torchaudio's kernel width, + 1).
    reach = width + 1
    # Context before a call's first group, whole groups so that the calls stay on the grid.
    left = math.ceil(reach / step_in) * step_in

    def groups(buf, buf_start, first, stop):
        """Output of the groups from ``first`` on, computed from input up to ``stop``."""
        start = max(0, first * step_in - left)
        x = torch.from_numpy(
            np.ascontiguousarray(buf[start - buf_start : stop - buf_start])
        )
        # torchaudio's default filter, the one resampling_reach measures.
        y = resample(x, orig_freq, new_freq).numpy()
        return y[(first * step_in - start) // step_in * step_out :]

    buf, buf_start, done, total = np.zeros(0, np.float32), 0, 0, 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        ready = (
            total - reach
        ) // step_in  # groups whose whole input has arrived
        if ready > done:
            yield groups(buf, buf_start, done, ready * step_in + reach)[
                : (ready - done) * step_out
            ]
            done = ready
            keep = max(0, done * step_in - left)
            buf, buf_start = buf[keep - buf_start :], keep
    remaining = -(-total * step_out // step_in) - done * step_out
    if remaining > 0:
        yield groups(buf, buf_start, done, total)[:remaining]
