"""Command line for trained models.

Run as ``ctsl-brain`` once the package is installed, or from the checkout as::

    python -m ctsl_brain export --run <output_folder> --out <model folder> \\
        [--checkpoint EPOCH] [--onnx] [--onnx-int8]
    python -m ctsl_brain predict --model <model folder> <files or folders> \\
        --out predictions.csv [--backend onnx [--int8]] [--hop SECONDS [--plot]] \\
        [--embeddings]

``serve --model <model folder> [--port 7860] [--host 127.0.0.1]`` serves a
web page to try the model (gradio). ``export`` turns a finished teacher or
student run into a self-contained model
folder; ``predict`` writes one CSV row per audio file (``file, duration,
arousal, dominance, valence, error``) and, with ``--hop``, a time series of
window predictions per file beside it (``<out>.windows.csv``: ``file, start,
end, arousal, dominance, valence``; with ``--plot`` a PNG per file in
``<out>.plots/``) and, with ``--embeddings``, each predicted file's pooled
embedding in ``<out>.embeddings.npz`` (arrays ``files`` and ``embeddings``,
float32, in the CSV's order). Exit status: 0 when everything succeeded,
1 when something failed (for ``predict``, any file: its row has the error and
the others are predicted), 2 for a wrong command line. A mistake the user can
fix is one message without a traceback (``CTSL_TRACEBACK=1`` shows it).
"""

import argparse
import io
import os
import sys
import warnings

import numpy as np
import torch
from tqdm import tqdm

from .dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    run_command,
    write_bytes_atomic,
    write_csv_atomic,
)
from .deployment.export import WINDOW_SECONDS, export_run
from .deployment.inference import (
    BATCH_SIZE,
    EmotionRegressor,
    audio_files,
    plot_trajectory,
)


def _program():
    """The command's name as it was run: ``ctsl-brain`` or ``python -m ctsl_brain``."""
    name = os.path.basename(sys.argv[0])
    return "python -m ctsl_brain" if name == "__main__.py" else name


def _parser():
    """The parser of the command line, with its two subcommands."""
    parser = argparse.ArgumentParser(
        prog=_program(),
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
        help="the model's window for long files (default: the longest utterance of "
        f"the run's manifests, at least {WINDOW_SECONDS:g})",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace an earlier export"
    )
    export.add_argument(
        "--onnx",
        action="store_true",
        help="also write model.onnx (needs onnx and onnxruntime)",
    )
    export.add_argument(
        "--onnx-int8",
        dest="onnx_int8",
        action="store_true",
        help="also write model.onnx and its int8 model.int8.onnx",
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
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default="fp32",
        help="fp32 (default); bf16 on GPUs and on CPUs with bfloat16 units (AMX, "
        "AVX512-BF16); fp16 on GPUs (the ONNX backend is float32 or int8)",
    )
    predict.add_argument(
        "--window_seconds",
        type=float,
        help="window for long files (default: the model's)",
    )
    predict.add_argument(
        "--noprogressbar", action="store_true", help="no progress bar"
    )
    predict.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="PyTorch (default) or onnxruntime (the export's model.onnx)",
    )
    predict.add_argument(
        "--int8",
        action="store_true",
        help="with --backend onnx: the int8 model.int8.onnx",
    )
    predict.add_argument(
        "--threads", type=int, help="CPU threads (default: the library's)"
    )
    predict.add_argument(
        "--hop",
        type=float,
        metavar="SECONDS",
        help="also write each file's window predictions every SECONDS to "
        "<out>.windows.csv (windows of --window_seconds)",
    )
    predict.add_argument(
        "--plot",
        action="store_true",
        help="with --hop: draw each file's trajectory to <out>.plots/",
    )
    predict.add_argument(
        "--embeddings",
        action="store_true",
        help="also write each file's pooled embedding to <out>.embeddings.npz "
        "(numpy.load; arrays files and embeddings)",
    )
    predict.add_argument(
        "--clip",
        action="store_true",
        help="clip predictions to the model's label scale",
    )

    serve = commands.add_parser(
        "serve", help="a web page to try a model (gradio, an optional extra)"
    )
    serve.add_argument(
        "--model", required=True, help="an exported model folder"
    )
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to serve on (127.0.0.1: this machine only; 0.0.0.0: every "
        "network it is on)",
    )
    serve.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: cuda when available)"
    )
    serve.add_argument(
        "--precision", choices=("fp32", "bf16", "fp16"), default="fp32"
    )
    return parser


