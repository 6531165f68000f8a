"""Student-training throughput: the straightforward loop and the recipe's path.

Run as::

    python tools/benchmark_student.py          # wav2vec2-large shape (slow)
    python tools/benchmark_student.py --small  # a small shape, to try it out
    python tools/benchmark_student.py --json bench.json   # also the figures as JSON

The default shape takes minutes on CPU.

The paths are measured side by side.

Both paths train the same student (the 12-layer wav2vec2-large shape with random
weights by default, its CNN frozen as in the recipe, and the paper's head) on
the same utterances, whose durations are drawn like MSP-Podcast's (2.75 to 11 s,
more short than long), with the paper's loss (L_CCC + 100 L_TL + 10 L_CL) and
Adam:

(a) straightforward, as the authors wrote it: the plain transformers model,
    fixed-size random batches, and the frozen teacher recomputed on the clean
    batch at every step;
(b) the recipe's path: length-aware batches from SpeechBrain's
    DynamicBatchSampler (the same mean number of utterances per batch), the
    recipe's frozen CNN in channels-last memory, its fused Adam, and the teacher's embeddings from
    TeacherEmbeddingCache, filled once (its cost, one teacher pass over the
    data per run, is printed separately: over a 20-epoch run it is a
    twentieth of a pass per epoch).
(c) the recipe's path in bf16 autocast (``--precision bf16``: the losses in
    float32, the teacher's embeddings computed in bf16 and cached in float32),
    on CPUs with bfloat16 units (AMX, AVX512-BF16), or anywhere with ``--bf16``.

It prints seconds of audio trained per second for each, the ratios to (a), the
padding fraction of each, and the achieved GFLOP/s (counted by torch's
FlopCounterMode, on real audio and as executed with padding) against float32
and bf16 matrix-product peaks measured in the same run. ``--json OUT`` writes
``{"cpu_bf16", "peak_fp32", "peak_bf16", "paths": {"authors_fp32",
"recipe_fp32", "recipe_bf16"}}`` (GFLOP/s; audio seconds per second, null for
a path not run).
"""

import argparse
import contextlib
import copy
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

from ctsl_brain.custom_interface import cpu_has_bf16  # noqa: E402
from ctsl_brain.dataio import write_text_atomic  # noqa: E402
from ctsl_brain.losses import ccc_loss, info_nce, transfer_loss  # noqa: E402
from ctsl_brain.models import (  # noqa: E402
    RegressionHead,
    SSLEncoder,
    TeacherEmbeddingCache,
    tiny_encoder_folder,
)

RATE = 16000


def bf16_autocast():
    """The CPU's bfloat16 autocast, as SpeechBrain's ``--precision bf16`` sets it.

    Returns
    -------
    context : torch.autocast
        Entered around a forward pass.
    """
    return torch.autocast("cpu", dtype=torch.bfloat16)


def fill_cache(teacher, batches, data, autocast):
    """The teacher's embeddings of every utterance, computed batch by batch.

    Arguments
    ---------
    teacher : torch.nn.Module
        The frozen teacher encoder.
    batches : list of list of int
        Utterance indices of each batch.
    data : tuple
        ``(clean, noisy, labels)``, as :func:`make_batch` takes them.
    autocast : callable
        Gives the context of the teacher's forward passes.

    Returns
    -------
    cache : TeacherEmbeddingCache
        Filled.
    seconds : float
        The time it took.
    """
    cache = TeacherEmbeddingCache(teacher)
    start = time.perf_counter()
    for indices in batches:
        batch_clean, _, wav_lens, _ = make_batch(indices, *data)
        with autocast():
            cache([str(i) for i in indices], batch_clean, wav_lens)
    return cache, time.perf_counter() - start


def matmul_peak(size=2048, repeats=8, dtype=torch.float32):
    """Best matrix-product rate of this machine.

    Arguments
    ---------
    size : int
        Rows and columns of the square matrices multiplied.
    repeats : int
        Timed products, of which the fastest counts (after one untimed).
    dtype : torch.dtype
        The matrices' type: float32, or bfloat16 for the bf16 peak.

    Returns
    -------
    peak : float
        The rate, in GFLOP/s.
    """
    a, b = (
        torch.randn(size, size, dtype=dtype),
        torch.randn(size, size, dtype=dtype),
    )
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def msp_like_durations(n, seed):
    """Utterance durations like MSP-Podcast's.

    2.75 to 11 s, skewed to short utterances as in MSP-Podcast.

    Arguments
    ---------
    n : int
        Number of utterances.
    seed : int
        Seed of the draw.

    Returns
    -------
    durations : numpy.ndarray
        ``[n]`` durations in seconds.

    Example
    -------
    >>> durations = msp_like_durations(100, seed=0)
    >>> bool(durations.min() >= 2.75 and durations.max() <= 11.0)
    True
    """
    rng = np.random.default_rng(seed)
    return np.clip(2.75 + rng.gamma(1.5, 2.0, n), 2.75, 11.0)


