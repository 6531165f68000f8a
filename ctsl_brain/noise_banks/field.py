"""Noise of the target place, taken from recordings made there while people talk: the
stretches away from the speech silero-vad finds, as a folder of noise recordings for the
noise banks (see docs/design.md).
"""

import importlib.metadata
import io
import json
import logging
import math
import os
import warnings
from array import array

import numpy as np
import soundfile as sf
import torch

from ..dataio import (
    SILENCE_PEAK,
    DataError,
    MissingInputError,
    SettingsError,
    remove_stale_staging,
    write_bytes_atomic,
    write_csv_atomic,
)
from .output_folder import (
    Stamp,
    check_folders,
    check_rate,
    log_report,
    result_of,
    scan_inputs,
)
from .reading import downmix, list_inputs, read_blocks, resample_stream
from .summary import duration_text, listing

__all__ = [
    "adaptation_csv",
    "FIELD_COLUMNS",
    "STAMP_FILE",
    "VAD_CHUNK",
    "VAD_RATE",
    "extract_field_noise",
    "foreground",
    "load_vad",
    "noise_stretches",
    "speech_spans",
]

logger = logging.getLogger(__name__)

# The manifest of the stretches: the file (relative path), where the stretch lies in it (in
# seconds) and its WAV file.
FIELD_COLUMNS = ("file", "start", "end", "seconds", "wav")
MANIFEST_FILE = "field_stretches.csv"
# Written last, so that an interrupted extraction never looks up to date.
STAMP_FILE = "field_stretches.json"
STRETCH_FOLDER = "stretches"
VAD_FOLDER = "vad"
# Bump whenever the output for the same inputs and options changes, so that old output is redone.
_VERSION = 2
# Bump whenever the probabilities cached for the same file change.
_VAD_VERSION = 2

# silero-vad's rate and chunk at 16 kHz.
VAD_RATE = 16000
VAD_CHUNK = 512
# The foreground gate: levels averaged over 8 chunks (0.25 s), against the 30th percentile.
_LEVEL_CHUNKS = 8
_BACKGROUND_PERCENTILE = 30
# Longer stretches are written as consecutive files, so that a WAV file stays far below 4 GB.
_MAX_STRETCH_SECONDS = 3600
_SILERO_PIN = "silero-vad==6.2.3"

# The recipe's options that set the arguments, named in the messages.
_OPTIONS = {
    "field_folder": "--field_folder",
    "noise_folder": "--noise_folder",
    "threshold": "--field_vad_threshold",
    "margin_seconds": "--field_margin_seconds",
    "min_stretch_seconds": "--field_min_stretch_seconds",
    "min_total_seconds": "--field_min_total_seconds",
    "foreground_db": "--field_foreground_db",
    "drop_bad_files": "--drop_bad_rows True",
}


