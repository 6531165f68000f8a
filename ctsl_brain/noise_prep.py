"""The two noise banks, made from a user's folder of recordings of the target noise.

The paper adapts the student with 30 minutes of recordings of the target noise and tests with
other recordings of the same noise. :func:`prepare_noise_banks` takes a folder of noise-only
recordings (any format soundfile reads, any sample rate and channel count, subfolders
included), puts them in sorted order of their relative paths, downmixes them to mono, resamples
them to the recipe's rate and splits the result: the first ``adapt_minutes`` are the adaptation
bank, everything after is the held-out test bank, so the two banks share no sample. Each bank is
cut into segments within each recording and listed in SpeechBrain's ``AddNoise`` CSV format
(``ID,duration,wav``), the format :class:`ctsl_brain.noise.UtteranceAddNoise` reads.

Files are streamed block by block, twice: a first pass reads everything to find every unusable
file (unreadable, corrupt, empty, silent) before anything is written, and works out how long
each recording is at the recipe's rate; the second pass resamples and writes the segments. So
the memory used does not grow with the length of a recording, and every problem is reported at
once, before any output is touched.
"""

import csv
import io
import json
import logging
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
from torchaudio.functional import resample

from ctsl_brain.data import DataError, SettingsError, write_csv_atomic, write_text_atomic

__all__ = ["NOISE_HEADER", "STAMP_FILE", "prepare_noise_banks"]

logger = logging.getLogger(__name__)

NOISE_HEADER = ("ID", "duration", "wav")
# Written last, so that an interrupted preparation never looks up to date.
STAMP_FILE = "noise_banks.json"
# Bump whenever the output for the same inputs and options changes, so that old banks are redone.
_VERSION = 1

# A recording whose samples all stay below this magnitude holds no noise worth mixing: the mixer
# would scale it up by orders of magnitude to reach the SNR asked for.
_SILENCE = 1e-4
_BANK_FOLDERS = {"adapt": "noise_adapt", "test": "noise_test"}
_READ_FRAMES = 1 << 19
# torchaudio's resampling filter, its defaults passed explicitly: the streaming resampler sizes
# the overlap between blocks from them.
_LOWPASS_WIDTH = 6
_ROLLOFF = 0.99
_MAX_LISTED = 10
# The command-line options that messages point to (the recipe passes drop_bad_rows as
# drop_bad_files, and test_bank=False when recorded noisy test sets are given).
_DROP_OPTION = "--drop_bad_rows True"
_ADAPT_OPTION = "--adapt_noise_minutes"
_RECORDED_OPTION = "--recorded_test_folders"


@dataclass
class _Recording:
    """A usable input file: where it is and what it holds."""

    path: str
    sample_rate: int
    channels: int
    frames: int  # counted while decoding, not taken from the header
    length: int  # samples at the recipe's rate, as the resampler gives them


