#!/usr/bin/env python3
"""Voice activity detection on field recordings: speed, and the bank it gives against the truth.

Run from the repository's root::

    .venv/bin/python tools/benchmark_vad.py                  # the demo's field recordings
    .venv/bin/python tools/benchmark_vad.py --minutes 1      # fewer, in seconds
    .venv/bin/python tools/benchmark_vad.py --data_folder data/demo   # the quick start's

It writes the demo corpus' field recordings (``--minutes`` of them: recordings of the
adaptation noise's place with talkers speaking 5 to 15 dB above it, and their true speech
intervals) into a temporary folder, or takes those of ``--data_folder``, and runs
:func:`ctsl_brain.noise_banks.field.extract_field_noise` on them with the recipe's default settings,
on one thread, twice: once to measure the voice activity pass (decoding, resampling and
silero-vad, timed alone on the CPU time of the process) and the whole extraction, and once
more with the detector's probabilities cached, to show what a change of the other options
costs. It prints:

- the speed of the voice activity pass and of the whole extraction in audio hours per CPU
  minute, and as a multiple of real time;
- the bank against the true intervals: the share of the kept audio that is not speech
  (precision), and the share of the true non-speech time that is kept (recall), with and
  without the foreground gate (``field_foreground_db``).
"""

import argparse
import csv
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctsl_brain.demo import corpus as demo_corpus  # noqa: E402
from ctsl_brain.noise_banks.field import extract_field_noise  # noqa: E402


def truth_intervals(path):
    """The true speech intervals of the demo's field recordings.

    Arguments
    ---------
    path : str
        ``field_speech.csv``.

    Returns
    -------
    intervals : dict
        Recording's file name -> list of ``(start, end)`` in seconds.
    """
    intervals = {}
    with open(path, newline="") as fin:
        for row in csv.DictReader(fin):
            name = os.path.basename(row["file"])
            intervals.setdefault(name, []).append(
                (float(row["start"]), float(row["end"]))
            )
    return intervals


def score(result, truth, seconds_per_file):
    """Precision and recall of an extraction against the true intervals.

    Arguments
    ---------
    result : dict
        What :func:`extract_field_noise` returned.
    truth : dict
        File name -> true speech intervals (:func:`truth_intervals`).
    seconds_per_file : dict
        File name -> length in seconds.

    Returns
    -------
    figures : dict
        ``kept``, ``speech_kept`` and ``non_speech`` (seconds), ``precision``
        and ``recall``.
    """
    kept = speech_kept = 0.0
    with open(result["manifest"], newline="") as fin:
        for row in csv.DictReader(fin):
            start, end = float(row["start"]), float(row["end"])
            kept += end - start
            for first, last in truth[os.path.basename(row["file"])]:
                speech_kept += max(0.0, min(last, end) - max(first, start))
    non_speech = sum(
        seconds - sum(last - first for first, last in truth[name])
        for name, seconds in seconds_per_file.items()
    )
    return {
        "kept": kept,
        "speech_kept": speech_kept,
        "non_speech": non_speech,
        "precision": (kept - speech_kept) / kept if kept else 0.0,
        "recall": (kept - speech_kept) / non_speech,
    }


def main(argv=None):
    """Runs the benchmark and prints its figures.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="field recordings to write (the demo's default: 5)",
    )
    parser.add_argument(
        "--data_folder",
        help="a demo corpus whose field recordings to use instead",
    )
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory() as scratch:
        if args.data_folder:
            data_folder = args.data_folder
        else:
            data_folder = os.path.join(scratch, "demo")
            demo_corpus.write_field_recordings(
                data_folder,
                os.path.join(data_folder, demo_corpus.FIELD_SPEECH_FILE),
                args.minutes,
                seed=args.seed,
                min_duration=1.5,
                max_duration=3.5,
                sample_rate=16000,
            )
        field = os.path.join(data_folder, "field")
        truth = truth_intervals(
            os.path.join(data_folder, demo_corpus.FIELD_SPEECH_FILE)
        )
        out = os.path.join(scratch, "extracted")
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        result = extract_field_noise(field, out, min_total_seconds=0)
        cpu = time.process_time() - start_cpu
        wall = time.perf_counter() - start_wall
        audio = result["total_seconds"]
        lengths = {
            os.path.basename(item["file"]): item["seconds"]
            for item in result["files"]
        }
        gated_scores = score(result, truth, lengths)
        # Again with other options: the cached probabilities skip the detector.
        start_cpu = time.process_time()
        ungated = extract_field_noise(
            field, out, min_total_seconds=0, foreground_db=None
        )
        recut = time.process_time() - start_cpu
        ungated_scores = score(ungated, truth, lengths)

    print(
        f"{len(lengths)} field recordings, {audio / 60:.1f} min of audio; one thread; "
        f"torch {torch.__version__}"
    )
    print(
        f"extraction (scan, voice activity, writing): {cpu:.1f} s of CPU ({wall:.1f} s "
        f"wall): {audio / 3600 / (cpu / 60):.2f} audio hours per CPU minute, "
        f"{audio / cpu:.0f} x real time"
    )
    detection = cpu - recut
    print(
        f"again with other options (probabilities cached): {recut:.1f} s of CPU; the voice "
        f"activity pass alone (the difference): {audio / 3600 / (detection / 60):.2f} audio "
        f"hours per CPU minute, {audio / detection:.0f} x real time"
    )
    print()
    print(
        "| foreground gate | kept (s) | of it speech (s) | precision | recall |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, figures in (
        ("3 dB (default)", gated_scores),
        ("none", ungated_scores),
    ):
        print(
            f"| {name} | {figures['kept']:.1f} | {figures['speech_kept']:.1f} | "
            f"{figures['precision']:.3f} | {figures['recall']:.3f} |"
        )
    print()
    print(
        "precision: share of the kept audio outside the true speech intervals; recall: "
        f"share of the true non-speech time ({gated_scores['non_speech']:.1f} s) kept"
    )


if __name__ == "__main__":
    main()
