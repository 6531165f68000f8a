"""The adaptation and held-out test noise banks, cut from a folder of recordings of the
target noise (see docs/design.md).
"""

import logging
import math
import os

from ..dataio import NOISE_COLUMNS, DataError, SettingsError, write_csv_atomic
from .output_folder import (
    Stamp,
    check_folders,
    check_rate,
    log_report,
    result_of,
    scan_inputs,
)
from .plan import CROSSFADE_SECONDS, bank_boundary, plan_bank, spans_between
from .reading import list_inputs
from .summary import (
    adapt_minutes_message,
    bank_figures,
    missing_folder_message,
    no_recording_message,
    report_text,
    shortage_message,
    unusable_files_message,
    warning_messages,
)
from .writing import remove_stale_segments, write_segments

__all__ = ["NOISE_HEADER", "STAMP_FILE", "prepare_noise_banks"]

logger = logging.getLogger(__name__)

NOISE_HEADER = NOISE_COLUMNS
# Written last, so that an interrupted preparation never looks up to date.
STAMP_FILE = "noise_banks.json"
# Bump whenever the output for the same inputs and options changes, so that old banks are redone.
_VERSION = 2

_BANK_FOLDERS = {"adapt": "noise_adapt", "test": "noise_test"}


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
            noise_banks.json                 the stamp: options, input files and report, last

    segment_seconds : float
        Length of a noise segment; the recipe passes a little more than its longest utterance.
        Pieces shorter than a segment are joined into segments with crossfades; the last
        segment of a bank may be shorter (see :mod:`ctsl_brain.noise_banks.plan`).
    adapt_minutes : float
        Length of the adaptation bank: the first minutes of audio, taking the files in sorted
        order of their relative paths; a file straddling the boundary is cut there. When the
        folder holds less (with test_bank: less than one more segment for the test bank), the
        adaptation bank has what there is and a warning says so.
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
        bank's CSV, or None without a test bank; ``banks``: for each bank written (``"adapt"``,
        and ``"test"`` with test_bank) a dict of ``recordings`` (how many files contribute),
        ``segments``, ``recorded_seconds`` (audio taken from the recordings), ``crossfades``
        (joins of two pieces), ``crossfade_seconds`` (their total length, by which the joined
        pieces overlap) and ``seconds`` (the length of its segments in all:
        ``recorded_seconds - crossfade_seconds``); ``unused_seconds``: usable audio in no bank
        (without test_bank, what follows the adaptation bank); ``dropped``: the files skipped,
        each as ``"path: reason"``; ``warnings``: the warnings logged (a bank smaller than
        asked, a short test bank, skipped files). The report is logged at INFO, the warnings at
        WARNING.

    Raises
    ------
    DataError
        When the folder cannot give the banks asked for, with every problem found: a missing
        folder, no usable recording, unusable files (without ``drop_bad_files``), too little
        audio for a segment in each bank.
    SettingsError
        When ``adapt_minutes`` is not a positive number.

    If the stamp holds the same options and the same input files (relative path, size,
    modification time) and every output exists, nothing is redone: the report is logged again
    and the same dict is returned.
    """
    noise_folder = os.path.abspath(os.fspath(noise_folder))
    output_folder = os.path.abspath(os.fspath(output_folder))
    segment_seconds = float(segment_seconds)
    adapt_minutes = float(adapt_minutes)
    sample_rate = check_rate(sample_rate)
    if (
        not math.isfinite(segment_seconds)
        or round(segment_seconds * sample_rate) < 1
    ):
        raise ValueError(
            f"segment_seconds must be positive, got {segment_seconds}"
        )
    seg_len = round(segment_seconds * sample_rate)
    if not math.isfinite(adapt_minutes) or adapt_minutes <= 0:
        raise SettingsError(adapt_minutes_message(adapt_minutes))
    adapt_len = round(adapt_minutes * 60.0 * sample_rate)
    fade_len = round(CROSSFADE_SECONDS * sample_rate)
    if not os.path.isdir(noise_folder):
        raise DataError(missing_folder_message(noise_folder))
    check_folders(
        "noise",
        noise_folder,
        output_folder,
        _BANK_FOLDERS.values(),
        "the noise segments are written",
    )

    options = {
        "version": _VERSION,
        "noise_folder": noise_folder,
        "segment_seconds": segment_seconds,
        "adapt_minutes": adapt_minutes,
        "test_bank": bool(test_bank),
        "sample_rate": sample_rate,
        "drop_bad_files": bool(drop_bad_files),
    }
    inputs = list_inputs(noise_folder)
    csv_paths = {
        bank: os.path.join(output_folder, f"{folder}.csv")
        for bank, folder in _BANK_FOLDERS.items()
    }
    stamp = Stamp(os.path.join(output_folder, STAMP_FILE), options, inputs)
    stamped = stamp.result(
        lambda result: [
            (csv_paths[bank], NOISE_HEADER, figures["segments"])
            for bank, figures in result["banks"].items()
        ]
    )
    if stamped is not None:
        _log(
            stamped,
            noise_folder,
            output_folder,
            seg_len / sample_rate,
            up_to_date=True,
        )
        return _result(csv_paths, stamped, test_bank=test_bank)

    # Every file is read through before anything is decided, so that all problems come at once.
    usable, problems = scan_inputs(noise_folder, inputs, sample_rate)
    recordings = [recording for _, recording in usable]
    if not recordings:
        raise DataError(
            no_recording_message(noise_folder, len(inputs), problems)
        )
    lengths = [r.length for r in recordings]
    boundary = bank_boundary(
        lengths,
        adapt_len=adapt_len,
        seg_len=seg_len,
        fade_len=fade_len,
        test_bank=test_bank,
    )
    shortage = None
    if boundary is None:
        shortage = shortage_message(
            noise_folder,
            lengths,
            seg_len=seg_len,
            sample_rate=sample_rate,
            test_bank=test_bank,
        )
    if problems and not drop_bad_files:
        raise DataError(
            unusable_files_message(noise_folder, problems, shortage)
        )
    if shortage:
        raise DataError(shortage)

    total = sum(lengths)
    banks = {
        "adapt": plan_bank(
            spans_between(lengths, 0, boundary), seg_len, fade_len
        )
    }
    if test_bank:
        banks["test"] = plan_bank(
            spans_between(lengths, boundary, total), seg_len, fade_len
        )
    report = {
        "banks": {
            name: bank_figures(bank, sample_rate)
            for name, bank in banks.items()
        },
        "unused_seconds": (0 if test_bank else total - boundary) / sample_rate,
        "dropped": problems,
        "warnings": warning_messages(
            noise_folder,
            problems,
            banks,
            total=total,
            boundary=boundary,
            adapt_minutes=adapt_minutes,
            adapt_len=adapt_len,
            seg_len=seg_len,
            sample_rate=sample_rate,
        ),
    }

    os.makedirs(output_folder, exist_ok=True)
    # Invalidate first: an interrupted preparation must not look complete, and no CSV may list
    # segments that are being overwritten.
    stamp.clear(*csv_paths.values())
    folders = {
        bank: os.path.join(output_folder, name)
        for bank, name in _BANK_FOLDERS.items()
    }
    rows = write_segments(recordings, banks, folders, sample_rate)
    remove_stale_segments(
        folders, {bank: len(rows.get(bank, ())) for bank in folders}
    )
    for bank, bank_rows in rows.items():
        write_csv_atomic(csv_paths[bank], NOISE_HEADER, bank_rows)
    stamp.write(report)
    _log(
        report,
        noise_folder,
        output_folder,
        seg_len / sample_rate,
        up_to_date=False,
    )
    return _result(csv_paths, report, test_bank=test_bank)


def _log(report, noise_folder, output_folder, segment_seconds, *, up_to_date):
    """Logs the warnings, then the report of what each bank holds and what was left out."""
    log_report(
        logger,
        report,
        report_text(
            report,
            noise_folder,
            output_folder,
            segment_seconds,
            up_to_date=up_to_date,
        ),
    )


def _result(csv_paths, report, *, test_bank):
    return result_of(
        report,
        noise_adapt=csv_paths["adapt"],
        noise_test=csv_paths["test"] if test_bank else None,
    )