def extract_field_noise(
    field_folder,
    output_folder,
    *,
    sample_rate=16000,
    threshold=0.5,
    margin_seconds=0.3,
    min_stretch_seconds=1.0,
    min_total_seconds=10.0,
    foreground_db=3.0,
    drop_bad_files=False,
):
    """Writes the stretches without speech of a folder of field recordings as noise recordings.

    Arguments
    ---------
    field_folder : str or path-like
        Recordings made at the target place, with or without people talking, in any format
        soundfile reads, at any sample rate and channel count, in subfolders or not. Files and
        folders whose names start with ``.`` are ignored. Nothing under it is modified.
    output_folder : str or path-like
        Where the stretches go (created if needed; must not lie inside ``field_folder``)::

            stretches/<file>_<start>-<end>.wav   each stretch kept, mono float WAV, named
                                                 after the file's relative path (``/`` as
                                                 ``__``) and its start and end in ms (9 digits)
            field_stretches.csv                  file,start,end,seconds,wav: the file
                                                 (relative path), the stretch's start and end
                                                 in it and its length (seconds), its WAV file
            vad/<file>.npz                       the speech probabilities, a cache
            field_stretches.json                 the stamp: options, input files and report

    sample_rate : int
        Rate of the stretches' WAV files, in Hz (the recipe's rate).
    threshold : float
        silero-vad's speech threshold: speech starts at a chunk whose probability reaches it
        and ends below ``threshold - 0.15``. Lower finds more speech (keeps less noise).
    margin_seconds : float
        Audio left out on each side of speech, so that no onset or fading end of speech that
        the detector missed gets into the noise.
    min_stretch_seconds : float
        Shorter stretches are left out.
    min_total_seconds : float
        The least noise to be found in all; with less, the folder is refused.
    foreground_db : float or None
        Speech counts only where it stands out of the place's background: where the
        recording's level (over 0.25 s) is at least this many dB above its background level
        (the 30th percentile of its 32 ms levels). Talk in the background, at the level of the
        rest of the noise, is then noise of the place, kept; the people talking in the
        foreground, whose speech is what the model will hear, are not. None: every stretch
        the detector calls speech is left out.
    drop_bad_files : bool
        Whether to skip files that cannot be used (unreadable, corrupt, empty, silent) with a
        warning, instead of refusing the folder.

    Returns
    -------
    dict
        ``stretch_folder``: the folder of the stretches' WAV files (the noise folder for
        :func:`ctsl_brain.noise_banks.banks.prepare_noise_banks`); ``manifest``: the CSV of the
        stretches; ``files``: for each usable file, a dict of ``file`` (relative path),
        ``seconds``, ``speech_seconds`` (speech detected), ``silent_seconds`` (digital
        silence), ``kept_seconds`` and ``stretches`` (how many); ``stretches``,
        ``kept_seconds``, ``speech_seconds`` and ``total_seconds``: the same in all;
        ``dropped``: the files skipped, as ``"path: reason"``; ``warnings``: the warnings
        logged (skipped files, files that give no stretch). The report is logged at INFO, the
        warnings at WARNING.

    Raises
    ------
    MissingInputError
        When the folder does not exist, or silero-vad is not installed.
    DataError
        When the folder cannot give noise, with every problem found: no usable recording,
        unusable files (without ``drop_bad_files``), less than ``min_total_seconds`` of noise
        without speech (with the figures of each file).
    SettingsError
        When an option is out of its range.

    If the stamp holds the same options and the same input files (relative path, size,
    modification time) and every output exists, nothing is redone: the report is logged again
    and the same dict is returned.
    """
    field_folder = os.path.abspath(os.fspath(field_folder))
    output_folder = os.path.abspath(os.fspath(output_folder))
    options = {
        "version": _VERSION,
        "silero_vad": _silero_version(),
        "field_folder": field_folder,
        "sample_rate": check_rate(sample_rate),
        "threshold": _option("threshold", threshold, low=0.0, high=1.0),
        "margin_seconds": _option("margin_seconds", margin_seconds, low=0.0),
        "min_stretch_seconds": _option(
            "min_stretch_seconds", min_stretch_seconds, low=0.001
        ),
        "min_total_seconds": _option(
            "min_total_seconds", min_total_seconds, low=0.0
        ),
        "foreground_db": None
        if foreground_db is None
        else _option("foreground_db", foreground_db, low=0.0),
        "drop_bad_files": bool(drop_bad_files),
    }
    if not os.path.isdir(field_folder):
        raise MissingInputError(
            f"field folder {field_folder} does not exist or is not a folder: point "
            f"{_OPTIONS['field_folder']} at a folder of recordings made at the target place "
            "(people talking in them is fine), in a format soundfile reads (WAV, FLAC, OGG, "
            "MP3, ...)"
        )
    check_folders(
        "field",
        field_folder,
        output_folder,
        (STRETCH_FOLDER, VAD_FOLDER),
        "the output is written and old files removed",
    )
    stretch_folder = os.path.join(output_folder, STRETCH_FOLDER)
    manifest = os.path.join(output_folder, MANIFEST_FILE)
    inputs = list_inputs(field_folder)
    stamp = Stamp(os.path.join(output_folder, STAMP_FILE), options, inputs)
    stamped = stamp.result(
        lambda result: [(manifest, FIELD_COLUMNS, result["stretches"])]
    )
    if stamped is not None:
        _log(stamped, field_folder, stretch_folder, up_to_date=True)
        return _result(stretch_folder, manifest, stamped)

    # Every file is read through before the slow detection, so that all problems come at once.
    usable, problems = scan_inputs(field_folder, inputs, options["sample_rate"])
    if not usable:
        raise DataError(_no_recording_message(field_folder, problems))
    if problems and not drop_bad_files:
        raise DataError(_unusable_message(field_folder, problems))
    names = _flat_names([entry[0] for entry, _ in usable])

    vad_folder = os.path.join(output_folder, VAD_FOLDER)
    os.makedirs(vad_folder, exist_ok=True)
    remove_stale_staging(vad_folder)
    vad = _LazyVad()
    files, plans = [], []
    for (entry, recording), name in zip(usable, names, strict=False):
        probs, silent, levels, length = _detect(
            recording,
            entry,
            os.path.join(vad_folder, f"{name}.npz"),
            vad,
            options["silero_vad"],
        )
        if options["foreground_db"] is not None:
            probs = foreground(probs, levels, options["foreground_db"])
        speech = speech_spans(probs, length, threshold=options["threshold"])
        silence = _silent_spans(silent, length)
        stretches = noise_stretches(
            speech,
            silence,
            length,
            margin_seconds=options["margin_seconds"],
            min_stretch_seconds=options["min_stretch_seconds"],
        )
        files.append(
            {
                "file": entry[0],
                "seconds": length / VAD_RATE,
                "speech_seconds": _total(speech) / VAD_RATE,
                "silent_seconds": _total(silence) / VAD_RATE,
                "kept_seconds": sum(e - s for s, e in stretches) / 1000,
                "stretches": len(stretches),
            }
        )
        plans.append((recording, name, entry[0], stretches))
    _remove_other_files(vad_folder, {f"{name}.npz" for name in names}, ".npz")

    kept = sum(f["kept_seconds"] for f in files)
    if kept < options["min_total_seconds"] or kept == 0:
        raise DataError(
            _too_little_message(field_folder, files, problems, options)
        )
    report = {
        "files": files,
        "stretches": sum(f["stretches"] for f in files),
        "kept_seconds": kept,
        "speech_seconds": sum(f["speech_seconds"] for f in files),
        "total_seconds": sum(f["seconds"] for f in files),
        "dropped": problems,
        "warnings": _warnings(field_folder, files, problems, options),
    }

    # Invalidate first: an interrupted extraction must not look complete.
    stamp.clear(manifest)
    rows = _write_all(plans, stretch_folder, options["sample_rate"])
    write_csv_atomic(manifest, FIELD_COLUMNS, rows)
    stamp.write(report)
    _log(report, field_folder, stretch_folder, up_to_date=False)
    return _result(stretch_folder, manifest, report)


