"""The ground floor of the recipe: error types, audio reading and checking, labels, manifests and
atomic file writing. Every other module may import it; it imports none of them.

A manifest is a CSV with the columns ``ID, wav, duration, arousal, dominance, valence, spk_id``;
``wav`` may start with ``$data_root``, replaced by the recipe's ``data_folder``. Labels are on the
corpus' own scale (1-7 for MSP-Podcast) everywhere outside the Brain.
"""

import collections
import csv
import io
import logging
import math
import os
import re
import struct
import sys

import numpy as np
import soundfile
import torch
import torchaudio

__all__ = [
    "ATTRIBUTES",
    "MANIFEST_COLUMNS",
    "DataError",
    "MissingInputError",
    "SettingsError",
    "TRACEBACK_VARIABLE",
    "UserError",
    "run_command",
    "Problem",
    "AUDIO_ADVICE",
    "SILENCE_PEAK",
    "SampleCheck",
    "inspect_audio",
    "describe_audio_problem",
    "check_labels",
    "to_unit_scale",
    "from_unit_scale",
    "settle_problems",
    "process_running",
    "remove_stale_staging",
    "write_audio_atomic",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_text_atomic",
    "load_audio",
    "check_manifest_columns",
    "check_manifest_folder",
]

logger = logging.getLogger(__name__)

ATTRIBUTES = ("arousal", "dominance", "valence")
MANIFEST_COLUMNS = ("ID", "wav", "duration", *ATTRIBUTES, "spk_id")


# Set to 1 to see the traceback of a user error too (for debugging).
TRACEBACK_VARIABLE = "CTSL_TRACEBACK"


class UserError(Exception):
    """A problem the user can fix (their input, settings or files), not a bug: command lines
    show its message alone, without a traceback, and exit with status 1."""


class SettingsError(UserError, ValueError):
    """A YAML key, override or option whose value the recipe cannot use."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder or run that the user named, or that a command needs, is not there."""


class DataError(UserError, ValueError):
    """Bad input found while preparing data; the message lists every problem found."""


def run_command(main, *args):
    """Runs a command line's ``main(*args)`` and returns its exit status.

    A :class:`UserError` ends the command with its message on stderr and status 1, without a
    traceback, unless the environment variable ``CTSL_TRACEBACK`` is 1; any other exception is
    a bug and shows its traceback.

    >>> def main():
    ...     raise MissingInputError("no file x.wav: check the path")
    >>> run_command(main)  # doctest: +SKIP
    error: no file x.wav: check the path
    1
    """
    try:
        status = main(*args)
    except UserError as error:
        if os.environ.get(TRACEBACK_VARIABLE, "0") not in ("", "0"):
            raise
        print(f"error: {_own_message(error)}", file=sys.stderr, flush=True)
        return 1
    return 0 if status is None else status


