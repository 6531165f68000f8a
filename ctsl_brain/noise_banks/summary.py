"""What a preparation of the noise banks says: its report, its warnings and its refusals,
which name the recipe's command-line options.
"""

import math

import soundfile as sf

__all__ = [
    "adapt_minutes_message",
    "bank_figures",
    "duration_text",
    "listing",
    "missing_folder_message",
    "no_recording_message",
    "report_text",
    "shortage_message",
    "unusable_files_message",
    "warning_messages",
]

_BANK_NAMES = {"adapt": "adaptation bank", "test": "held-out test bank"}
# A held-out test bank with fewer segments than this is warned about: the noisy test mixtures
# would reuse the same noise often.
_FEW_TEST_SEGMENTS = 10
_MAX_LISTED = 10
# The command-line options that messages point to (the recipe passes drop_bad_rows as
# drop_bad_files, and test_bank=False when recorded noisy test sets are given).
_DROP_OPTION = "--drop_bad_rows True"
_ADAPT_OPTION = "--adapt_noise_minutes"
_RECORDED_OPTION = "--recorded_test_folders"


def adapt_minutes_message(adapt_minutes):
    """The refusal of an adaptation bank's length that is not a positive number of minutes.

    Arguments
    ---------
    adapt_minutes : float
        The length asked.

    Returns
    -------
    str
        The message.
    """
    return (
        f"the adaptation bank's length ({_ADAPT_OPTION}) must be a positive number of "
        f"minutes, got {adapt_minutes:g}"
    )


def missing_folder_message(folder):
    """The refusal of a noise folder that does not exist or is not a folder.

    Arguments
    ---------
    folder : str
        The noise folder.

    Returns
    -------
    str
        The message, with the formats soundfile reads.
    """
    return (
        f"noise folder {folder} does not exist or is not a folder: point it at a folder "
        f"of noise-only recordings, in a format soundfile reads ({_formats_text()})"
    )


def no_recording_message(folder, n_files, problems):
    """The refusal of a noise folder without a usable recording.

    Arguments
    ---------
    folder : str
        The noise folder.
    n_files : int
        How many files it holds.
    problems : list of str
        Why each of them cannot be used, as ``"path: reason"``.

    Returns
    -------
    str
        The message, with the files and their problems (the first ten) and the formats
        soundfile reads.
    """
    if n_files == 0:
        head = f"noise folder {folder} holds no file"
    else:
        head = f"noise folder {folder} holds no usable noise recording; of its {n_files} file(s):\n"
        head += listing(problems)
    return (
        f"{head.rstrip()}\nPut noise-only recordings of the target noise there, in a format "
        f"soundfile reads: {_formats_text()}; any sample rate and number of channels, "
        "subfolders included."
    )


def unusable_files_message(folder, problems, shortage):
    """The refusal of a noise folder with unusable files, when they are not to be skipped.

    Arguments
    ---------
    folder : str
        The noise folder.
    problems : list of str
        Every unusable file, as ``"path: reason"``; all are listed.
    shortage : str or None
        :func:`shortage_message` when the usable files alone would not give the banks either.

    Returns
    -------
    str
        The message.

    Example
    -------
    >>> print(
    ...     unusable_files_message(
    ...         "noise", ["noise/a.wav: empty (0 frames)"], None
    ...     )
    ... )
    1 file(s) in noise folder noise cannot be used:
      - noise/a.wav: empty (0 frames)
    Fix or remove them, or run with --drop_bad_rows True to skip them.
    """
    message = (
        f"{len(problems)} file(s) in noise folder {folder} cannot be used:\n"
        + listing(problems, limit=None)
        + f"\nFix or remove them, or run with {_DROP_OPTION} to skip them."
    )
    if shortage:
        message += f"\nThe usable files alone would not do either: {shortage}"
    return message


def shortage_message(folder, lengths, *, seg_len, sample_rate, test_bank):
    """Why the recordings cannot give each bank a segment, and how much more is needed.

    Arguments
    ---------
    folder : str
        The noise folder.
    lengths : list of int
        Samples in each usable recording, at ``sample_rate``.
    seg_len : int
        Samples in a segment.
    sample_rate : int
        The recipe's rate, in Hz.
    test_bank : bool
        Whether a held-out test bank is asked for.

    Returns
    -------
    str
        The message.
    """
    total = sum(lengths)
    seg = duration_text(seg_len / sample_rate)
    needed = 2 * seg_len if test_bank else seg_len
    what = (
        f"the adaptation bank and the held-out test bank need a {seg} noise segment each"
        if test_bank
        else f"the adaptation bank needs a {seg} noise segment"
    )
    more = (
        f"at least {duration_text((needed - total) / sample_rate)} more; "
        if total < needed
        else ""
    )
    message = (
        f"noise folder {folder} holds {duration_text(total / sample_rate)} of usable audio in "
        f"{len(lengths)} recording(s), too little for the noise banks: {what} (a segment is a "
        f"little longer than the longest utterance). Add recordings of the target noise there "
        f"({more}one recording of {duration_text(needed / sample_rate)} or more always does)"
    )
    if test_bank:
        message += f"; with recorded noisy test sets ({_RECORDED_OPTION}), no held-out test bank is needed"
    return message