def adaptation_csv(field_folder, adapt_noise_csv, field_bank_folder):
    """The noise bank the student adapts with: the field recordings' or the clean one.

    Arguments
    ---------
    field_folder : str or None
        The recipe's ``field_folder``.
    adapt_noise_csv : str
        The adaptation bank of the noise-only recordings (``noise_adapt.csv``).
    field_bank_folder : str
        Where the recipe writes the bank of the field recordings' noise.

    Returns
    -------
    str
        ``<field_bank_folder>/noise_adapt.csv`` with a field folder, else
        ``adapt_noise_csv``.

    Example
    -------
    >>> adaptation_csv(None, "m/noise_adapt.csv", "m/field")
    'm/noise_adapt.csv'
    >>> adaptation_csv("/data/room", "m/noise_adapt.csv", "m/field")
    'm/field/noise_adapt.csv'
    """
    if not field_folder:
        return adapt_noise_csv
    return f"{field_bank_folder}/noise_adapt.csv"


def load_vad():
    """silero-vad's model (TorchScript, on CPU), from the file inside its package: no download.

    Returns
    -------
    torch.jit.ScriptModule
        The model: ``model(chunk, 16000)`` gives the speech probability of a chunk of 512
        samples at 16 kHz, carrying a state from one call to the next (``reset_states()``
        starts a new stream).

    Raises
    ------
    MissingInputError
        When silero-vad is not installed.
    """
    silero = _silero()
    with warnings.catch_warnings():
        # Its loader uses importlib.resources.path, deprecated: not the user's concern.
        warnings.simplefilter("ignore", DeprecationWarning)
        return silero.load_silero_vad()


