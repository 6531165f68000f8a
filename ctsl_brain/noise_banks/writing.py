"""Writing the noise banks' segments: the second pass over the recordings, each segment
written as soon as its last part is read.
"""

import os
import re

import numpy as np
import soundfile as sf

from ..dataio import DataError, remove_stale_staging, write_audio_atomic
from .reading import downmix, read_blocks, resample_stream
from .summary import duration_text

__all__ = ["remove_stale_segments", "write_segments"]


def write_segments(recordings, banks, folders, sample_rate):
    """Second pass: streams each recording once and writes the segments.

    Each segment is written as soon as it fills up.

    Arguments
    ---------
    recordings : list of ctsl_brain.noise_banks.reading.Recording
        The usable recordings, in the order the files are taken.
    banks : dict
        The :class:`ctsl_brain.noise_banks.plan.Bank` of each bank to write, by name
        (``"adapt"``, ``"test"``).
    folders : dict
        The folder of each bank's segments, by name (created if needed); segment
        ``k`` of bank ``name`` is ``name_k.wav`` there, ``k`` on 4 digits.
    sample_rate : int
        The recipe's rate, in Hz.

    Returns
    -------
    rows : dict
        The CSV rows of each bank written, ``[ID, duration, wav]``, in the order
        of its segments.

    Raises
    ------
    DataError
        When a recording ends before the audio planned from it (it changed since
        it was scanned).
    """
    rows = {}
    # The parts of each recording and the segment each goes to; IDs count within each bank.
    jobs = {}
    for bank, plan in banks.items():
        folder = folders[bank]
        os.makedirs(folder, exist_ok=True)
        rows[bank] = []
        for number, (length, parts) in enumerate(plan.segments):
            segment_id = f"{bank}_{number:04d}"
            path = os.path.join(folder, f"{segment_id}.wav")
            rows[bank].append(
                [segment_id, _csv_seconds(length / sample_rate), path]
            )
            segment = _Segment(path, length, len(parts), sample_rate)
            for part in parts:
                jobs.setdefault(part.recording, []).append((part, segment))
    # In the order of the recordings, so that a segment joining pieces of several recordings
    # is written as soon as the last of them is read, and few segments are held at a time.
    for index, parts in sorted(jobs.items()):
        _cut_recording(
            recordings[index],
            sorted(parts, key=lambda job: job[0].start),
            sample_rate,
        )
    return rows


class _Segment:
    """A segment being filled.

    Its parts come from one recording or several, in turn.

    Arguments
    ---------
    path : str
        The WAV file to write.
    length : int
        Samples in the segment.
    parts : int
        How many parts fill it.
    sample_rate : int
        The recipe's rate, in Hz.
    """

    def __init__(self, path, length, parts, sample_rate):
        self.path, self.length, self.parts_left = path, length, parts
        self.sample_rate = sample_rate
        self.audio = None  # allocated with the first part, freed once written

    def add(self, part, begin, samples):
        """Adds samples of one part; writes the segment once it is complete.

        Arguments
        ---------
        part : ctsl_brain.noise_banks.plan.Part
            The part the samples belong to.
        begin : int
            Index in the part of the first of ``samples``.
        samples : numpy.ndarray
            Consecutive samples of ``part``, from its ``begin``-th on.
        """
        if self.audio is None:
            self.audio = np.zeros(self.length, np.float32)
        if part.ramp is not None:
            samples = samples * _ramp(part, begin, begin + len(samples))
        at = part.offset + begin
        # Added, not copied: the two sides of a crossfade go to the same samples.
        self.audio[at : at + len(samples)] += samples
        if begin + len(samples) == part.length:
            self.parts_left -= 1
            if self.parts_left == 0:
                write_audio_atomic(self.path, self.audio, self.sample_rate)
                self.audio = None


def _ramp(part, begin, end):
    """Gains of the samples ``begin`` to ``end`` of a part in a crossfade.

    Sine for the piece fading in, cosine for the one fading out, so that their
    squares sum to 1 at every sample.
    """
    angle = (np.arange(begin, end) + part.ramp_start + 0.5) * (
        np.pi / 2 / part.fade
    )
    return (np.sin(angle) if part.ramp == "in" else np.cos(angle)).astype(
        np.float32
    )


def _cut_recording(recording, jobs, sample_rate):
    """Adds the parts of one recording to their segments.

    ``jobs`` are its ``(part, segment)``, sorted and disjoint.
    """
    pending = iter(jobs)
    part, segment = next(pending)
    position = 0  # index, at the recipe's rate, of the chunk's first sample
    with sf.SoundFile(recording.path) as sound:
        mono = (downmix(block) for block in read_blocks(sound))
        for chunk in resample_stream(mono, recording.sample_rate, sample_rate):
            chunk_end = position + len(chunk)
            while part is not None:
                begin, end = (
                    max(part.start, position),
                    min(part.start + part.length, chunk_end),
                )
                if end <= begin:
                    break
                segment.add(
                    part,
                    begin - part.start,
                    chunk[begin - position : end - position],
                )
                if end < part.start + part.length:
                    break
                part, segment = next(pending, (None, None))
            position = chunk_end
            if part is None:
                # The rest of the recording is in no bank (past the adaptation bank without a
                # test bank): no need to decode it.
                return
    raise DataError(
        f"{recording.path} changed while the noise banks were being prepared (it ended "
        f"{duration_text(position / sample_rate)} in, before its audio at "
        f"{duration_text(part.start / sample_rate)}); prepare them again"
    )


def _csv_seconds(seconds):
    """Seconds to a sample's precision at common rates, no trailing zeros."""
    text = f"{seconds:.7f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def remove_stale_segments(folders, counts):
    """Removes segments of an earlier preparation beyond the new ones.

    All of a bank not written now goes, so that a folder never holds a mix of
    two preparations.

    Also removes the temporary files of atomic writes whose process was killed,
    and a bank's folder left empty.

    Arguments
    ---------
    folders : dict
        The folder of each bank's segments, by name, as given to
        :func:`write_segments`.
    counts : dict
        How many segments of each bank were written now, by name (0 for a bank
        not written).

    Example
    -------
    >>> folder = getfixture("tmp_path") / "adapt"
    >>> folder.mkdir()
    >>> for name in ("adapt_0000.wav", "adapt_0001.wav"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> remove_stale_segments({"adapt": str(folder)}, {"adapt": 1})
    >>> sorted(path.name for path in folder.iterdir())
    ['adapt_0000.wav']
    """
    for bank, folder in folders.items():
        if not os.path.isdir(folder):
            continue
        remove_stale_staging(folder)
        pattern = re.compile(rf"{bank}_(\d+)\.wav")
        for name in os.listdir(folder):
            match = pattern.fullmatch(name)
            if match and int(match.group(1)) >= counts[bank]:
                os.remove(os.path.join(folder, name))
        if not os.listdir(folder):
            os.rmdir(folder)