def prepare_noise_banks(
    noise_folder,
    output_folder,
    *,
    segment_seconds,
    adapt_minutes=30.0,
    test_bank=True,
    sample_rate=16000,
    drop_bad_files=False,
):
    """Cuts a folder of noise recordings into the adaptation and the held-out test noise bank.

    Arguments
    ---------
    noise_folder : str or path-like
        Noise-only recordings of the target noise, in any format soundfile reads, at any sample
        rate and channel count, in subfolders or not. Files and folders whose names start with
        ``.`` are ignored. Nothing under it is modified.
    output_folder : str or path-like
        Where the banks go (created if needed; must not lie inside ``noise_folder``)::

            noise_adapt/adapt_0000.wav ...   adaptation segments, mono float WAV
            noise_test/test_0000.wav ...     held-out test segments (with test_bank)
            noise_adapt.csv, noise_test.csv  ID,duration,wav (AddNoise's format, absolute paths)
            noise_banks.json                 the stamp: options and input files, written last

    segment_seconds : float
        Length of a noise segment; the recipe passes a little more than its longest utterance.
        Segments are cut within each recording; a recording's last piece is kept if it lasts at
        least half a segment (the mixer loops a short segment) and dropped otherwise.
    adapt_minutes : float
        Length of the adaptation bank: the first minutes of audio, taking the files in sorted
        order of their relative paths; a file straddling the boundary is cut there.
    test_bank : bool
        Whether to write the held-out test bank from the audio after the adaptation bank. Runs
        tested on recorded noisy test sets do not need one: then no test bank is written (and a
        test bank left by an earlier preparation is removed, since it may overlap the new
        adaptation bank).
    sample_rate : int
        Rate of the segments, in Hz (the recipe's rate).
    drop_bad_files : bool
        Whether to skip files that cannot be used (unreadable, corrupt, empty, silent) and
        list them in ``dropped``, instead of refusing the folder.

    Returns
    -------
    dict
        ``noise_adapt``: path of the adaptation bank's CSV; ``noise_test``: path of the test
        bank's CSV, or None without a test bank; ``adapt_seconds``, ``test_seconds``: the
        length of each bank's segments in all; ``dropped``: the files skipped, each as
        ``"path: reason"``.

    Raises
    ------
    DataError
        When the folder cannot give the banks asked for, with every problem found: a missing
        folder, no usable recording, unusable files (without ``drop_bad_files``), less audio
        than the adaptation bank needs, no audio left for a test bank, recordings too short to
        cut.
    SettingsError
        When ``adapt_minutes`` is not a positive number.

    If the stamp holds the same options and the same input files (relative path, size,
    modification time) and every output exists, nothing is redone and the same dict is
    returned.
    """
    noise_folder = os.path.abspath(os.fspath(noise_folder))
    output_folder = os.path.abspath(os.fspath(output_folder))
    segment_seconds = float(segment_seconds)
    adapt_minutes = float(adapt_minutes)
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate}")
    sample_rate = int(sample_rate)
    if not math.isfinite(segment_seconds) or round(segment_seconds * sample_rate) < 1:
        raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
    seg_len = round(segment_seconds * sample_rate)
    if not math.isfinite(adapt_minutes) or adapt_minutes <= 0:
        raise SettingsError(
            f"the adaptation bank's length ({_ADAPT_OPTION}) must be a positive number of "
            f"minutes, got {adapt_minutes:g}"
        )
    adapt_len = round(adapt_minutes * 60.0 * sample_rate)
    if not os.path.isdir(noise_folder):
        raise DataError(
            f"noise folder {noise_folder} does not exist or is not a folder: point it at a folder "
            f"of noise-only recordings, in a format soundfile reads ({_formats_text()})"
        )
    _check_folders(noise_folder, output_folder)

    options = {
        "version": _VERSION,
        "noise_folder": noise_folder,
        "segment_seconds": segment_seconds,
        "adapt_minutes": adapt_minutes,
        "test_bank": bool(test_bank),
        "sample_rate": sample_rate,
        "drop_bad_files": bool(drop_bad_files),
    }
    inputs = _list_inputs(noise_folder)
    csv_paths = {
        bank: os.path.join(output_folder, f"{folder}.csv") for bank, folder in _BANK_FOLDERS.items()
    }
    stamp_path = os.path.join(output_folder, STAMP_FILE)
    stamped = _up_to_date(stamp_path, options, inputs, csv_paths)
    if stamped is not None:
        return _result(csv_paths, stamped, test_bank=test_bank)

    # Every file is read through before anything is decided, so that all problems come at once.
    recordings, problems = [], []
    for rel, *_ in inputs:
        recording, problem = _scan(os.path.join(noise_folder, rel), sample_rate)
        if problem is None:
            recordings.append(recording)
        else:
            problems.append(problem)
    if not recordings:
        raise DataError(_no_recording_message(noise_folder, len(inputs), problems))
    plan = _plan(
        [r.length for r in recordings], adapt_len=adapt_len, seg_len=seg_len, test_bank=test_bank
    )
    shortfalls = _shortfalls(
        noise_folder,
        recordings,
        plan,
        adapt_len=adapt_len,
        seg_len=seg_len,
        sample_rate=sample_rate,
        test_bank=test_bank,
    )
    if problems and not drop_bad_files:
        message = (
            f"{len(problems)} file(s) in noise folder {noise_folder} cannot be used:\n"
            + "".join(f"  - {p}\n" for p in problems)
            + f"Fix or remove them, or run with {_DROP_OPTION} to skip them."
        )
        if shortfalls:
            message += "\nThe usable files alone would not do either:\n" + _bullets(shortfalls)
        raise DataError(message)
    if shortfalls:
        if len(shortfalls) == 1:
            raise DataError(shortfalls[0])
        raise DataError("cannot prepare the noise banks:\n" + _bullets(shortfalls))
    if problems:
        logger.warning(
            "skipping %d file(s) of noise folder %s (%s):\n%s",
            len(problems),
            noise_folder,
            _DROP_OPTION,
            _bullets(problems),
        )

    os.makedirs(output_folder, exist_ok=True)
    # Invalidate first: an interrupted preparation must not look complete, and no CSV may list
    # segments that are being overwritten.
    for path in (stamp_path, *csv_paths.values()):
        if os.path.exists(path):
            os.remove(path)
    banks = [bank for bank in _BANK_FOLDERS if bank == "adapt" or test_bank]
    rows = _write_segments(recordings, plan, output_folder, banks, sample_rate)
    _remove_stale_segments(output_folder, {bank: len(rows[bank]) for bank in _BANK_FOLDERS})
    for bank in banks:
        write_csv_atomic(csv_paths[bank], NOISE_HEADER, rows[bank])
    seconds = {
        bank: sum(length for _, _, length in plan[bank]) / sample_rate for bank in _BANK_FOLDERS
    }
    stamped = {
        "adapt_seconds": seconds["adapt"],
        "test_seconds": seconds["test"],
        "dropped": problems,
        "segments": {bank: len(rows[bank]) for bank in banks},
    }
    stamp = {"options": options, "inputs": inputs, "result": stamped}
    write_text_atomic(stamp_path, json.dumps(stamp, indent=1) + "\n")
    logger.info(
        "noise banks from %s in %s: %s to adapt (%d segments), %s to test (%d segments)",
        noise_folder,
        output_folder,
        _duration_text(seconds["adapt"]),
        len(rows["adapt"]),
        _duration_text(seconds["test"]),
        len(rows["test"]),
    )
    return _result(csv_paths, stamped, test_bank=test_bank)