def _silero():
    """silero-vad's package, refused when it is not installed."""
    # Importing it sets PyTorch to one thread for the whole process: the training that follows
    # a preparation would run on one core, and compute in another order than without it.
    threads = torch.get_num_threads()
    try:
        import silero_vad
    except ImportError:
        raise MissingInputError(
            "finding the pauses in speech of field recordings needs silero-vad, which is not "
            f"installed: pip install {_SILERO_PIN}"
        )
    finally:
        torch.set_num_threads(threads)
    return silero_vad


def speech_spans(probs, length, *, threshold=0.5):
    """Where speech is, from silero-vad's probabilities: its ``get_speech_timestamps_from_probs``
    with its defaults, without padding and with the stream's own length.

    Arguments
    ---------
    probs : sequence of float
        The speech probability of each chunk of :data:`VAD_CHUNK` samples at 16 kHz, in order.
    length : int
        Samples of the stream at 16 kHz (its last chunk may be partial).
    threshold : float
        The speech threshold.

    Returns
    -------
    list of tuple
        ``(start, end)`` of each stretch of speech, in samples at 16 kHz, in order.

    Raises
    ------
    MissingInputError
        When silero-vad is not installed.

    Example
    -------
    >>> probs = [0.0] * 5 + [0.9] * 20 + [0.0] * 10 + [0.9] * 3 + [0.0] * 10
    >>> speech_spans(probs, 48 * 512)  # the second burst is too short
    [(2560, 12800)]
    """
    if isinstance(probs, np.ndarray):
        # Python floats, compared with the threshold in double precision, not in float32.
        probs = probs.tolist()
    spans = _silero().get_speech_timestamps_from_probs(
        probs,
        sampling_rate=VAD_RATE,
        threshold=threshold,
        speech_pad_ms=0,
        audio_length_samples=length,
    )
    return [(span["start"], span["end"]) for span in spans]


