"""The ground floor of the recipe: errors, audio, labels, manifests and atomic writing.

A manifest is a CSV with the columns
``ID, wav, duration, arousal, dominance, valence, spk_id``; ``wav`` may start
with ``$data_root``, replaced by the recipe's ``data_folder``. Labels are on
the corpus' own scale (1-7 for MSP-Podcast) everywhere outside the Brain.
"""

import collections
import csv
import errno
import io
import logging
import math
import os
import re
import shutil
import sys

import soundfile

from .custom_interface import (
    ATTRIBUTES,
    AUDIO_ADVICE,
    SILENCE_PEAK,
    DataError,
    MissingInputError,
    SampleCheck,
    SettingsError,
    UserError,
    describe_audio_problem,
    from_unit_scale,
    inspect_audio,
    load_audio,
)

__all__ = [
    "ATTRIBUTES",
    "MANIFEST_COLUMNS",
    "NOISE_COLUMNS",
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
    "longest_duration",
]

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("ID", "wav", "duration", *ATTRIBUTES, "spk_id")
# A noise bank: SpeechBrain's AddNoise CSV format.
NOISE_COLUMNS = ("ID", "duration", "wav")


# Set to 1 to see the traceback of a user error too (for debugging).
TRACEBACK_VARIABLE = "CTSL_TRACEBACK"
# The errors of a write that found no space left (a full disk, a quota).
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def disk_full_message(error):
    """The message for a write that found the disk full, or None for another error.

    Arguments
    ---------
    error : BaseException
        What a write raised.

    Returns
    -------
    str or None
        Says that the disk is full, names the folder and the space left on it, and says to
        free space and run the same command again.

    Example
    -------
    >>> error = OSError(
    ...     errno.ENOSPC, "No space left on device", "/nonexistent/run/x.csv"
    ... )
    >>> print(disk_full_message(error))  # doctest: +ELLIPSIS
    the disk is full: writing /nonexistent/run/x.csv failed (No space left on device), and / has ... free. Free space there and run the same command again
    """
    if not isinstance(error, OSError) or error.errno not in DISK_FULL:
        return None
    target = os.fsdecode(error.filename) if error.filename else os.getcwd()
    folder = target
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        free = _size_text(shutil.disk_usage(folder).free)
    except OSError:
        free = "no space"
    return (
        f"the disk is full: writing {target} failed ({error.strerror or error}), and "
        f"{folder} has {free} free. Free space there and run the same command again"
    )


def _size_text(size):
    """``1.5 MB`` for a number of bytes."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return (
                f"{size:.0f} {unit}"
                if unit == "bytes"
                else f"{size:.1f} {unit}"
            )
        size /= 1000


def run_command(main, *args):
    """Runs a command line's ``main(*args)`` and returns its exit status.

    A :class:`UserError`, or a write that finds the disk full
    (:func:`disk_full_message`), ends the command with its message on stderr
    and status 1, without a traceback, unless the environment variable
    ``CTSL_TRACEBACK`` is 1; any other exception is a bug and shows its
    traceback.

    Arguments
    ---------
    main : callable
        The command line's entry point; it returns an exit status or None.
    *args
        Passed on to ``main``.

    Returns
    -------
    status : int
        What ``main`` returned (0 for None), or 1 after a :class:`UserError`.

    Raises
    ------
    UserError
        Re-raised, with its traceback, when ``CTSL_TRACEBACK`` is set to
        anything but 0.

    Example
    -------
    >>> run_command(lambda: None)
    0
    >>> def main():
    ...     raise MissingInputError("no file x.wav: check the path")
    >>> run_command(main)  # doctest: +SKIP
    error: no file x.wav: check the path
    1
    """
    # A log file on a full disk cannot be written: the message on stderr says so, without
    # the logging module's own traceback of each failed record.
    logging.raiseExceptions = False
    try:
        status = main(*args)
    except (UserError, OSError) as error:
        message = (
            _own_message(error)
            if isinstance(error, UserError)
            else disk_full_message(error)
        )
        if message is None or os.environ.get(TRACEBACK_VARIABLE, "0") not in (
            "",
            "0",
        ):
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 1
    return 0 if status is None else status


def _own_message(error):
    """The error's own message.

    PyTorch re-raises an error of a DataLoader worker with the worker's
    traceback in front of it; the message is what follows the last line naming
    the error's type.
    """
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
Problem.__doc__ = """One bad row or file.

It says where it is, which kind of problem, and what was found.

Arguments
---------
where : str
    The row or file, e.g. ``train item 12``.
kind : str
    The kind of problem (for audio, a key of :data:`AUDIO_ADVICE`).
detail : str
    What was found.
"""


def check_labels(values, *, low, high):
    """Parses the attribute labels of one row.

    Arguments
    ---------
    values : dict
        Attribute name -> label text, as read from a CSV.
    low : float
        Lowest valid label (inclusive).
    high : float
        Highest valid label (inclusive).

    Returns
    -------
    verdict : tuple
        ``(labels, None)`` with the floats by attribute name, or
        ``(None, (kind, detail))``.

    Example
    -------
    >>> check_labels({"arousal": "4.5"}, low=1, high=7)
    ({'arousal': 4.5}, None)
    >>> check_labels({"arousal": "9"}, low=1, high=7)
    (None, ('label out of range', 'arousal = 9.0 is outside 1-7'))
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
    """Maps labels from the corpus' scale to [0, 1], the model's training scale.

    As the authors did: ``(y - 1) / 6`` on 1-7.

    Arguments
    ---------
    labels : torch.Tensor
        Labels on the corpus' scale (any shape).
    low : float
        Lowest label of the scale, mapped to 0.
    high : float
        Highest label of the scale, mapped to 1.

    Returns
    -------
    scaled : torch.Tensor
        The labels on [0, 1], same shape.

    Example
    -------
    >>> import torch
    >>> to_unit_scale(torch.tensor([1.0, 4.0, 7.0]), low=1.0, high=7.0).tolist()
    [0.0, 0.5, 1.0]
    """
    return (labels - low) / (high - low)