def _result(csv_paths, stamped, *, test_bank):
    return {
        "noise_adapt": csv_paths["adapt"],
        "noise_test": csv_paths["test"] if test_bank else None,
        "adapt_seconds": stamped["adapt_seconds"],
        "test_seconds": stamped["test_seconds"],
        "dropped": list(stamped["dropped"]),
    }


def _check_folders(noise_folder, output_folder):
    """Refuses outputs that would land among the inputs, or inputs the cleanup could delete."""
    real_noise, real_output = os.path.realpath(noise_folder), os.path.realpath(output_folder)
    if _inside(real_output, real_noise):
        raise DataError(
            f"output folder {output_folder} lies inside noise folder {noise_folder}: the noise "
            "folder is only read, so choose an output folder outside it"
        )
    for folder in _BANK_FOLDERS.values():
        if _inside(real_noise, os.path.join(real_output, folder)):
            raise DataError(
                f"noise folder {noise_folder} lies inside {os.path.join(output_folder, folder)}, "
                "where the noise segments are written: move the recordings elsewhere"
            )


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def _list_inputs(noise_folder):
    """``[relative path, size, mtime_ns]`` of every file, sorted by relative path (with ``/``).

    Hidden files and folders (``.DS_Store``, ``._x.wav`` from macOS, ``.git``) are not noise.
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


def _scan(path, sample_rate):
    """Reads a file through once. Returns ``(_Recording, None)`` or ``(None, "path: reason")``."""
    if not os.path.isfile(path):
        return None, f"{path}: not a regular file (a broken link?)"
    try:
        sound = sf.SoundFile(path)
    # libsndfile and its codecs raise various errors on files they cannot take.
    except Exception as err:
        return None, f"{path}: soundfile cannot open it ({_reason(err)})"
    frames, peak, mono_peak = 0, 0.0, 0.0
    with sound:
        try:
            for block in _blocks(sound):
                frames += len(block)
                peak = max(peak, float(np.max(np.abs(block))))
                mono_peak = max(mono_peak, float(np.max(np.abs(_downmix(block)))))
        except Exception as err:
            at = _duration_text(frames / sound.samplerate)
            return None, f"{path}: corrupt, decoding failed after {at} ({_reason(err)})"
        orig, channels = sound.samplerate, sound.channels
    if frames == 0:
        return None, f"{path}: empty (0 frames)"
    # max() propagates NaN, and any infinite sample makes the peak infinite.
    if not math.isfinite(peak) or not math.isfinite(mono_peak):
        return None, f"{path}: holds NaN or infinite samples"
    if peak < _SILENCE:
        return None, f"{path}: silent (every sample is below {_SILENCE:g} in magnitude)"
    if mono_peak < _SILENCE:
        return None, f"{path}: its channels cancel out when averaged to mono"
    g = math.gcd(orig, sample_rate)
    length = -(-frames * (sample_rate // g) // (orig // g))  # ceil, as torchaudio's resample
    return _Recording(path, orig, channels, frames, length), None


def _blocks(sound):
    """The file as float32 blocks ``[frames, channels]``, never more than one block in memory."""
    while True:
        block = sound.read(_READ_FRAMES, dtype="float32", always_2d=True)
        if len(block) == 0:
            return
        yield block


def _downmix(block):
    return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


def _resample_stream(blocks, orig_freq, new_freq):
    """Resamples a mono stream given in blocks, block by block, without seams.

    torchaudio's resampler computes its output in groups of ``new/g`` samples (``g`` the gcd of
    the rates), group ``k`` from the input around samples ``k * orig/g``, zero beyond the ends
    of the signal. Each call here gets whole groups and, around them, enough real input for the
    filter to reach, so the output is that of one call over the whole stream (up to float
    rounding), while only a block and the filter's context are held.

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
    """
    if orig_freq == new_freq:
        yield from blocks
        return
    g = math.gcd(orig_freq, new_freq)
    step_in, step_out = orig_freq // g, new_freq // g
    # How far the filter reaches beyond a group's own input (torchaudio's kernel width, + 1).
    reach = math.ceil(_LOWPASS_WIDTH * step_in / (min(step_in, step_out) * _ROLLOFF)) + 1
    # Context before a call's first group, whole groups so that the calls stay on the grid.
    left = math.ceil(reach / step_in) * step_in

    def groups(buf, buf_start, first, stop):
        """Output of the groups from ``first`` on, computed from input up to ``stop``."""
        start = max(0, first * step_in - left)
        x = torch.from_numpy(np.ascontiguousarray(buf[start - buf_start : stop - buf_start]))
        y = resample(
            x, orig_freq, new_freq, lowpass_filter_width=_LOWPASS_WIDTH, rolloff=_ROLLOFF
        ).numpy()
        return y[(first * step_in - start) // step_in * step_out :]

    buf, buf_start, done, total = np.zeros(0, np.float32), 0, 0, 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        total += len(block)
        ready = (total - reach) // step_in  # groups whose whole input has arrived
        if ready > done:
            yield groups(buf, buf_start, done, ready * step_in + reach)[: (ready - done) * step_out]
            done = ready
            keep = max(0, done * step_in - left)
            buf, buf_start = buf[keep - buf_start :], keep
    remaining = -(-total * step_out // step_in) - done * step_out
    if remaining > 0:
        yield groups(buf, buf_start, done, total)[:remaining]


def _plan(lengths, *, adapt_len, seg_len, test_bank):
    """Where the segments of each bank come from.

    Arguments
    ---------
    lengths : list of int
        Length of each recording at the recipe's rate, in the order the files are taken.
    adapt_len : int
        Samples of audio for the adaptation bank, from the start.
    seg_len : int
        Samples in a segment.
    test_bank : bool
        Whether the rest of the audio makes a test bank.

    Returns
    -------
    dict
        ``{"adapt": [...], "test": [...]}``, each a list of ``(recording index, start, length)``
        in order; the adaptation bank's segments all lie in the first ``adapt_len`` samples,
        the test bank's after them.
    """
    plan = {"adapt": [], "test": []}
    offset = 0
    for index, length in enumerate(lengths):
        boundary = min(length, max(0, adapt_len - offset))
        pieces = [("adapt", 0, boundary)]
        if test_bank:
            pieces.append(("test", boundary, length))
        for bank, start, stop in pieces:
            while stop - start >= seg_len:
                plan[bank].append((index, start, seg_len))
                start += seg_len
            if stop > start and 2 * (stop - start) >= seg_len:
                plan[bank].append((index, start, stop - start))
        offset += length
    return plan


def _shortfalls(folder, recordings, plan, *, adapt_len, seg_len, sample_rate, test_bank):
    """What the usable recordings lack for the banks asked for, one sentence per problem."""
    total = sum(r.length for r in recordings)
    seg = _duration_text(seg_len / sample_rate)
    adapt = _duration_text(adapt_len / sample_rate)
    longest = max(recordings, key=lambda r: r.length)
    if 2 * longest.length < seg_len:
        return [
            f"every recording in noise folder {folder} is shorter than half a noise segment, so "
            f"no segment can be cut: the longest, {longest.path}, lasts "
            f"{_duration_text(longest.length / sample_rate)}, and segments are {seg} long (a "
            "little more than the longest utterance); recordings must last at least "
            f"{_duration_text(seg_len / 2 / sample_rate)}, and {seg} or more is better"
        ]
    if total < adapt_len:
        message = (
            f"noise folder {folder} holds {_duration_text(total / sample_rate)} of audio; the "
            f"adaptation bank needs {adapt}: add recordings or lower {_ADAPT_OPTION}"
        )
        if test_bank:
            message += (
                f" (a held-out test bank needs at least one {seg} segment more, "
                f"{_duration_text((adapt_len + seg_len) / sample_rate)} in all; with recorded "
                f"noisy test sets, {_RECORDED_OPTION}, no held-out test bank is needed)"
            )
        return [message]
    problems = []
    if not plan["adapt"]:
        problems.append(
            f"the adaptation bank, the first {adapt} of noise folder {folder}, yields no noise "
            f"segment: it only holds pieces of recordings shorter than half a {seg} segment; "
            f"raise {_ADAPT_OPTION} or put longer recordings first"
        )
    left = total - adapt_len
    if test_bank and (left < seg_len or not plan["test"]):
        # A fragmented remainder is not helped by a few more seconds: a new recording is needed.
        needed = seg_len - left if left < seg_len else seg_len
        remains = "nothing remains" if left == 0 else f"{_duration_text(left / sample_rate)} remain"
        problems.append(
            f"noise folder {folder} holds {_duration_text(total / sample_rate)} of audio: after "
            f"the {adapt} of the adaptation bank, {remains} for the held-out test bank, less "
            f"than one {seg} noise segment; a held-out test bank needs at least "
            f"{_duration_text(needed / sample_rate)} more audio (another recording of {seg} or "
            f"more always does); with recorded noisy test sets, {_RECORDED_OPTION}, no held-out "
            "test bank is needed"
        )
    return problems


def _no_recording_message(folder, n_files, problems):
    if n_files == 0:
        head = f"noise folder {folder} holds no file"
    else:
        head = f"noise folder {folder} holds no usable noise recording; of its {n_files} file(s):\n"
        head += "".join(f"  - {p}\n" for p in problems[:_MAX_LISTED])
        if len(problems) > _MAX_LISTED:
            head += f"  ... and {len(problems) - _MAX_LISTED} more\n"
    return (
        f"{head.rstrip()}\nPut noise-only recordings of the target noise there, in a format "
        f"soundfile reads: {_formats_text()}; any sample rate and number of channels, "
        "subfolders included."
    )


def _formats_text():
    available = sf.available_formats()
    common = ["WAV", "FLAC", "OGG", "MP3", "AIFF", "CAF", "W64", "RF64"]
    names = [name for name in common if name in available]
    names = ["OGG (Vorbis, Opus)" if name == "OGG" else name for name in names]
    return ", ".join(names) + " and the other formats of soundfile.available_formats()"


def _bullets(lines):
    return "".join(f"  - {line}\n" for line in lines).rstrip("\n")


def _duration_text(seconds):
    """``0.25 s``, ``12 s``, ``12 min 5 s``, ``30 min``, ``1 h 2 min``."""
    if seconds < 60:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + " s"
    rounded = round(seconds)
    hours, rest = divmod(rounded, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if secs:
        parts.append(f"{secs} s")
    return " ".join(parts)


def _write_segments(recordings, plan, output_folder, banks, sample_rate):
    """Second pass: streams each recording once and writes its segments as they fill up.

    Returns the CSV rows of each bank (``[ID, duration, wav]``).
    """
    rows = {bank: [] for bank in _BANK_FOLDERS}
    # The segments of each recording, in order; IDs count within each bank.
    by_recording = {}
    for bank in banks:
        folder = os.path.join(output_folder, _BANK_FOLDERS[bank])
        os.makedirs(folder, exist_ok=True)
        for number, (index, start, length) in enumerate(plan[bank]):
            segment_id = f"{bank}_{number:04d}"
            path = os.path.join(folder, f"{segment_id}.wav")
            by_recording.setdefault(index, []).append((start, length, path))
            rows[bank].append([segment_id, _csv_seconds(length / sample_rate), path])
    for index, segments in sorted(by_recording.items()):
        _cut_recording(recordings[index], sorted(segments), sample_rate)
    return rows


def _cut_recording(recording, segments, sample_rate):
    """Writes the ``(start, length, path)`` segments of one recording, sorted and disjoint."""
    pending = iter(segments)
    start, length, path = next(pending)
    segment = np.empty(length, np.float32)
    filled = 0
    position = 0  # index, at the recipe's rate, of the chunk's first sample
    with sf.SoundFile(recording.path) as sound:
        mono = (_downmix(block) for block in _blocks(sound))
        for chunk in _resample_stream(mono, recording.sample_rate, sample_rate):
            chunk_end = position + len(chunk)
            while start is not None:
                begin, end = max(start + filled, position), min(start + length, chunk_end)
                if end <= begin:
                    break
                segment[begin - start : end - start] = chunk[begin - position : end - position]
                filled = end - start
                if filled < length:
                    break
                _write_wav(path, segment, sample_rate)
                start, length, path = next(pending, (None, 0, None))
                segment, filled = np.empty(length, np.float32), 0
            position = chunk_end
            if start is None:
                # The rest of the recording is in no segment (a dropped remainder, or past the
                # adaptation bank without a test bank): no need to decode it.
                return
    raise RuntimeError(
        f"{recording.path} changed while the noise banks were being prepared (it ended "
        f"{_duration_text(position / sample_rate)} in, before its segment at "
        f"{_duration_text(start / sample_rate)}); prepare them again"
    )


def _write_wav(path, audio, sample_rate):
    """Mono float WAV, so that nothing clips and levels are kept exactly. Encoded in memory:
    libsndfile syncs the disk when it closes a file, which is slow for many small files."""
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="WAV", subtype="FLOAT")
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _csv_seconds(seconds):
    """Seconds to a sample's precision at common rates, without trailing zeros."""
    text = f"{seconds:.7f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _remove_stale_segments(output_folder, counts):
    """Removes segments of an earlier preparation beyond the new ones (all of a bank not
    written now), so that a folder never holds a mix of two preparations."""
    for bank, folder_name in _BANK_FOLDERS.items():
        folder = os.path.join(output_folder, folder_name)
        if not os.path.isdir(folder):
            continue
        pattern = re.compile(rf"{bank}_(\d+)\.wav")
        for name in os.listdir(folder):
            match = pattern.fullmatch(name)
            if match and int(match.group(1)) >= counts[bank]:
                os.remove(os.path.join(folder, name))
        if not os.listdir(folder):
            os.rmdir(folder)


def _up_to_date(stamp_path, options, inputs, csv_paths):
    """The stamp's result if it matches the options and inputs and every output exists."""
    try:
        with open(stamp_path, encoding="utf-8") as f:
            stamp = json.load(f)
        if stamp["options"] != options or stamp["inputs"] != inputs:
            return None
        result = stamp["result"]
        for bank, count in result["segments"].items():
            with open(csv_paths[bank], encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                if tuple(next(reader)) != NOISE_HEADER:
                    return None
                wavs = [row[2] for row in reader]
            if len(wavs) != count or not all(os.path.isfile(wav) for wav in wavs):
                return None
    except (OSError, ValueError, KeyError, IndexError, TypeError, StopIteration):
        return None
    return result