def foreground(probs, levels, foreground_db):
    """The speech probabilities where the recording stands out of its background, else 0.

    The level of each chunk is averaged over 8 chunks (0.25 s) around it; the background
    level is the 30th percentile of the chunks' levels (speech that stands out fills less of
    a recording than its background does).

    Arguments
    ---------
    probs : numpy.ndarray
        silero-vad's probability of each 32 ms chunk.
    levels : numpy.ndarray
        The level of each chunk, in dB.
    foreground_db : float
        How far above the background level speech must be to count.

    Returns
    -------
    numpy.ndarray
        ``probs``, 0 where the smoothed level is below the background level plus
        ``foreground_db``.

    Example
    -------
    >>> levels = np.array([-40.0] * 20 + [-20.0] * 10 + [-40.0] * 10)
    >>> gated = foreground(np.full(40, 0.9), levels, 3.0)
    >>> float(gated[:16].max()), round(float(gated[22:28].min()), 2)
    (0.0, 0.9)
    """
    probs = np.asarray(probs, dtype=np.float32)
    levels = np.asarray(levels, dtype=np.float64)
    if not len(levels):
        return probs
    padded = np.pad(
        levels,
        (_LEVEL_CHUNKS // 2, _LEVEL_CHUNKS - 1 - _LEVEL_CHUNKS // 2),
        mode="edge",
    )
    smoothed = np.convolve(
        padded, np.ones(_LEVEL_CHUNKS) / _LEVEL_CHUNKS, mode="valid"
    )
    background = np.percentile(levels, _BACKGROUND_PERCENTILE)
    return np.where(smoothed >= background + foreground_db, probs, 0.0).astype(
        np.float32
    )


def noise_stretches(
    speech, silence, length, *, margin_seconds, min_stretch_seconds
):
    """The stretches of a recording kept as noise: away from speech, without digital silence.

    Arguments
    ---------
    speech : list of tuple
        ``(start, end)`` of speech, in samples at 16 kHz (:func:`speech_spans`).
    silence : list of tuple
        ``(start, end)`` of digital silence, in samples at 16 kHz.
    length : int
        Samples of the recording at 16 kHz.
    margin_seconds : float
        Audio left out on each side of speech.
    min_stretch_seconds : float
        Shorter stretches are left out.

    Returns
    -------
    list of tuple
        ``(start, end)`` of each stretch, in whole milliseconds inside the audio it lies in,
        in order; a stretch longer than an hour is given as consecutive pieces.

    Example
    -------
    >>> noise_stretches(
    ...     [(32000, 48000)],  # speech from 2 s to 3 s
    ...     [(80000, 96000)],  # digital silence from 5 s to 6 s
    ...     160000,  # 10 s
    ...     margin_seconds=0.5,
    ...     min_stretch_seconds=1.0,
    ... )
    [(0, 1500), (3500, 5000), (6000, 10000)]
    """
    margin = round(margin_seconds * VAD_RATE)
    samples_per_ms = VAD_RATE // 1000
    min_ms = round(min_stretch_seconds * 1000)
    excluded = sorted(
        [(max(0, s - margin), min(length, e + margin)) for s, e in speech]
        + list(silence)
    )
    stretches, at = [], 0
    for start, end in [*excluded, (length, length)]:
        if start > at:
            first = -(-at // samples_per_ms)
            last = start // samples_per_ms
            if last - first >= min_ms:
                stretches += _pieces(first, last)
        at = max(at, end)
    return stretches


def _pieces(first, last):
    """A stretch in ms as consecutive pieces of at most ``_MAX_STRETCH_SECONDS``."""
    count = -(-(last - first) // (_MAX_STRETCH_SECONDS * 1000))
    bounds = [first + (last - first) * k // count for k in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=False))


def _silent_spans(silent, length):
    """``(start, end)`` in samples at 16 kHz of the runs of digitally silent chunks, with the
    chunk on each side, where the silence starts or ends (a run shorter than a chunk, a
    dropout of less than 32 ms, is not found)."""
    flags = np.frombuffer(bytes(silent), np.uint8).astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags, [0]])))
    return [
        (max(int(s) - 1, 0) * VAD_CHUNK, min((int(e) + 1) * VAD_CHUNK, length))
        for s, e in zip(edges[::2], edges[1::2], strict=False)
    ]


def _total(spans):
    return sum(end - start for start, end in spans)


def _option(name, value, *, low, high=None):
    """An option as a float, refused when it is not a number in its range (``low`` included,
    ``high`` and, with it, ``low`` excluded)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if high is None:
        valid, bounds = number >= low, f"a number of at least {low:g}"
    else:
        valid, bounds = low < number < high, f"between {low:g} and {high:g}"
    if not (math.isfinite(number) and valid):
        raise SettingsError(f"{_OPTIONS[name]} must be {bounds}, got {value}")
    return number


def _silero_version():
    """The installed silero-vad's version, None when it is not installed."""
    try:
        return importlib.metadata.version("silero-vad")
    except importlib.metadata.PackageNotFoundError:
        return None


class _LazyVad:
    """silero-vad's model, loaded on first use, once: cached probabilities need none."""

    def __init__(self):
        self.model = None

    def get(self):
        """The model, loaded now if it was not yet."""
        if self.model is None:
            self.model = load_vad()
        return self.model