def random_batches(durations, batch_size, seed):
    """Fixed-size batches of shuffled utterances: the straightforward loop's.

    Arguments
    ---------
    durations : numpy.ndarray
        Duration of each utterance, in seconds (only their number is used).
    batch_size : int
        Utterances per batch (the last batch may have fewer).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    batches : list of list of int
        Utterance indices of each batch.

    Example
    -------
    >>> [len(batch) for batch in random_batches([3.0] * 10, 4, seed=0)]
    [4, 4, 2]
    """
    order = np.random.default_rng(seed).permutation(len(durations))
    return [
        order[i : i + batch_size].tolist()
        for i in range(0, len(order), batch_size)
    ]


def dynamic_batches(durations, batch_size, seed):
    """Length-aware batches from SpeechBrain's DynamicBatchSampler.

    The recipe's batches.

    Arguments
    ---------
    durations : numpy.ndarray
        Duration of each utterance, in seconds.
    batch_size : int
        The mean number of utterances per batch to match: batches hold at most
        ``batch_size`` times the mean duration.
    seed : int
        Seed of the sampler's shuffle.

    Returns
    -------
    batches : list of list
        Utterance indices of each batch.
    """
    from speechbrain.dataio.dataset import DynamicItemDataset
    from speechbrain.dataio.sampler import DynamicBatchSampler

    dataset = DynamicItemDataset(
        {str(i): {"duration": float(d)} for i, d in enumerate(durations)}
    )
    sampler = DynamicBatchSampler(
        dataset,
        max_batch_length=float(np.mean(durations)) * batch_size,
        # The recipe uses 60 buckets over a whole corpus; a bucket must hold a few batches.
        num_buckets=max(2, len(durations) // (2 * batch_size)),
        length_func=lambda row: row["duration"],
        shuffle=True,
        batch_ordering="random",
        seed=seed,
    )
    return [list(batch) for batch in sampler]


def padding(batches, durations):
    """How much of the padded batches is padding.

    Arguments
    ---------
    batches : list of list of int
        Utterance indices of each batch.
    durations : numpy.ndarray
        Duration of each utterance, in seconds.

    Returns
    -------
    fraction : float
        The padding's share of the padded audio.
    real : float
        Seconds of audio.
    padded : float
        Seconds of audio with the padding of each batch to its longest.

    Example
    -------
    >>> padding([[0, 1]], [2.0, 4.0])
    (0.25, 6.0, 8.0)
    """
    real = sum(durations[i] for batch in batches for i in batch)
    padded = sum(
        len(batch) * max(durations[i] for i in batch) for batch in batches
    )
    return 1 - real / padded, real, padded


def make_batch(indices, clean, noisy, labels):
    """Pads the utterances of one batch into tensors.

    Arguments
    ---------
    indices : list of int
        The batch's utterances.
    clean : list of torch.Tensor
        The clean waveform of each utterance.
    noisy : list of torch.Tensor
        The noisy waveform of each utterance, as long as the clean one.
    labels : torch.Tensor
        ``[N, 3]`` labels of all utterances.

    Returns
    -------
    batch_clean : torch.Tensor
        ``[B, S]`` clean waveforms, zero-padded.
    batch_noisy : torch.Tensor
        ``[B, S]`` noisy waveforms, zero-padded.
    wav_lens : torch.Tensor
        ``[B]`` relative lengths.
    batch_labels : torch.Tensor
        ``[B, 3]`` labels.

    Example
    -------
    >>> waves = [torch.ones(4), torch.ones(2)]
    >>> _, _, wav_lens, _ = make_batch([0, 1], waves, waves, torch.zeros(2, 3))
    >>> wav_lens.tolist()
    [1.0, 0.5]
    """
    lengths = [len(clean[i]) for i in indices]
    longest = max(lengths)
    batch_clean = torch.zeros(len(indices), longest)
    batch_noisy = torch.zeros(len(indices), longest)
    for row, i in enumerate(indices):
        batch_clean[row, : lengths[row]] = clean[i]
        batch_noisy[row, : lengths[row]] = noisy[i]
    wav_lens = torch.tensor(lengths, dtype=torch.float32) / longest
    return batch_clean, batch_noisy, wav_lens, labels[indices]


def student_step(
    student,
    head,
    optimizer,
    noisy,
    wav_lens,
    labels,
    teacher_embedding,
    autocast=contextlib.nullcontext,
):
    """One training step of the student on the paper's loss.

    L_CCC + 100 L_TL + 10 L_CL, labels scaled from 1-7 to 0-1 for the CCC; the
    forward pass under ``autocast``, the loss in float32 as in the recipe.

    Arguments
    ---------
    student : torch.nn.Module
        The student encoder, trained.
    head : torch.nn.Module
        The regression head, trained.
    optimizer : torch.optim.Optimizer
        The optimizer of the student and the head.
    noisy : torch.Tensor
        ``[B, S]`` noisy waveforms.
    wav_lens : torch.Tensor
        ``[B]`` relative lengths.
    labels : torch.Tensor
        ``[B, 3]`` labels on the 1-7 scale.
    teacher_embedding : torch.Tensor
        ``[B, D]`` the teacher's embeddings of the clean waveforms.
    autocast : callable
        Gives the context of the forward pass (no autocast by default).
    """
    with autocast():
        embedding = student(noisy, wav_lens)
        prediction = head(embedding)
    embedding, prediction = embedding.float(), prediction.float()
    loss = (
        ccc_loss(prediction, (labels - 1) / 6)
        + 100 * transfer_loss(teacher_embedding, embedding)
        + 10 * info_nce(embedding, teacher_embedding, labels, margin=0.5)
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def plain_transformers(encoder):
    """A copy of ``encoder`` whose frozen CNN runs as transformers runs it.

    Arguments
    ---------
    encoder : SSLEncoder
        The recipe's encoder.

    Returns
    -------
    plain : SSLEncoder
        The copy, without the recipe's channels-last CNN.
    """
    plain = copy.deepcopy(encoder)
    vars(plain.ssl.model.feature_extractor).pop("forward", None)
    return plain


def run_path(
    name,
    batches,
    data,
    teacher,
    student,
    head,
    cache=None,
    autocast=contextlib.nullcontext,
    fused=False,
):
    """Trains one pass over ``batches``, after one untimed warm-up step.

    Arguments
    ---------
    name : str
        The path's name, for the progress line.
    batches : list of list of int
        Utterance indices of each batch.
    data : tuple
        ``(clean, noisy, labels)``, as :func:`make_batch` takes them.
    teacher : torch.nn.Module
        The frozen teacher encoder, run on each clean batch without a cache.
    student : torch.nn.Module
        The student encoder, trained.
    head : torch.nn.Module
        The regression head, trained.
    cache : TeacherEmbeddingCache or None
        Where the teacher's embeddings come from; None: the teacher is run at
        every step.
    autocast : callable
        Gives the context of each step's forward pass.
    fused : bool
        PyTorch's fused Adam (the recipe's), else its default.

    Returns
    -------
    seconds : float
        Wall-clock time of the pass.
    flops_first : int
        FLOPs of the first (warm-up) step, as torch's FlopCounterMode counts.
    """
    clean, noisy, labels = data
    optimizer = torch.optim.Adam(
        [*student.parameters(), *head.parameters()], lr=1e-5, fused=fused
    )

    def step(indices):
        """One training step on one batch.

        Arguments
        ---------
        indices : list of int
            The batch's utterances.
        """
        batch_clean, batch_noisy, wav_lens, batch_labels = make_batch(
            indices, clean, noisy, labels
        )
        if cache is None:
            with torch.no_grad():
                teacher_embedding = teacher(batch_clean, wav_lens)
        else:
            ids = [str(i) for i in indices]
            teacher_embedding = cache(ids, batch_clean, wav_lens)
        student_step(
            student,
            head,
            optimizer,
            batch_noisy,
            wav_lens,
            batch_labels,
            teacher_embedding,
            autocast,
        )

    counter = FlopCounterMode(display=False)
    with counter:  # also the warm-up step, untimed
        step(batches[0])
    flops_first = counter.get_total_flops()
    start = time.perf_counter()
    for indices in batches:
        step(indices)
    seconds = time.perf_counter() - start
    print(f"  ({name}: {len(batches)} steps in {seconds:.1f} s)", flush=True)
    return seconds, flops_first


def main(argv=None):
    """Runs both paths and prints their table.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        description="Student-training throughput: the straightforward loop "
        "against the recipe's path, side by side."
    )
    parser.add_argument("--utterances", type=int, default=40)
    parser.add_argument(
        "--batch_size", type=int, default=8, help="of the straightforward loop"
    )
    parser.add_argument(
        "--small", action="store_true", help="hidden 256, 4 layers, CNN 128"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bf16",
        action="store_true",
        help="run the bf16 path on a CPU without bfloat16 units too (many times slower)",
    )
    parser.add_argument(
        "--json", metavar="OUT", help="also write the figures here"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    units = cpu_has_bf16()

    shape = (
        {
            "hidden_size": 256,
            "num_layers": 4,
            "num_heads": 4,
            "conv_channels": 128,
        }
        if args.small
        else {
            "hidden_size": 1024,
            "num_layers": 12,
            "num_heads": 16,
            "conv_channels": 512,
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        source = tiny_encoder_folder(folder, seed=args.seed, **shape)
        teacher = SSLEncoder(
            Wav2Vec2,
            source=source,
            save_path=folder,
            num_layers=shape["num_layers"],
        )
    student = copy.deepcopy(teacher).train()
    teacher.eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    head = RegressionHead(
        teacher.output_size, hidden_size=1024, num_hidden_layers=2
    )

    durations = msp_like_durations(args.utterances, args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    clean = [
        torch.randn(int(d * RATE), generator=generator) * 0.1 for d in durations
    ]
    noisy = [c + torch.randn(len(c), generator=generator) * 0.1 for c in clean]
    labels = 1 + 6 * torch.rand(args.utterances, 3, generator=generator)
    data = (clean, noisy, labels)

    peak = matmul_peak()
    peak_bf16 = (
        matmul_peak(dtype=torch.bfloat16) if units or args.bf16 else None
    )
    straight = random_batches(durations, args.batch_size, args.seed)
    recipe = dynamic_batches(durations, args.batch_size, args.seed)
    pad_a, real, padded_a = padding(straight, durations)
    pad_b, _, padded_b = padding(recipe, durations)

    print(
        f"{args.utterances} utterances, {real:.0f} s of audio; model "
        f"{'small' if args.small else 'wav2vec2-large shape, 12 layers'}; "
        f"{args.threads} threads; matmul peak float32 {peak:.0f} GFLOP/s, bf16 "
        + (f"{peak_bf16:.0f} GFLOP/s" if peak_bf16 else "not measured")
        + f"; bfloat16 units: {'yes' if units else 'no'}",
        flush=True,
    )

    cache, fill = fill_cache(teacher, recipe, data, contextlib.nullcontext)
    paths = [
        (
            "(a) authors' loop, fp32",
            "authors_fp32",
            straight,
            None,
            contextlib.nullcontext,
        ),
        (
            "(b) recipe, fp32",
            "recipe_fp32",
            recipe,
            cache,
            contextlib.nullcontext,
        ),
    ]
    if units or args.bf16:
        cache_bf16, _ = fill_cache(teacher, recipe, data, bf16_autocast)
        paths.append(
            (
                "(c) recipe, bf16",
                "recipe_bf16",
                recipe,
                cache_bf16,
                bf16_autocast,
            )
        )
    rows, speeds = (
        [],
        dict.fromkeys(("authors_fp32", "recipe_fp32", "recipe_bf16")),
    )
    for name, key, batches, path_cache, autocast in paths:
        authors = key == "authors_fp32"
        seconds, flops = run_path(
            key,
            batches,
            data,
            plain_transformers(teacher) if authors else teacher,
            plain_transformers(student) if authors else copy.deepcopy(student),
            copy.deepcopy(head),
            path_cache,
            autocast,
            fused=not authors,  # the recipe's Adam (its YAML's opt_class)
        )
        # FLOPs per second of padded audio, from the first step, scaled to the whole pass.
        first = len(batches[0]) * max(durations[i] for i in batches[0])
        pad, _, padded = padding(batches, durations)
        executed = flops / first * padded / 1e9
        path_peak = peak_bf16 if key == "recipe_bf16" else peak
        rows.append(
            (
                name,
                len(batches),
                pad,
                real / seconds,
                executed / seconds,
                path_peak,
            )
        )
        speeds[key] = real / seconds

    print()
    print(
        "| path | batches | padding | audio s/s | x (a) | GFLOP/s executed | % of its peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n_batches, pad, speed, rate, path_peak in rows:
        print(
            f"| {name} | {n_batches} | {pad:.1%} | {speed:.2f} | "
            f"{speed / speeds['authors_fp32']:.2f} | {rate:.0f} | {rate / path_peak:.0%} |"
        )
    print()
    print(
        "ratio b/a (audio seconds trained per second): "
        f"{speeds['recipe_fp32'] / speeds['authors_fp32']:.2f}"
    )
    if speeds["recipe_bf16"] is not None:
        print(
            f"ratio c/b (bf16 over fp32): {speeds['recipe_bf16'] / speeds['recipe_fp32']:.2f}; "
            f"c/a: {speeds['recipe_bf16'] / speeds['authors_fp32']:.2f}"
        )
    print(
        f"teacher-cache fill, once per run: {fill:.1f} s "
        f"({real / fill:.2f} audio s/s; {cache.nbytes / 1e6:.2f} MB)"
    )
    if args.json:
        figures = {
            "cpu_bf16": units,
            "peak_fp32": peak,
            "peak_bf16": peak_bf16,
            "paths": speeds,
            "threads": args.threads,
            "shape": "small" if args.small else "wav2vec2-large, 12 layers",
            "utterances": args.utterances,
        }
        write_text_atomic(args.json, json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
