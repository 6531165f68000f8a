"""Command line for trained models.

Run as::

    python -m ctsl_brain export --run <output_folder> --out <model folder> \\
        [--checkpoint EPOCH]
    python -m ctsl_brain predict --model <model folder> <files or folders> \\
        --out predictions.csv

``export`` turns a finished teacher or student run into a self-contained model
folder; ``predict`` writes one CSV row per audio file (``file, duration,
arousal, dominance, valence, error``). Exit status: 0 when everything succeeded,
1 when something failed (for ``predict``, any file: its row has the error and
the others are predicted), 2 for a wrong command line. A mistake the user can
fix is one message without a traceback (``CTSL_TRACEBACK=1`` shows it).
"""

import argparse
import sys
import warnings

import torch

from .dataio import ATTRIBUTES, run_command, write_csv_atomic
from .export import WINDOW_SECONDS, export_run
from .inference import BATCH_SIZE, EmotionRegressor, audio_files


def _parser():
    """The parser of the command line, with its two subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m ctsl_brain",
        description="Export and run trained emotion models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser(
        "export", help="write a finished run's model as a self-contained folder"
    )
    export.add_argument("--run", required=True, help="the run's output_folder")
    export.add_argument(
        "--out", required=True, help="the model folder to write"
    )
    export.add_argument(
        "--checkpoint",
        type=int,
        metavar="EPOCH",
        help="the checkpoint of this epoch (default: the best, as the run's evaluation chose)",
    )
    export.add_argument(
        "--window_seconds",
        type=float,
        default=WINDOW_SECONDS,
        help=f"the model's window for long files (default {WINDOW_SECONDS:g})",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export"
    )

    predict = commands.add_parser(
        "predict", help="predict arousal, dominance and valence"
    )
    predict.add_argument(
        "--model", required=True, help="an exported model folder"
    )
    predict.add_argument(
        "inputs", nargs="+", help="audio files, or folders searched for them"
    )
    predict.add_argument("--out", required=True, help="the CSV to write")
    predict.add_argument(
        "--batch_size",
        type=int,
        default=BATCH_SIZE,
        help=f"windows per batch ({BATCH_SIZE})",
    )
    predict.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    predict.add_argument(
        "--window_seconds",
        type=float,
        help="window for long files (default: the model's)",
    )
    predict.add_argument(
        "--noprogressbar", action="store_true", help="no progress bar"
    )
    return parser


def _export(args):
    """Runs ``export``; returns the exit status."""
    done = export_run(
        args.run,
        args.out,
        epoch=args.checkpoint,
        window_seconds=args.window_seconds,
        overwrite=args.overwrite,
    )
    print(
        f"exported the checkpoint of epoch {done['epoch']} (dev CCC {done['dev_ccc']:.4f}) "
        f"of {args.run} to {args.out}"
    )
    return 0


def _predict(args, parser):
    """Runs ``predict``; returns the exit status."""
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    if (
        args.device
        and args.device.startswith("cuda")
        and not torch.cuda.is_available()
    ):
        parser.error(
            f"--device {args.device}: no CUDA device here; use --device cpu"
        )
    files = audio_files(args.inputs)
    run_opts = {"device": args.device} if args.device else None
    model = EmotionRegressor.from_hparams(source=args.model, run_opts=run_opts)
    frame = model.predict_files(
        files,
        window_seconds=args.window_seconds,
        batch_size=args.batch_size,
        progress=not args.noprogressbar,
    )
    rows = [
        [
            path,
            *("" if value != value else f"{value:.6g}" for value in values),
            error,
        ]
        for path, (*values, error) in zip(
            frame.index, frame.itertuples(index=False), strict=True
        )
    ]
    write_csv_atomic(args.out, ["file", "duration", *ATTRIBUTES, "error"], rows)
    failed = frame[frame["error"] != ""]
    for path, error in failed["error"].items():
        print(f"failed: {path}: {error}", file=sys.stderr)
    print(
        f"{len(frame) - len(failed)} of {len(frame)} files predicted, {len(failed)} failed; "
        f"written to {args.out}",
        file=sys.stderr,
    )
    return 1 if len(failed) else 0


def main(argv=None):
    """Runs the command line.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status: 0 when everything succeeded, 1 when something failed,
        2 for a wrong command line (see the module's docstring).
    """
    # SpeechBrain 1.1's Hugging Face wrapper calls a method that transformers 5 deprecates.
    warnings.filterwarnings(
        "ignore",
        message="`gradient_checkpointing_disable` is deprecated",
        category=FutureWarning,
    )
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "export":
        return run_command(_export, args)
    return run_command(_predict, args, parser)


if __name__ == "__main__":
    sys.exit(main())