def _detect(recording, entry, cache_path, vad, version):
    """The speech probability and digital silence of each chunk of a recording, and its
    length at 16 kHz: from the cache when it was made from the same file by the same
    silero-vad, or computed now (the voice activity pass) and cached."""
    key = json.dumps([*entry, version, _VAD_VERSION])
    try:
        with np.load(cache_path) as cached:
            if str(cached["key"]) == key:
                return (
                    cached["probs"],
                    bytearray(cached["silent"].tobytes()),
                    cached["levels"],
                    int(cached["length"]),
                )
    except (OSError, ValueError, KeyError, EOFError):
        pass
    logger.info(
        "finding speech in %s (%s)",
        recording.path,
        duration_text(recording.frames / recording.sample_rate),
    )
    model = vad.get()
    probs, silent, levels, length = array("f"), bytearray(), array("f"), 0
    rest = np.zeros(0, np.float32)
    model.reset_states()
    with sf.SoundFile(recording.path) as sound, torch.inference_mode():
        mono = (downmix(block) for block in read_blocks(sound))
        for block in resample_stream(mono, recording.sample_rate, VAD_RATE):
            length += len(block)
            buffer = np.concatenate([rest, block])
            whole = len(buffer) // VAD_CHUNK * VAD_CHUNK
            _score(model, buffer[:whole], probs, silent, levels)
            rest = buffer[whole:]
        if len(rest):  # the last chunk, padded with zeros as silero-vad does
            _score(
                model,
                np.pad(rest, (0, VAD_CHUNK - len(rest))),
                probs,
                silent,
                levels,
            )
    probs = np.frombuffer(probs, np.float32)
    levels = np.frombuffer(levels, np.float32)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        key=np.array(key),
        probs=probs,
        silent=np.frombuffer(bytes(silent), np.uint8),
        levels=levels,
        length=np.array(length),
    )
    write_bytes_atomic(cache_path, buffer.getvalue())
    return probs, silent, levels, length


def _score(model, audio, probs, silent, levels):
    """Appends the speech probability, the digital silence and the level (dB) of each chunk
    of ``audio``."""
    chunks = audio.reshape(-1, VAD_CHUNK)
    silent.extend((np.abs(chunks).max(axis=1) < SILENCE_PEAK).astype(np.uint8))
    power = (chunks.astype(np.float64) ** 2).mean(axis=1)
    levels.extend((10.0 * np.log10(power + 1e-12)).astype(np.float32))
    # One thread, silero-vad's own setting: the same probabilities whatever the machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for chunk in torch.from_numpy(np.ascontiguousarray(chunks)):
            probs.append(model(chunk, VAD_RATE).item())
    finally:
        torch.set_num_threads(threads)