def bank_figures(bank, sample_rate):
    """The figures of a bank in the report and the stamp, in seconds.

    Arguments
    ---------
    bank : ctsl_brain.noise_banks.plan.Bank
        The bank as planned.
    sample_rate : int
        The recipe's rate, in Hz.

    Returns
    -------
    dict
        ``recordings``, ``segments``, ``recorded_seconds``, ``crossfades``,
        ``crossfade_seconds`` and ``seconds`` (see
        :func:`ctsl_brain.noise_banks.banks.prepare_noise_banks`).
    """
    return {
        "recordings": bank.recordings,
        "segments": len(bank.segments),
        "recorded_seconds": bank.recorded / sample_rate,
        "crossfades": len(bank.fades),
        "crossfade_seconds": sum(bank.fades) / sample_rate,
        "seconds": bank.length / sample_rate,
    }


def warning_messages(
    folder,
    problems,
    banks,
    *,
    total,
    boundary,
    adapt_minutes,
    adapt_len,
    seg_len,
    sample_rate,
):
    """The warnings about a preparation: skipped files, banks smaller than they should be.

    Arguments
    ---------
    folder : str
        The noise folder.
    problems : list of str
        The files skipped, as ``"path: reason"``.
    banks : dict
        The :class:`ctsl_brain.noise_banks.plan.Bank` of ``"adapt"`` and, when one is made,
        ``"test"``.
    total : int
        Samples of usable audio, at ``sample_rate``.
    boundary : int
        Where the adaptation bank ends, in samples from the start of the recordings.
    adapt_minutes : float
        The adaptation bank's length asked, in minutes.
    adapt_len : int
        The same in samples.
    seg_len : int
        Samples in a segment.
    sample_rate : int
        The recipe's rate, in Hz.

    Returns
    -------
    list of str
        The warnings, none when all is well.
    """
    messages = []
    if problems:
        messages.append(
            f"skipped {len(problems)} unusable file(s) of noise folder {folder} "
            f"({_DROP_OPTION}):\n" + listing(problems)
        )
    test = banks.get("test")
    if boundary < adapt_len:
        found = duration_text(total / sample_rate)
        given = duration_text(boundary / sample_rate)
        message = (
            f"noise folder {folder} holds {_minutes_text(total / sample_rate)} min ({found}) of "
            f"usable audio, less than the {adapt_minutes:g} min asked for the adaptation bank "
            f"({_ADAPT_OPTION} {adapt_minutes:g})"
        )
        if test is not None:
            message += (
                f" and one {duration_text(seg_len / sample_rate)} segment for the held-out "
                "test bank"
            )
        if test is None:
            message += ": the adaptation bank has all of it"
        else:
            rest = duration_text((total - boundary) / sample_rate)
            message += (
                f": the adaptation bank has the first {given} and the held-out test bank the "
                f"last {rest}"
            )
        message += (
            f". Add recordings of the target noise to {folder}, or set {_ADAPT_OPTION} "
            f"{_minutes_text(boundary / sample_rate, floor=True)} to ask for what there is."
        )
        messages.append(message)
    if test is not None and len(test.segments) < _FEW_TEST_SEGMENTS:
        seconds = test.length / sample_rate
        wanted = _FEW_TEST_SEGMENTS * seg_len / sample_rate
        messages.append(
            f"the held-out test bank from noise folder {folder} has {len(test.segments)} "
            f"segment(s), {duration_text(seconds)} of noise, under {_FEW_TEST_SEGMENTS} "
            f"segments ({duration_text(wanted)}): the noisy test mixtures will often reuse the "
            f"same noise. Add recordings of the target noise (at least "
            f"{duration_text(wanted - seconds)} more), or lower {_ADAPT_OPTION} (now "
            f"{adapt_minutes:g}) to leave more of them to the test bank."
        )
    return messages


