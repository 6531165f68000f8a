"""The output folder of a preparation from a folder of recordings: its checks, its stamp, its
log and its result, the same for the noise banks and for the field recordings' noise.
"""

import copy
import csv
import json
import os

from ..dataio import DataError, write_text_atomic
from .reading import scan

__all__ = [
    "Stamp",
    "check_folders",
    "check_rate",
    "log_report",
    "result_of",
    "scan_inputs",
]


def check_rate(sample_rate):
    """The rate of the output, refused unless it is a positive whole number of Hz.

    Arguments
    ---------
    sample_rate : int or float
        The rate asked.

    Returns
    -------
    int
        The rate.

    Example
    -------
    >>> check_rate(16000.0)
    16000
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(
            f"sample_rate must be a positive whole number of Hz, got {sample_rate}"
        )
    return int(sample_rate)


def check_folders(kind, input_folder, output_folder, subfolders, written):
    """Refuses outputs that would land among the inputs, or inputs the cleanup could delete.

    Arguments
    ---------
    kind : str
        What the input folder is, in the messages (``"noise"``, ``"field"``).
    input_folder : str
        The folder of recordings, only read.
    output_folder : str
        The output folder.
    subfolders : iterable of str
        The output folder's subfolders, where files are written and old ones removed.
    written : str
        What happens in them, in the messages.

    Raises
    ------
    DataError
        When one of the two folders lies inside the other.
    """
    real_input = os.path.realpath(input_folder)
    real_output = os.path.realpath(output_folder)
    if _inside(real_output, real_input):
        raise DataError(
            f"output folder {output_folder} lies inside {kind} folder {input_folder}: the "
            f"{kind} folder is only read, so choose an output folder outside it"
        )
    for name in subfolders:
        if _inside(real_input, os.path.join(real_output, name)):
            raise DataError(
                f"{kind} folder {input_folder} lies inside "
                f"{os.path.join(output_folder, name)}, where {written}: move the "
                "recordings elsewhere"
            )


def _inside(path, folder):
    return os.path.commonpath([path, folder]) == folder


def scan_inputs(folder, inputs, sample_rate):
    """Reads every input file through (:func:`ctsl_brain.noise_banks.reading.scan`), so that
    all problems come at once.

    Arguments
    ---------
    folder : str
        The folder of recordings.
    inputs : list of list
        Its files, as :func:`ctsl_brain.noise_banks.reading.list_inputs` gives them.
    sample_rate : int
        The rate of the output, in Hz.

    Returns
    -------
    usable : list of tuple
        ``(entry, Recording)`` of each usable file, in order.
    problems : list of str
        ``"path: reason"`` of each other file.
    """
    usable, problems = [], []
    for entry in inputs:
        recording, problem = scan(os.path.join(folder, entry[0]), sample_rate)
        if problem is None:
            usable.append((entry, recording))
        else:
            problems.append(problem)
    return usable, problems


class Stamp:
    """The stamp of a preparation, a JSON file of its options, input files and result.

    It is written last and removed first, so that an interrupted preparation never looks up to
    date.

    Arguments
    ---------
    path : str
        The stamp's file.
    options : dict
        The options of the preparation, with the version of its output.
    inputs : list of list
        Its input files (relative path, size, modification time).
    """

    def __init__(self, path, options, inputs):
        self.path = path
        self.options = options
        self.inputs = inputs

    def result(self, listings):
        """The stamped result, if the options and inputs are the same and every output exists.

        Arguments
        ---------
        listings : callable
            Given the stamped result, the ``(csv_path, header, count)`` of each CSV that lists
            output WAV files (in a ``wav`` column) and how many rows it must have.

        Returns
        -------
        dict or None
            The stamped result; None when the preparation is to be done.
        """
        try:
            with open(self.path, encoding="utf-8") as f:
                stamp = json.load(f)
            if (
                stamp["options"] != self.options
                or stamp["inputs"] != self.inputs
            ):
                return None
            result = stamp["result"]
            for csv_path, header, count in listings(result):
                with open(csv_path, encoding="utf-8", newline="") as f:
                    reader = csv.reader(f)
                    if tuple(next(reader)) != header:
                        return None
                    column = header.index("wav")
                    wavs = [row[column] for row in reader]
                if len(wavs) != count or not all(
                    os.path.isfile(wav) for wav in wavs
                ):
                    return None
        except (
            OSError,
            ValueError,
            KeyError,
            IndexError,
            TypeError,
            StopIteration,
        ):
            return None
        return result

    def clear(self, *outputs):
        """Removes the stamp and these outputs, before they are redone.

        Arguments
        ---------
        *outputs : str
            Files that must not outlive the stamp (the CSVs).
        """
        for path in (self.path, *outputs):
            if os.path.exists(path):
                os.remove(path)

    def write(self, result):
        """Writes the stamp, once everything else is written.

        Arguments
        ---------
        result : dict
            The report of the preparation.
        """
        stamp = {
            "options": self.options,
            "inputs": self.inputs,
            "result": result,
        }
        write_text_atomic(self.path, json.dumps(stamp, indent=1) + "\n")


def log_report(logger, report, text):
    """Logs a preparation's warnings, then its report.

    Arguments
    ---------
    logger : logging.Logger
        The preparation's logger.
    report : dict
        Its result, with its ``warnings``.
    text : str
        Its report.
    """
    for message in report["warnings"]:
        logger.warning("%s", message)
    logger.info("%s", text)


def result_of(report, **paths):
    """What a preparation returns: the paths of its outputs and a copy of its report.

    Arguments
    ---------
    report : dict
        The report, made now or read from the stamp.
    **paths : str or None
        The outputs.

    Returns
    -------
    dict
        ``paths`` and the report's entries.

    Example
    -------
    >>> result_of({"stretches": 2}, manifest="out/field_stretches.csv")
    {'manifest': 'out/field_stretches.csv', 'stretches': 2}
    """
    return {**paths, **copy.deepcopy(report)}