def _write_all(plans, folder, sample_rate):
    """Writes the stretches of every recording, removes those of an earlier extraction that
    are not among them, and gives the manifest's rows."""
    os.makedirs(folder, exist_ok=True)
    remove_stale_staging(folder)
    rows, written = [], set()
    for recording, name, rel, stretches in plans:
        jobs = []
        for start_ms, end_ms in stretches:
            wav_name = f"{name}_{start_ms:09d}-{end_ms:09d}.wav"
            path = os.path.join(folder, wav_name)
            start, end = (ms * sample_rate // 1000 for ms in (start_ms, end_ms))
            jobs.append((start, end, path))
            rows.append(
                [
                    rel,
                    *map(_ms_text, (start_ms, end_ms, end_ms - start_ms)),
                    path,
                ]
            )
            written.add(wav_name)
        if jobs:
            _write_stretches(recording, jobs, sample_rate)
    _remove_other_files(folder, written, ".wav")
    return rows


def _write_stretches(recording, jobs, sample_rate):
    """Second pass: streams a recording again and writes its stretches piece by piece.

    ``jobs`` are the ``(start, end, path)`` of its stretches, in samples at ``sample_rate``,
    in order and disjoint.
    """
    pending = iter(jobs)
    start, end, path = next(pending)
    writer, position = None, 0
    try:
        with sf.SoundFile(recording.path) as sound:
            mono = (downmix(block) for block in read_blocks(sound))
            for chunk in resample_stream(
                mono, recording.sample_rate, sample_rate
            ):
                chunk_end = position + len(chunk)
                while start < chunk_end:
                    if writer is None:
                        writer = _StagedWav(path, sample_rate)
                    first = max(start, position) - position
                    last = min(end, chunk_end) - position
                    writer.write(chunk[first:last])
                    if position + last < end:
                        break
                    writer.commit()
                    writer = None
                    job = next(pending, None)
                    if job is None:
                        return
                    start, end, path = job
                position = chunk_end
    finally:
        if writer is not None:
            writer.discard()
    raise DataError(
        f"{recording.path} changed while its stretches without speech were being written (it "
        f"ended {duration_text(position / sample_rate)} in, before its stretch at "
        f"{duration_text(start / sample_rate)}); run again"
    )


class _StagedWav:
    """A mono float WAV file written piece by piece under a staging name, renamed when
    complete: the memory used does not grow with its length, and no reader sees half a file
    (the staging name is that of :func:`ctsl_brain.dataio.write_bytes_atomic`, so that
    :func:`ctsl_brain.dataio.remove_stale_staging` removes what a killed process left)."""

    def __init__(self, path, sample_rate):
        folder, name = os.path.split(path)
        self.path = path
        self.staging = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        self.sound = sf.SoundFile(
            self.staging,
            "w",
            samplerate=sample_rate,
            channels=1,
            subtype="FLOAT",
            format="WAV",
        )

    def write(self, samples):
        """Appends samples."""
        self.sound.write(samples)

    def commit(self):
        """Closes the file and puts it in place."""
        self.sound.close()
        os.replace(self.staging, self.path)

    def discard(self):
        """Closes the file and removes it."""
        self.sound.close()
        if os.path.exists(self.staging):
            os.remove(self.staging)


def _flat_names(rels):
    """The relative paths as file names (``/`` as ``__``), refused when two coincide."""
    names = [rel.replace("/", "__") for rel in rels]
    seen = {}
    for rel, name in zip(rels, names, strict=False):
        if name in seen:
            raise DataError(
                f"field recordings {seen[name]} and {rel} would give their stretches the "
                f"same names ({name}_...): rename one of them"
            )
        seen[name] = rel
    return names


def _remove_other_files(folder, keep, suffix):
    """Removes the files of an output folder with this suffix that are not in ``keep`` (an
    earlier run's)."""
    for entry in os.scandir(folder):
        if (
            entry.is_file()
            and entry.name.endswith(suffix)
            and entry.name not in keep
        ):
            os.remove(entry.path)


def _silent_note(problems):
    """A word on silent files, when some are among the problems."""
    if not any(": is silent" in p or "silent once" in p for p in problems):
        return ""
    return (
        "\nA silent file holds digital silence (a muted or unplugged microphone, a file of "
        "zeros), not the sound of the place: record with the microphone on."
    )


def _no_recording_message(folder, problems):
    if not problems:
        head = f"field folder {folder} holds no file"
    else:
        head = (
            f"field folder {folder} holds no usable recording; of its {len(problems)} "
            f"file(s):\n" + listing(problems)
        )
    return (
        f"{head}{_silent_note(problems)}\nPut recordings made at the target place there "
        "(people talking in them is fine, the pauses are used), in a format soundfile reads "
        "(WAV, FLAC, OGG, MP3, ...), at any sample rate and number of channels, subfolders "
        "included."
    )


def _unusable_message(folder, problems):
    return (
        f"{len(problems)} file(s) in field folder {folder} cannot be used:\n"
        + listing(problems, limit=None)
        + _silent_note(problems)
        + f"\nFix or remove them, or run with {_OPTIONS['drop_bad_files']} to skip them."
    )


def _file_text(figures):
    """One file's figures: its length, its speech, its digital silence, what is kept."""
    seconds, speech = figures["seconds"], figures["speech_seconds"]
    share = 100 * speech / seconds if seconds else 0
    text = (
        f"{figures['file']}: {duration_text(seconds)}, {duration_text(speech)} of speech "
        f"({share:.0f} %)"
    )
    if figures["silent_seconds"]:
        text += (
            f", {duration_text(figures['silent_seconds'])} of digital silence"
        )
    if figures["stretches"]:
        return (
            f"{text}, {duration_text(figures['kept_seconds'])} of noise kept in "
            f"{figures['stretches']} stretch(es)"
        )
    return f"{text}, nothing kept"


def _rule_text(options):
    """What a stretch must be to be kept."""
    return (
        f"a stretch is kept when it lasts {duration_text(options['min_stretch_seconds'])} or "
        f"more ({_OPTIONS['min_stretch_seconds']}) once {duration_text(options['margin_seconds'])} "
        f"is left on each side of speech ({_OPTIONS['margin_seconds']})"
    )


def _too_little_message(folder, files, problems, options):
    kept = sum(f["kept_seconds"] for f in files)
    if kept:
        found = (
            f"only {duration_text(kept)} of noise without speech, under the "
            f"{duration_text(options['min_total_seconds'])} needed "
            f"({_OPTIONS['min_total_seconds']})"
        )
    else:
        found = "no noise without speech: no pause in speech is long enough"
    message = (
        f"field folder {folder} gives {found}; {_rule_text(options)}. Per file:\n"
        + listing([_file_text(f) for f in files], limit=None)
    )
    if problems:
        message += f"\n{len(problems)} unusable file(s) skipped:\n" + listing(
            problems
        )
    return (
        f"{message}\nLower {_OPTIONS['min_stretch_seconds']} or "
        f"{_OPTIONS['margin_seconds']}, add recordings of the place with pauses in speech, or "
        f"give noise-only recordings of the place as {_OPTIONS['noise_folder']} instead."
    )


def _warnings(folder, files, problems, options):
    """Skipped files, and files that give no stretch."""
    messages = []
    if problems:
        messages.append(
            f"skipped {len(problems)} unusable file(s) of field folder {folder} "
            f"({_OPTIONS['drop_bad_files']}):\n"
            + listing(problems)
            + _silent_note(problems)
        )
    barren = [f for f in files if not f["stretches"]]
    if barren:
        messages.append(
            f"{len(barren)} file(s) of field folder {folder} give no noise, having no pause "
            f"in speech long enough; {_rule_text(options)}:\n"
            + listing([_file_text(f) for f in barren])
        )
    return messages


def _report_text(report, folder, stretch_folder, *, up_to_date):
    """The report: what was kept in all, then for each file."""
    state = " (up to date)" if up_to_date else ""
    lines = [
        f"noise without speech from field folder {folder} in {stretch_folder}{state}: "
        f"{duration_text(report['kept_seconds'])} kept in {report['stretches']} stretch(es), "
        f"of {duration_text(report['total_seconds'])} of recordings with "
        f"{duration_text(report['speech_seconds'])} of speech:",
        listing([_file_text(f) for f in report["files"]], limit=None),
    ]
    if report["dropped"]:
        lines.append(
            f"  left out: {len(report['dropped'])} unusable file(s), skipped"
        )
    return "\n".join(lines)


def _log(report, folder, stretch_folder, *, up_to_date):
    """Logs the warnings, then the report."""
    log_report(
        logger,
        report,
        _report_text(report, folder, stretch_folder, up_to_date=up_to_date),
    )


def _ms_text(ms):
    """Milliseconds as seconds, no trailing zeros: ``1.5``, ``12``."""
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".")


def _result(stretch_folder, manifest, report):
    return result_of(report, stretch_folder=stretch_folder, manifest=manifest)