def report_text(
    report, noise_folder, output_folder, segment_seconds, *, up_to_date
):
    """The report of what each bank holds and what was left out.

    Arguments
    ---------
    report : dict
        ``banks`` (:func:`bank_figures` of each bank), ``unused_seconds`` and ``dropped``, as
        :func:`ctsl_brain.noise_banks.banks.prepare_noise_banks` returns them.
    noise_folder : str
        Where the recordings are.
    output_folder : str
        Where the banks are.
    segment_seconds : float
        The length of a segment.
    up_to_date : bool
        Whether the banks were found up to date, not made now.

    Returns
    -------
    str
        The report, a line for each bank and for each thing left out.

    Example
    -------
    >>> figures = {
    ...     "recordings": 1,
    ...     "segments": 2,
    ...     "recorded_seconds": 2.0,
    ...     "crossfades": 0,
    ...     "crossfade_seconds": 0.0,
    ...     "seconds": 2.0,
    ... }
    >>> report = {
    ...     "banks": {"adapt": figures},
    ...     "unused_seconds": 0.0,
    ...     "dropped": [],
    ... }
    >>> print(report_text(report, "noise", "out", 1.0, up_to_date=True))
    noise banks from noise in out (up to date), segments of 1 s:
      adaptation bank: 2 s of audio from 1 recording(s), 2 segment(s), 2 s of noise
      left out: nothing
    """
    state = " (up to date)" if up_to_date else ""
    lines = [
        f"noise banks from {noise_folder} in {output_folder}{state}, segments of "
        f"{duration_text(segment_seconds)}:"
    ]
    for name, figures in report["banks"].items():
        lines.append(f"  {_BANK_NAMES[name]}: {_bank_text(figures)}")
    left_out = []
    if report["dropped"]:
        left_out.append(
            f"{len(report['dropped'])} unusable file(s), skipped ({_DROP_OPTION}):\n"
            + listing(report["dropped"], indent="    ")
        )
    if report["unused_seconds"]:
        left_out.append(
            f"{duration_text(report['unused_seconds'])} of audio after the adaptation bank "
            f"(no held-out test bank is made when recorded noisy test sets are used, "
            f"{_RECORDED_OPTION})"
        )
    lines += [f"  left out: {text}" for text in left_out or ["nothing"]]
    return "\n".join(lines)


def _bank_text(figures):
    recorded = figures["recorded_seconds"]
    audio = _seconds_text(recorded)
    if recorded >= 60:
        audio = f"{duration_text(recorded)} ({audio})"
    text = (
        f"{audio} of audio from {figures['recordings']} recording(s), "
        f"{figures['segments']} segment(s), {_seconds_text(figures['seconds'])} of noise"
    )
    if figures["crossfades"]:
        text += (
            f" ({figures['crossfades']} crossfade(s): "
            f"{_seconds_text(figures['crossfade_seconds'])} of overlap)"
        )
    return text


def _formats_text():
    available = sf.available_formats()
    # Core Audio Format, the sound files of Apple devices.
    core_audio = "CAF"  # codespell:ignore caf
    common = ["WAV", "FLAC", "OGG", "MP3", "AIFF", core_audio, "W64", "RF64"]
    names = [name for name in common if name in available]
    names = ["OGG (Vorbis, Opus)" if name == "OGG" else name for name in names]
    return (
        ", ".join(names)
        + " and the other formats of soundfile.available_formats()"
    )


def listing(lines, indent="  ", limit=_MAX_LISTED):
    """Lines as bullets, the first ``limit`` of them and how many more there are.

    Arguments
    ---------
    lines : list of str
        The lines (files and their problems, figures).
    indent : str
        Put before each bullet.
    limit : int or None
        How many are shown; None: all.

    Returns
    -------
    str
        The bullets, one a line.

    Example
    -------
    >>> print(
    ...     listing(["a.wav: empty", "b.wav: silent", "c.wav: empty"], limit=2)
    ... )
      - a.wav: empty
      - b.wav: silent
      ... and 1 more
    """
    shown = [f"{indent}- {line}" for line in lines[:limit]]
    if limit is not None and len(lines) > limit:
        shown.append(f"{indent}... and {len(lines) - limit} more")
    return "\n".join(shown)


def duration_text(seconds):
    """A duration as people read it, to the hundredth of a second under a minute and to the
    second above.

    Arguments
    ---------
    seconds : float
        The duration.

    Returns
    -------
    str
        ``0.25 s``, ``12 s``, ``12 min 5 s``, ``30 min``, ``1 h 2 min``.

    Example
    -------
    >>> [duration_text(s) for s in (0.25, 12.0, 725.2, 1800.0, 3720.0)]
    ['0.25 s', '12 s', '12 min 5 s', '30 min', '1 h 2 min']
    """
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


def _seconds_text(seconds):
    """Seconds to the millisecond, for the figures that must add up: ``1799.89 s``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + " s"


def _minutes_text(seconds, floor=False):
    """Minutes to the hundredth, rounded down with ``floor`` (an option value that must not
    ask for more than there is)."""
    minutes = seconds / 60
    if floor:
        minutes = math.floor(minutes * 100) / 100
    return f"{minutes:.2f}".rstrip("0").rstrip(".")
