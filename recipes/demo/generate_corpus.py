"""Generate the embedded synthetic emotional-speech corpus and its noise banks.

Usage::

    python recipes/demo/generate_corpus.py data/demo
    python recipes/demo/generate_corpus.py data/demo \\
        --n_train 160 --n_dev 16 --n_test 80
    python -m recipes.demo.generate_corpus data/demo

The ``-m`` form, run from the repository root, is equivalent to the first. The
noise banks are radio-like.

The output is deterministic for a given set of options, and an existing corpus
built with the same options is reused. See ``ctsl_brain.demo.corpus`` for what
the corpus contains.
"""

import argparse
import inspect
import os
import sys
import time

# Run as a file, Python puts recipes/demo/ on the path rather than the repository root that
# holds the ctsl_brain package.
ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)


if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from ctsl_brain.demo.corpus import prepare_demo_corpus  # noqa: E402

# The options' defaults are the generator's own.
DEFAULTS = {
    name: param.default
    for name, param in inspect.signature(prepare_demo_corpus).parameters.items()
    if param.default is not inspect.Parameter.empty
}


def main(argv=None):
    """Builds or reuses the corpus, and prints where its CSV files are.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        description="Generate the embedded synthetic emotional-speech corpus "
        "and its radio-like noise banks."
    )
    parser.add_argument("data_folder", help="output folder (created if needed)")
    parser.add_argument(
        "--seed", type=int, default=DEFAULTS["seed"], help="master seed (>= 0)"
    )
    parser.add_argument(
        "--n_train",
        type=int,
        default=DEFAULTS["n_train"],
        help="training utterances",
    )
    parser.add_argument(
        "--n_dev",
        type=int,
        default=DEFAULTS["n_dev"],
        help="validation utterances",
    )
    parser.add_argument(
        "--n_test", type=int, default=DEFAULTS["n_test"], help="test utterances"
    )
    parser.add_argument(
        "--min_duration",
        type=float,
        default=DEFAULTS["min_duration"],
        help="seconds",
    )
    parser.add_argument(
        "--max_duration",
        type=float,
        default=DEFAULTS["max_duration"],
        help="seconds",
    )
    parser.add_argument(
        "--adapt_noise_minutes",
        type=float,
        default=DEFAULTS["adapt_noise_minutes"],
        help="adaptation noise bank, minutes",
    )
    parser.add_argument(
        "--test_noise_minutes",
        type=float,
        default=DEFAULTS["test_noise_minutes"],
        help="test noise bank, minutes",
    )
    parser.add_argument(
        "--noise_segment_seconds",
        type=float,
        default=DEFAULTS["noise_segment_seconds"],
        help="length of each noise segment (default: max_duration + 1)",
    )
    parser.add_argument(
        "--sample_rate", type=int, default=DEFAULTS["sample_rate"], help="Hz"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    paths = prepare_demo_corpus(
        args.data_folder,
        seed=args.seed,
        n_train=args.n_train,
        n_dev=args.n_dev,
        n_test=args.n_test,
        min_duration=args.min_duration,
        max_duration=args.max_duration,
        adapt_noise_minutes=args.adapt_noise_minutes,
        test_noise_minutes=args.test_noise_minutes,
        noise_segment_seconds=args.noise_segment_seconds,
        sample_rate=args.sample_rate,
    )
    print(
        f"Demo corpus ready in {args.data_folder} ({time.perf_counter() - start:.1f} s):"
    )
    for name, path in paths.items():
        print(f"  {name:12s} {path}")


if __name__ == "__main__":
    main()