def settle_problems(problems, *, total, drop, source, report_path, examples=5):
    r"""Stops with every problem listed, or reports how many rows were dropped.

    Arguments
    ---------
    problems : list of Problem
        Everything found wrong; each kind of audio problem is summed up with
        what to do about it (:data:`AUDIO_ADVICE`).
    total : int
        Rows inspected, for the report.
    drop : bool
        False (the default of the recipe): raise :class:`DataError` before any
        training, its message suggesting ``--drop_bad_rows True``, the
        recipe's option that sets this. True: log how many rows go and carry
        on without them.
    source : str
        What was inspected (named in the messages).
    report_path : str
        Where the full list is written (one problem per line).
    examples : int
        Problems of each kind quoted in the message.

    Raises
    ------
    DataError
        There are problems and ``drop`` is False.

    Example
    -------
    >>> report = str(getfixture("tmp_path") / "problems.tsv")
    >>> problem = Problem("row 3", "missing audio", "x.wav does not exist")
    >>> settle_problems(
    ...     [problem], total=10, drop=True, source="train", report_path=report
    ... )
    >>> open(report).read()
    'row 3\tmissing audio\tx.wav does not exist\n'
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
    r"""Writes ``text`` to ``path`` atomically.

    The text goes through a temporary file in the same folder and a rename, so
    no reader ever sees half a file; the process id keeps concurrent writers
    apart.

    Arguments
    ---------
    path : str
        The file, replaced if it exists.
    text : str
        Its new content, written as UTF-8.

    Example
    -------
    >>> path = getfixture("tmp_path") / "note.txt"
    >>> write_text_atomic(str(path), "done\n")
    >>> path.read_text()
    'done\n'
    """
    write_bytes_atomic(path, text.encode("utf-8"))


_STAGING = re.compile(r"\..+\.(\d+)\.tmp")


def process_running(pid):
    """Whether a process with this id runs.

    This process does not count: it is the caller.

    Arguments
    ---------
    pid : int
        The process id.

    Returns
    -------
    running : bool
        True if another process has this id (also one of another user).

    Example
    -------
    >>> process_running(os.getpid())
    False
    """
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
    """Removes the temporary files that killed atomic writers left in a folder.

    These are the staging files of :func:`write_bytes_atomic` (and the other
    atomic writers) whose process was killed. Those of running processes,
    which may be writing them, are kept.

    Arguments
    ---------
    folder : str
        The folder cleaned (absent: nothing to do).
    """
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
    """Writes ``data`` to ``path`` atomically, as :func:`write_text_atomic`.

    Arguments
    ---------
    path : str
        The file, replaced if it exists.
    data : bytes
        Its new content.
    """
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
    """Writes a WAV file atomically.

    It is encoded in memory first: libsndfile syncs the disk when it closes a
    file, which is slow for many small files.

    Arguments
    ---------
    path : str
        The WAV file.
    audio : numpy.ndarray
        ``[samples]`` or ``[samples, channels]``.
    sample_rate : int
        In Hz.
    subtype : str
        soundfile's subtype: ``FLOAT`` keeps levels exactly and never clips;
        ``PCM_16`` for int16 samples.
    """
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, format="WAV", subtype=subtype)
    write_bytes_atomic(path, buffer.getvalue())


def write_csv_atomic(path, header, rows):
    r"""Writes a CSV (header, then rows of values) atomically.

    Arguments
    ---------
    path : str
        The CSV file, replaced if it exists.
    header : sequence of str
        Column names.
    rows : iterable of sequence
        One sequence of values per row.

    Example
    -------
    >>> path = getfixture("tmp_path") / "table.csv"
    >>> write_csv_atomic(str(path), ["ID", "duration"], [["a", 1.5]])
    >>> path.read_text()
    'ID,duration\na,1.5\n'
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def longest_duration(manifests):
    """The longest ``duration`` of some manifests, in seconds.

    Arguments
    ---------
    manifests : iterable of str
        Manifests (CSV files with a ``duration`` column).

    Returns
    -------
    longest : float
        The longest duration; 0 when they hold no row.

    Example
    -------
    >>> path = getfixture("tmp_path") / "m.csv"
    >>> _ = path.write_text("ID,duration\\na,2.5\\nb,3.25\\n")
    >>> longest_duration([str(path)])
    3.25
    """
    longest = 0.0
    for path in manifests:
        with open(path, newline="") as fin:
            longest = max(
                [
                    longest,
                    *(float(row["duration"]) for row in csv.DictReader(fin)),
                ]
            )
    return longest


def check_manifest_columns(path):
    """Checks that a manifest exists and has every column of a manifest.

    Arguments
    ---------
    path : str
        The manifest (CSV).

    Raises
    ------
    MissingInputError
        There is no such file; the message says how to make it.
    DataError
        A column of :data:`MANIFEST_COLUMNS` is missing; the message names
        the file and the columns.
    """
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
    """Checks that a corpus prepared by the user has its manifests in place.

    Arguments
    ---------
    manifest_folder : str
        Holds ``train.csv``, ``dev.csv``, ``test.csv``, ``noise_adapt.csv``
        and ``noise_test.csv``.

    Raises
    ------
    MissingInputError
        A manifest or noise bank is missing.
    DataError
        A manifest lacks columns (see :func:`check_manifest_columns`).
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