def _own_message(error):
    """The error's own message. PyTorch re-raises an error of a DataLoader worker with the
    worker's traceback in front of it; the message is what follows the last line naming the
    error's type."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    name = type(error).__name__
    for line in reversed(message.splitlines()):
        head, _, rest = line.partition(": ")
        if head.split(".")[-1] == name:
            return (
                message[message.rindex(line) + len(head) + 2 :].strip() or rest
            )
    return message


Problem = collections.namedtuple("Problem", ["where", "kind", "detail"])
Problem.__doc__ = """One bad row or file: where it is, which kind of problem, and what was found."""


def _wav_data_shortfall(path):
    """Bytes the WAV header promises beyond the end of the file (0 if complete or not a WAV).

    libsndfile quietly reads a truncated WAV as a shorter one, so truncation is read off the
    RIFF ``data`` chunk size instead.
    """
    with open(path, "rb") as fin:
        if fin.read(12)[:4] not in (b"RIFF", b"RF64"):
            return 0
        size = os.fstat(fin.fileno()).st_size
        while True:
            header = fin.read(8)
            if len(header) < 8:
                return 0
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                if length == 0xFFFFFFFF:  # RF64 / streaming: size unknown here
                    return 0
                return max(0, fin.tell() + length - size)
            fin.seek(length + (length & 1), os.SEEK_CUR)


# Peak amplitude (full scale 1) below which a recording counts as silent: there is nothing in it
# for the model to hear. Preparation and prediction both judge by it, so they agree on a file.
SILENCE_PEAK = 1e-4

# What a user can do about each kind of unusable audio file that inspect_audio reports, quoted by
# the preparation's summary and by predict's error column alike.
AUDIO_ADVICE = {
    "missing audio": "check the path",
    "not a file": "put the audio file itself at this path",
    "broken link": "point the link at the audio file, or put the file in its place",
    "unreadable audio": "convert it to WAV or FLAC (any sample rate and channel count)",
    "truncated audio": "the file is cut short: write or copy it again",
    "empty audio": "give a recording with sound in it",
    "too short": "give a longer recording",
    "silent audio": "give a recording with sound in it",
    "non-finite audio": (
        "write it again from its source (a failed conversion or gain step leaves NaN or "
        "infinite values in a float WAV)"
    ),
}


def describe_audio_problem(kind, detail):
    """The message for an unusable audio file: its kind, what was found and what to do.

    >>> describe_audio_problem("missing audio", "x.wav does not exist")
    'missing audio: x.wav does not exist; check the path'
    """
    return f"{kind}: {detail}; {AUDIO_ADVICE[kind]}"


def _absent_file_problem(path):
    """Why ``path``, which is not a regular file, cannot be read: a folder, a link to nothing,
    something else, or nothing at all."""
    if os.path.isdir(path):
        return "not a file", f"{path} is a folder"
    if os.path.islink(path) and not os.path.exists(path):
        return (
            "broken link",
            f"{path} links to {os.readlink(path)}, which does not exist",
        )
    if os.path.exists(path):
        return "not a file", f"{path} is not a regular file"
    return "missing audio", f"{path} does not exist"


class SampleCheck:
    """Judges a recording block by block while it is decoded: NaN or infinite samples, and
    silence, a peak below :data:`SILENCE_PEAK` in the channels or in their average (the mono
    signal the model hears: channels in opposite phase cancel out).

    Feed it each decoded block with :meth:`add` (decoding can stop once :attr:`non_finite` is
    true), then ask :meth:`problem`.

    >>> check = SampleCheck(16000)
    >>> check.add(np.array([[0.5, -0.5], [0.2, -0.2]], dtype=np.float32))
    >>> check.problem("x.wav")
    ('silent audio', 'x.wav is silent once its channels are averaged to mono')
    """

    def __init__(self, sample_rate):
        self.sample_rate = sample_rate
        self.frames = 0
        self.peak = self.mono_peak = 0.0
        self.first_non_finite = None

    @property
    def non_finite(self):
        """Whether a NaN or infinite sample has been seen."""
        return self.first_non_finite is not None

    def add(self, block):
        """Takes the next block, ``[frames, channels]`` float32."""
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            if self.first_non_finite is None:
                self.first_non_finite = self.frames + int(np.argmin(finite))
        elif len(block):
            self.peak = max(self.peak, float(np.abs(block).max()))
            self.mono_peak = max(
                self.mono_peak, float(np.abs(block.mean(axis=1)).max())
            )
        self.frames += len(block)

    def problem(self, path):
        """``(kind, detail)`` of what was found wrong (kinds of :data:`AUDIO_ADVICE`), or None."""
        if self.non_finite:
            first = self.first_non_finite / self.sample_rate
            return (
                "non-finite audio",
                f"{path} holds NaN or infinite samples (the first at {first:.3f} s)",
            )
        if self.peak < SILENCE_PEAK:
            return (
                "silent audio",
                f"{path} is silent (peak {self.peak:.1e}, below {SILENCE_PEAK:g})",
            )
        if self.mono_peak < SILENCE_PEAK:
            return (
                "silent audio",
                f"{path} is silent once its channels are averaged to mono",
            )
        return None


def _samples_problem(path, samplerate):
    """Decodes the file block by block (float32, as the audio is loaded for the model; never
    more than one block in memory) and returns what :class:`SampleCheck` finds, or None."""
    check = SampleCheck(samplerate)
    for block in soundfile.blocks(
        path, blocksize=65536, dtype="float32", always_2d=True
    ):
        check.add(block)
        if check.non_finite:
            break
    return check.problem(path)


def inspect_audio(path, *, min_duration, check_silence=True):
    """Checks that an audio file can be used, from its header (and its samples if asked).

    The kinds of problem it reports are the keys of :data:`AUDIO_ADVICE`; a file it passes
    with ``check_silence`` is one the model can hear, the same verdict that
    :meth:`ctsl_brain.inference.EmotionRegressor.load_audio` gives.

    Arguments
    ---------
    path : str
        The audio file.
    min_duration : float
        Seconds below which the encoder cannot take the file.
    check_silence : bool
        Also decode the file, once, and flag it if a sample is NaN or infinite, or if it is
        silent: its peak, or the peak of its channels' average, is below :data:`SILENCE_PEAK`.
        The slowest check: without it only the header is read.

    Returns
    -------
    tuple
        ``(duration_seconds, None)`` for a usable file, ``(None, (kind, detail))`` otherwise.
        Another sample rate or several channels are fine: they are resampled and downmixed
        when the file is loaded.
    """
    if not os.path.isfile(path):
        return None, _absent_file_problem(path)
    try:
        info = soundfile.info(path)
        shortfall = _wav_data_shortfall(path)
    except (RuntimeError, OSError) as error:
        return None, ("unreadable audio", f"{path}: {error}")
    if shortfall:
        return None, (
            "truncated audio",
            f"{path} ends {shortfall} bytes before its header says",
        )
    if info.frames == 0:
        return None, ("empty audio", f"{path} holds no samples")
    duration = info.frames / info.samplerate
    if duration < min_duration:
        return None, (
            "too short",
            f"{path} lasts {duration:.3f} s; the encoder needs at least {min_duration} s",
        )
    if check_silence:
        try:
            problem = _samples_problem(path, info.samplerate)
        except (RuntimeError, OSError) as error:
            return None, ("unreadable audio", f"{path}: {error}")
        if problem is not None:
            return None, problem
    return duration, None


def check_labels(values, *, low, high):
    """Parses the attribute labels of one row.

    Arguments
    ---------
    values : dict
        Attribute name -> label text, as read from a CSV.
    low, high : float
        Valid range (inclusive).

    Returns
    -------
    tuple
        ``(labels, None)`` with the floats, or ``(None, (kind, detail))``.
    """
    labels = {}
    for name, text in values.items():
        text = "" if text is None else str(text).strip()
        if not text:
            return None, ("missing label", f"{name} is empty")
        try:
            value = float(text)
        except ValueError:
            return None, ("non-numeric label", f"{name} = {text!r}")
        if not (math.isfinite(value) and low <= value <= high):
            return None, (
                "label out of range",
                f"{name} = {value} is outside {low}-{high}",
            )
        labels[name] = value
    return labels, None


def to_unit_scale(labels, *, low, high):
    """Maps labels from the corpus' scale to [0, 1], the scale the model is trained on, as the
    authors did ((y - 1) / 6 on 1-7).

    >>> to_unit_scale(torch.tensor([1.0, 4.0, 7.0]), low=1.0, high=7.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return (labels - low) / (high - low)


def from_unit_scale(values, *, low, high):
    """Inverse of :func:`to_unit_scale`: the model's outputs on the corpus' scale.

    >>> from_unit_scale(
    ...     torch.tensor([0.0, 0.5, 1.0]), low=1.0, high=7.0
    ... ).tolist()
    [1.0, 4.0, 7.0]
    """
    return values * (high - low) + low


def settle_problems(problems, *, total, drop, source, report_path, examples=5):
    """Stops with every problem listed, or reports how many rows were dropped.

    Arguments
    ---------
    problems : list of Problem
        Everything found wrong; each kind of audio problem is summed up with what to do
        about it (:data:`AUDIO_ADVICE`).
    total : int
        Rows inspected, for the report.
    drop : bool
        False (the default of the recipe): raise :class:`DataError` before any training, its
        message suggesting ``--drop_bad_rows True``, the recipe's option that sets this.
        True: log how many rows go and carry on without them.
    source : str
        What was inspected (named in the messages).
    report_path : str
        Where the full list is written (one problem per line).
    examples : int
        Problems of each kind quoted in the message.
    """
    if not problems:
        return
    os.makedirs(os.path.dirname(os.path.abspath(report_path)), exist_ok=True)
    write_text_atomic(
        report_path,
        "".join(f"{p.where}\t{p.kind}\t{p.detail}\n" for p in problems),
    )
    by_kind = collections.defaultdict(list)
    for problem in problems:
        by_kind[problem.kind].append(problem)
    lines = []
    for kind, found in by_kind.items():
        advice = f"; {AUDIO_ADVICE[kind]}" if kind in AUDIO_ADVICE else ""
        lines.append(f"  {kind}: {len(found)}{advice}")
        lines += [f"    {p.where}: {p.detail}" for p in found[:examples]]
        if len(found) > examples:
            lines.append(f"    ... {len(found) - examples} more")
    summary = "\n".join(lines)
    if drop:
        logger.warning(
            "%s: dropped %d of %d rows (full list in %s):\n%s",
            source,
            len(problems),
            total,
            report_path,
            summary,
        )
        return
    raise DataError(
        f"{source}: {len(problems)} of {total} rows have problems (full list in {report_path}):\n"
        f"{summary}\nFix them, or run again with --drop_bad_rows True to leave those rows out."
    )


def write_text_atomic(path, text):
    """Writes ``text`` to ``path`` through a temporary file in the same folder and a rename, so
    no reader ever sees half a file; the process id keeps concurrent writers apart."""
    write_bytes_atomic(path, text.encode("utf-8"))


_STAGING = re.compile(r"\..+\.(\d+)\.tmp")


def process_running(pid):
    """Whether a process with this id runs (this process does not count: it is the caller)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def remove_stale_staging(folder):
    """Removes the temporary files that :func:`write_bytes_atomic` (and the other atomic
    writers) left in ``folder`` when their process was killed. Those of running processes,
    which may be writing them, are kept."""
    if not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        match = _STAGING.fullmatch(entry.name)
        if (
            match
            and entry.is_file()
            and not process_running(int(match.group(1)))
        ):
            os.remove(entry.path)


def write_bytes_atomic(path, data):
    """Writes ``data`` (bytes) to ``path`` atomically, as :func:`write_text_atomic`."""
    folder, name = os.path.split(path)
    staging = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        with open(staging, "wb") as fout:
            fout.write(data)
        os.replace(staging, path)
    except BaseException:
        if os.path.exists(staging):
            os.remove(staging)
        raise


def write_audio_atomic(path, audio, sample_rate, subtype="FLOAT"):
    """Writes a WAV file atomically. It is encoded in memory first: libsndfile syncs the disk
    when it closes a file, which is slow for many small files.

    Arguments
    ---------
    path : str
        The WAV file.
    audio : numpy.ndarray
        ``[samples]`` or ``[samples, channels]``.
    sample_rate : int
        In Hz.
    subtype : str
        soundfile's subtype: ``FLOAT`` keeps levels exactly and never clips; ``PCM_16`` for
        int16 samples.
    """
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, format="WAV", subtype=subtype)
    write_bytes_atomic(path, buffer.getvalue())


def write_csv_atomic(path, header, rows):
    """Writes a CSV (header, then rows of values) atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def load_audio(path, sample_rate=16000):
    """Reads a file as a mono float32 tensor at ``sample_rate``: channels are averaged and
    other rates resampled, so the recipe takes audio as it comes."""
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    signal = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        signal = torchaudio.functional.resample(signal, rate, sample_rate)
    return signal


def check_manifest_columns(path):
    """Raises a :class:`MissingInputError` or :class:`DataError` naming the file and what is
    missing, if anything."""
    if not os.path.isfile(path):
        raise MissingInputError(
            f"manifest {path} does not exist: run the data preparation (check --data_folder, "
            "and run without --skip_prep True), or, with --corpus manifests, write it into "
            "--manifest_folder"
        )
    with open(path, newline="") as fin:
        header = next(csv.reader(fin), [])
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise DataError(
            f"manifest {path} lacks the column(s) {', '.join(missing)}; "
            f"a manifest needs {', '.join(MANIFEST_COLUMNS)}"
        )


def check_manifest_folder(manifest_folder):
    """For a corpus prepared by the user: the manifests must already be in the folder.

    Arguments
    ---------
    manifest_folder : str
        Holds ``train.csv``, ``dev.csv``, ``test.csv``, ``noise_adapt.csv`` and
        ``noise_test.csv``.
    """
    for name in ("train", "dev", "test"):
        check_manifest_columns(os.path.join(manifest_folder, f"{name}.csv"))
    for name in ("noise_adapt", "noise_test"):
        path = os.path.join(manifest_folder, f"{name}.csv")
        if not os.path.isfile(path):
            raise MissingInputError(
                f"noise bank {path} does not exist: write the noise segments as an AddNoise CSV "
                "(ID,duration,wav) there"
            )