def _serve(args):
    """Runs ``serve`` until interrupted; returns the exit status."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise MissingInputError(
            "serve needs gradio: pip install -r requirements-serve.txt "
            "(or pip install .[serve])"
        )
    from .deployment.serve import build_app

    run_opts = {"precision": args.precision}
    if args.device:
        run_opts["device"] = args.device
    model = EmotionRegressor.from_hparams(source=args.model, run_opts=run_opts)
    build_app(model).launch(server_name=args.host, server_port=args.port)
    return 0


def _export(args):
    """Runs ``export``; returns the exit status."""
    done = export_run(
        args.run,
        args.out,
        epoch=args.checkpoint,
        window_seconds=args.window_seconds,
        overwrite=args.overwrite,
        onnx=args.onnx,
        onnx_int8=args.onnx_int8,
    )
    print(
        f"exported the checkpoint of epoch {done['epoch']} (dev CCC {done['dev_ccc']:.4f}) "
        f"of {args.run} to {args.out}, window {done['window_seconds']:g} s"
    )
    if done["onnx_difference"] is not None:
        print(
            "model.onnx checked against PyTorch on padded batches: largest "
            f"difference {done['onnx_difference']:.2g}"
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
    if args.plot and args.hop is None:
        parser.error(
            "--plot draws the time series of --hop: give --hop SECONDS too"
        )
    if args.int8 and args.backend != "onnx":
        parser.error(
            "--int8 is a model of the ONNX backend: add --backend onnx"
        )
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    files = audio_files(args.inputs)
    if args.precision != "fp32" and args.backend == "onnx":
        parser.error(
            f"--precision {args.precision} is for the PyTorch backend; the ONNX backend runs "
            "model.onnx (float32) or, with --int8, model.int8.onnx"
        )
    run_opts = {"precision": args.precision}
    if args.device:
        run_opts["device"] = args.device
    overrides = {"clip_to_scale": True} if args.clip else None
    model = EmotionRegressor.from_hparams(
        source=args.model, run_opts=run_opts, overrides=overrides
    )
    if args.backend == "onnx":
        model.use_onnx(
            os.path.join(
                args.model, "model.int8.onnx" if args.int8 else "model.onnx"
            ),
            threads=args.threads,
        )
    frame = model.predict_files(
        files,
        window_seconds=args.window_seconds,
        batch_size=args.batch_size,
        progress=not args.noprogressbar,
        embeddings=args.embeddings,
    )
    if args.embeddings:
        frame, embeddings = frame
        kept = (frame["error"] == "").to_numpy()
        buffer = io.BytesIO()
        np.savez(
            buffer,
            files=np.array(frame.index[kept], dtype=str),
            embeddings=embeddings[kept],
        )
        write_bytes_atomic(
            _beside_out(args.out, ".embeddings.npz"), buffer.getvalue()
        )
    if args.hop is not None:
        _trajectories(model, frame, args)
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


def _beside_out(out, suffix):
    """``<out>`` with its extension replaced by ``suffix``."""
    stem, extension = os.path.splitext(out)
    return (stem if extension.lower() == ".csv" else out) + suffix


def _trajectories(model, frame, args):
    """Writes the windows of each predicted file (and their plots).

    A file whose windows fail gets the error in ``frame``.
    """
    predicted = [path for path in frame.index if frame.loc[path, "error"] == ""]
    rows = []
    plots = _beside_out(args.out, ".plots")
    names = _plot_names(predicted)
    for path in tqdm(
        predicted, disable=args.noprogressbar, unit="file", desc="windows"
    ):
        try:
            windows = model.predict_trajectory(
                path,
                args.hop,
                window_seconds=args.window_seconds,
                batch_size=args.batch_size,
            )
        except DataError as error:
            frame.loc[path, [*ATTRIBUTES]] = float("nan")
            frame.loc[path, "error"] = str(error)
            continue
        rows += [
            [
                path,
                *(
                    f"{window[key]:.6g}"
                    for key in ("start", "end", *ATTRIBUTES)
                ),
            ]
            for window in windows
        ]
        if args.plot:
            plot_trajectory(
                windows, os.path.join(plots, names[path]), title=path
            )
    write_csv_atomic(
        _beside_out(args.out, ".windows.csv"),
        ["file", "start", "end", *ATTRIBUTES],
        rows,
    )


def _plot_names(paths):
    """A PNG name per audio file: its path below the files' common folder.

    Folders become ``__`` so that the names stay apart and in one folder.
    """
    if not paths:
        return {}
    absolute = [os.path.abspath(path) for path in paths]
    common = os.path.commonpath([os.path.dirname(path) for path in absolute])
    return {
        path: os.path.splitext(os.path.relpath(full, common))[0].replace(
            os.sep, "__"
        )
        + ".png"
        for path, full in zip(paths, absolute, strict=True)
    }


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
    if args.command == "serve":
        return run_command(_serve, args)
    return run_command(_predict, args, parser)


if __name__ == "__main__":
    sys.exit(main())
