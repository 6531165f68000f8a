"""Inference speed of an exported emotion model: PyTorch, ONNX and ONNX int8.

Run as::

    .venv/bin/python tools/benchmark_inference.py          # demo and large shapes
    .venv/bin/python tools/benchmark_inference.py --small  # demo shape only, seconds

The default run takes minutes on CPU (the large shape is exported to ONNX,
checked and quantised in the run).

Two encoder shapes are measured, each with random weights and wrapped as the
exported model is (``EmotionGraph``: encoder, mean pooling, head, label
scale):

- demo: the demo's tiny wav2vec2 (``hparams/encoders/tiny_wav2vec2.yaml``)
  with the demo's head (``study.py``'s ``DEMO_OVERRIDES``);
- large: wav2vec2-large-robust's shape pruned to 12 transformer layers, as the
  paper uses it, with the paper's head (two hidden layers of 1024).

Each is run four ways, side by side in one run: PyTorch float32 (under
``torch.inference_mode``), PyTorch bf16 (under bf16 autocast, as ``predict
--precision bf16``; on CPUs with bfloat16 units, or anywhere with ``--bf16``),
ONNX float32 (``ctsl_brain.deployment.export.export_onnx``,
run with onnxruntime on the CPU) and ONNX int8 (its dynamically quantised copy,
``ctsl_brain.deployment.export.quantize_int8``), at batch 1 (one utterance of
``--seconds``) and batch 8 (utterances of 0.6 to 1 times ``--seconds``, zero
padded to the longest and masked). After one untimed run, the fastest of
``--repeats`` timed runs counts. The table gives seconds of audio processed per
second (padding not counted as audio), the speed-up over PyTorch, and, for
PyTorch, the share reached of the float32 or bf16 matrix-product peak measured
in the same run (FLOPs counted by torch's FlopCounterMode on one forward pass,
as executed, padding included). ``--json OUT`` writes the figures:
``{"cpu_bf16", "peak_fp32", "peak_bf16", "speeds": {shape: {backend: {batch:
audio s/s}}}}``.

With ``--model`` and ``--manifest``, it measures accuracy instead: the CCC of
an exported model (``python -m ctsl_brain export ... --onnx-int8``) on a test
manifest with each backend, and how far bf16 and int8 move it::

    .venv/bin/python tools/benchmark_inference.py --model exported/ \\
        --manifest results/demo/manifests/test.csv --data_folder data/demo
"""

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from speechbrain.integrations.huggingface import Wav2Vec2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The same measurement as the training benchmark's (this script's folder is on sys.path).
from benchmark_student import bf16_autocast, matmul_peak  # noqa: E402
from ctsl_brain.custom_interface import (  # noqa: E402
    EmotionGraph,
    RegressionHead,
    SSLEncoder,
    cpu_has_bf16,
)
from ctsl_brain.dataio import ATTRIBUTES, write_text_atomic  # noqa: E402
from ctsl_brain.deployment.export import (  # noqa: E402
    export_onnx,
    quantize_int8,
)
from ctsl_brain.models import tiny_encoder_folder  # noqa: E402

RATE = 16000
BATCH_SIZES = (1, 8)
BACKENDS = ("PyTorch fp32", "PyTorch bf16", "ONNX fp32", "ONNX int8")
LABEL_MIN, LABEL_MAX = 1.0, 7.0
# The demo's head (study.py's DEMO_OVERRIDES: --head_hidden_size 256
# --head_hidden_layers 1).
DEMO_HEAD = {"hidden_size": 256, "num_hidden_layers": 1}
# The paper's head.
LARGE_HEAD = {"hidden_size": 1024, "num_hidden_layers": 2}


def demo_graph(folder):
    """The demo's model: its tiny wav2vec2 and its head, random weights.

    Arguments
    ---------
    folder : str
        Where the tiny encoder's folder is written.

    Returns
    -------
    graph : EmotionGraph
        The model, in eval mode.
    """
    source = tiny_encoder_folder(
        folder,
        model_type="wav2vec2",
        hidden_size=64,
        num_layers=2,
        num_heads=4,
        conv_channels=32,
    )
    encoder = SSLEncoder(Wav2Vec2, source, save_path=source)
    head = RegressionHead(encoder.output_size, **DEMO_HEAD)
    return EmotionGraph(encoder, head, LABEL_MIN, LABEL_MAX).eval()


def large_graph():
    """wav2vec2-large-robust's shape, 12 layers, and the paper's head.

    Built from its configuration with random weights; nothing is downloaded.

    Returns
    -------
    graph : EmotionGraph
        The model, in eval mode.
    """
    import transformers

    # facebook/wav2vec2-large-robust's config.json, its 24 layers pruned to 12.
    config = transformers.Wav2Vec2Config(
        hidden_size=1024,
        num_hidden_layers=12,
        num_attention_heads=16,
        intermediate_size=4096,
        hidden_act="gelu",
        feat_extract_norm="layer",
        feat_extract_activation="gelu",
        do_stable_layer_norm=True,
        conv_bias=True,
        conv_dim=(512,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=128,
        num_conv_pos_embedding_groups=16,
        layer_norm_eps=1e-5,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=RATE,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    encoder = SSLEncoder(
        Wav2Vec2,
        config=config.to_dict(),
        preprocessor_config=extractor.to_dict(),
        pretrained=False,
    )
    head = RegressionHead(encoder.output_size, **LARGE_HEAD)
    return EmotionGraph(encoder, head, LABEL_MIN, LABEL_MAX).eval()


def make_batch(batch_size, seconds, seed):
    """Random utterances, zero-padded into one batch.

    Arguments
    ---------
    batch_size : int
        Utterances; one is ``seconds`` long, the others 0.6 to 1 times that.
    seconds : float
        Duration of the longest utterance.
    seed : int
        Seed of the durations and the samples.

    Returns
    -------
    wavs : numpy.ndarray
        ``[batch_size, samples]`` float32 waveforms.
    wav_lens : numpy.ndarray
        ``[batch_size]`` float32 lengths relative to ``samples``.
    audio : float
        Seconds of audio in the batch, without the padding.

    Example
    -------
    >>> wavs, wav_lens, audio = make_batch(8, 1.0, seed=0)
    >>> wavs.shape, float(wav_lens.max()), bool(wav_lens.min() >= 0.6)
    ((8, 16000), 1.0, True)
    """
    rng = np.random.default_rng(seed)
    longest = round(seconds * RATE)
    fractions = rng.uniform(0.6, 1.0, batch_size)
    fractions[0] = 1.0
    lengths = np.round(fractions * longest).astype(int)
    wavs = np.zeros((batch_size, longest), dtype=np.float32)
    for row, length in enumerate(lengths):
        wavs[row, :length] = 0.1 * rng.standard_normal(length)
    wav_lens = (lengths / longest).astype(np.float32)
    return wavs, wav_lens, float(lengths.sum()) / RATE


def best_time(run, repeats):
    """Fastest of ``repeats`` timed calls of ``run``, after one untimed.

    Arguments
    ---------
    run : callable
        What is timed, without arguments.
    repeats : int
        Timed calls.

    Returns
    -------
    seconds : float
        The fastest call's wall-clock time.
    result : object
        What the last call returned.
    """
    result = run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def onnx_session(path, threads):
    """An onnxruntime session on the CPU with ``threads`` threads.

    Arguments
    ---------
    path : str
        The ``.onnx`` file.
    threads : int
        Threads of an operator.

    Returns
    -------
    session : onnxruntime.InferenceSession
        The session.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(
        path, options, providers=["CPUExecutionProvider"]
    )


def benchmark_graph(graph, batches, folder, threads, repeats, bf16=True):
    """Times one model with each backend on each batch.

    Arguments
    ---------
    graph : EmotionGraph
        The model, in eval mode.
    batches : dict
        Batch size -> ``(wavs, wav_lens, audio)`` of :func:`make_batch`.
    folder : str
        Where the ONNX files are written.
    threads : int
        Threads of onnxruntime's operators.
    repeats : int
        Timed runs of each measurement.
    bf16 : bool
        Also PyTorch under bf16 autocast.

    Returns
    -------
    seconds : dict
        ``(backend, batch size)`` -> fastest run, in seconds.
    flops : dict
        Batch size -> FLOPs of one PyTorch forward pass.
    outputs : dict
        ``(backend, batch size)`` -> predictions, ``[B, 3]``.
    difference : float
        The export check's largest ONNX-PyTorch difference.
    """
    seconds, flops, outputs = {}, {}, {}
    for size, (wavs, wav_lens, _) in batches.items():
        inputs = torch.from_numpy(wavs), torch.from_numpy(wav_lens)
        # FlopCounterMode fails on the weight-normed positional convolution
        # under inference_mode; no_grad counts the same operations.
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            graph(*inputs)
        flops[size] = counter.get_total_flops()
        precisions = {"PyTorch fp32": contextlib.nullcontext}
        if bf16:
            precisions["PyTorch bf16"] = bf16_autocast
        for backend, autocast in precisions.items():
            with torch.inference_mode(), autocast():
                took, result = best_time(lambda: graph(*inputs), repeats)
            seconds[backend, size] = took
            outputs[backend, size] = result[0].float().numpy()

    fp32 = os.path.join(folder, "model.onnx")
    int8 = os.path.join(folder, "model.int8.onnx")
    difference = export_onnx(graph, fp32)
    quantize_int8(fp32, int8)
    for backend, path in (("ONNX fp32", fp32), ("ONNX int8", int8)):
        session = onnx_session(path, threads)
        for size, (wavs, wav_lens, _) in batches.items():
            feed = {"wavs": wavs, "wav_lens": wav_lens}
            took, result = best_time(
                lambda session=session, feed=feed: session.run(
                    ["predictions", "embedding"], feed
                ),
                repeats,
            )
            seconds[backend, size] = took
            outputs[backend, size] = result[0]
        del session  # its memory, before the next one is made
    return seconds, flops, outputs, difference


def speed(args):
    """Measures and prints the speed table.

    Arguments
    ---------
    args : argparse.Namespace
        The command line's options.
    """
    import onnxruntime

    units = cpu_has_bf16()
    bf16 = units or args.bf16
    backends = [b for b in BACKENDS if bf16 or b != "PyTorch bf16"]
    peaks = {"fp32": matmul_peak()}
    peaks["bf16"] = matmul_peak(dtype=torch.bfloat16) if bf16 else None
    batches = {
        size: make_batch(size, args.seconds, seed=args.seed + size)
        for size in BATCH_SIZES
    }
    print(
        f"{args.threads} threads; utterances of {args.seconds:g} s at batch 1, "
        f"{batches[8][2] / 8:.2f} s on average (0.6 to 1 times {args.seconds:g} "
        f"s, padded to the longest) at batch 8; fastest of {args.repeats} "
        f"timed runs after one untimed; torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}; matmul peak float32 {peaks['fp32']:.0f} GFLOP/s, "
        "bf16 "
        + (f"{peaks['bf16']:.0f} GFLOP/s" if peaks["bf16"] else "not measured")
        + f"; bfloat16 units: {'yes' if units else 'no'}",
        flush=True,
    )
    shapes = {"demo": demo_graph}
    if not args.small:
        shapes["large"] = lambda folder: large_graph()
    results = {}
    for name, build in shapes.items():
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            torch.manual_seed(args.seed)
            graph = build(folder)
            results[name] = benchmark_graph(
                graph, batches, folder, args.threads, args.repeats, bf16
            )
            del graph
            gc.collect()
        print(
            f"  ({name}: measured in {time.perf_counter() - start:.0f} s, "
            "export and quantisation included)",
            flush=True,
        )

    print()
    print(
        "| encoder | backend | batch | audio s/s | x PyTorch fp32 | % of peak |"
    )
    print("|---|---|---:|---:|---:|---:|")
    speeds = {}
    for name, (seconds, flops, _, _) in results.items():
        speeds[name] = {}
        for backend in backends:
            speeds[name][backend] = {}
            for size in BATCH_SIZES:
                rate = batches[size][2] / seconds[backend, size]
                speeds[name][backend][size] = rate
                ratio = seconds["PyTorch fp32", size] / seconds[backend, size]
                share = "-"
                if backend.startswith("PyTorch"):
                    achieved = flops[size] / seconds[backend, size] / 1e9
                    share = f"{achieved / peaks[backend.split()[1]]:.0%}"
                print(
                    f"| {name} | {backend} | {size} | {rate:.1f} | "
                    f"{ratio:.2f} | {share} |"
                )
    print()
    print(
        "% of peak: FLOPs of one PyTorch forward pass (FlopCounterMode, "
        "padding included) per second, against the matmul peak of its precision."
    )
    for name, (seconds, flops, outputs, difference) in results.items():
        for backend in backends[1:]:
            ratios = [
                seconds["PyTorch fp32", size] / seconds[backend, size]
                for size in BATCH_SIZES
            ]
            print(
                f"{name}: {backend} / PyTorch fp32 at batch 1: {ratios[0]:.2f}, "
                f"at batch 8: {ratios[1]:.2f}"
            )
    for name, (seconds, flops, outputs, difference) in results.items():
        moved = {
            backend: max(
                float(
                    np.abs(
                        outputs[backend, size] - outputs["PyTorch fp32", size]
                    ).max()
                )
                for size in BATCH_SIZES
            )
            for backend in backends[1:]
        }
        print(
            f"{name}: largest prediction difference from PyTorch fp32 (random "
            "weights): "
            + ", ".join(f"{b} {moved[b]:.2g}" for b in backends[1:])
            + f" (export check {difference:.2g}); GFLOP per forward: batch 1 "
            f"{flops[1] / 1e9:.1f}, batch 8 {flops[8] / 1e9:.1f}"
        )
    if args.json:
        figures = {
            "cpu_bf16": units,
            "peak_fp32": peaks["fp32"],
            "peak_bf16": peaks["bf16"],
            "speeds": speeds,
            "threads": args.threads,
            "seconds": args.seconds,
        }
        write_text_atomic(args.json, json.dumps(figures, indent=2) + "\n")


def read_manifest(path, data_folder):
    """The audio files and labels of a test manifest.

    Arguments
    ---------
    path : str
        The manifest (columns ID, wav, duration, arousal, dominance, valence,
        spk_id).
    data_folder : str or None
        What ``$data_root`` in the ``wav`` column stands for.

    Returns
    -------
    files : list of str
        The audio files.
    labels : numpy.ndarray
        ``[N, 3]`` arousal, dominance, valence.

    Raises
    ------
    SystemExit
        A path uses ``$data_root`` and ``data_folder`` is None.
    """
    import pandas

    manifest = pandas.read_csv(path)
    files = []
    for wav in manifest["wav"].astype(str):
        if "$data_root" in wav:
            if data_folder is None:
                raise SystemExit(
                    f"{path} names its files from $data_root: give --data_folder"
                )
            wav = wav.replace("$data_root", data_folder)
        files.append(wav)
    return files, manifest[list(ATTRIBUTES)].to_numpy(dtype=np.float64)


def accuracy(args):
    """Measures and prints the CCC of an exported model with each backend.

    Arguments
    ---------
    args : argparse.Namespace
        The command line's options.
    """
    from ctsl_brain.deployment.inference import EmotionRegressor
    from ctsl_brain.losses import concordance_cc

    files, labels = read_manifest(args.manifest, args.data_folder)
    # bf16 where the CPU has bfloat16 units (elsewhere the model would predict in float32).
    backends = [b for b in BACKENDS if cpu_has_bf16() or b != "PyTorch bf16"]
    predictions, took = {}, {}
    for backend in backends:
        precision = "bf16" if backend == "PyTorch bf16" else "fp32"
        if backend.startswith("PyTorch") or backend == "ONNX fp32":
            model = EmotionRegressor.from_hparams(
                source=args.model,
                run_opts={"device": "cpu", "precision": precision},
            )
        if backend.startswith("ONNX"):
            onnx_file = (
                "model.int8.onnx" if backend == "ONNX int8" else "model.onnx"
            )
            model.use_onnx(
                os.path.join(args.model, onnx_file), threads=args.threads
            )
        start = time.perf_counter()
        frame = model.predict_files(files, progress=False)
        took[backend] = time.perf_counter() - start
        failed = frame["error"].fillna("").astype(str) != ""
        if failed.any():
            raise SystemExit(
                f"{int(failed.sum())} files could not be predicted, e.g. "
                f"{frame.index[failed][0]}: {frame['error'][failed].iloc[0]}"
            )
        predictions[backend] = (
            frame.loc[files, list(ATTRIBUTES)].to_numpy().astype(np.float64)
        )

    print(
        f"{len(files)} files of {args.manifest}; model {args.model}; "
        f"{args.threads} threads"
    )
    print()
    print("| backend | CCC arousal | CCC dominance | CCC valence |")
    print("|---|---:|---:|---:|")
    cccs = {}
    for backend in backends:
        cccs[backend] = concordance_cc(
            torch.tensor(predictions[backend]), torch.tensor(labels)
        ).numpy()
        values = " | ".join(f"{value:.4f}" for value in cccs[backend])
        print(f"| {backend} | {values} |")
    print()
    for backend in backends[1:]:
        change = np.abs(cccs[backend] - cccs["PyTorch fp32"]).max()
        moved = np.abs(predictions[backend] - predictions["PyTorch fp32"]).max()
        print(
            f"{backend} vs PyTorch fp32: largest CCC change {change:.4f}, "
            f"largest prediction difference {moved:.2g}"
        )
    print(
        "prediction time: "
        + ", ".join(f"{backend} {took[backend]:.2f} s" for backend in backends)
    )
    if args.json:
        figures = {
            "manifest": args.manifest,
            "ccc": {backend: cccs[backend].tolist() for backend in backends},
            "seconds": took,
        }
        write_text_atomic(args.json, json.dumps(figures, indent=2) + "\n")


def main(argv=None):
    """Runs the speed benchmark, or the accuracy one with ``--model``.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        description="Inference speed of the emotion model with PyTorch, ONNX "
        "and ONNX int8, side by side; with --model and --manifest, their CCC "
        "instead."
    )
    parser.add_argument(
        "--small",
        action="store_true",
        help="the demo encoder only, on 1 s utterances unless --seconds",
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="duration of the longest utterance of a batch (default 4, or 1 "
        "with --small)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", help="an exported model folder, with its ONNX files"
    )
    parser.add_argument("--manifest", help="a test manifest, with --model")
    parser.add_argument(
        "--data_folder", help="what $data_root stands for in the manifest"
    )
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="in the speed table, PyTorch bf16 on a CPU without bfloat16 units too (many "
        "times slower)",
    )
    parser.add_argument(
        "--json", metavar="OUT", help="also write the figures here"
    )
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 1.0 if args.small else 4.0
    if (args.model is None) != (args.manifest is None):
        parser.error("--model and --manifest go together")
    if args.threads < 1 or args.repeats < 1 or args.seconds <= 0:
        parser.error("--threads, --repeats and --seconds must be positive")
    torch.set_num_threads(args.threads)
    if args.model is not None:
        accuracy(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
