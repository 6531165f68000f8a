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
# The command line's options: name, type, help.
OPTIONS = (
    ("seed", int, "master seed (>= 0)"),
    ("n_train", int, "training utterances"),
    ("n_dev", int, "validation utterances"),
    ("n_test", int, "test utterances"),
    ("min_duration", float, "seconds"),
    ("max_duration", float, "seconds"),
    ("adapt_noise_minutes", float, "adaptation noise bank, minutes"),
    ("test_noise_minutes", float, "test noise bank, minutes"),
    (
        "noise_segment_seconds",
        float,
        "length of each noise segment (default: max_duration + 1)",
    ),
    ("sample_rate", int, "Hz"),
)


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
    for name, kind, text in OPTIONS:
        parser.add_argument(
            f"--{name}", type=kind, default=DEFAULTS[name], help=text
        )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    paths = prepare_demo_corpus(
        args.data_folder,
        **{name: getattr(args, name) for name, _, _ in OPTIONS},
    )
    print(
        f"Demo corpus ready in {args.data_folder} ({time.perf_counter() - start:.1f} s):"
    )
    for name, path in paths.items():
        print(f"  {name:12s} {path}")


if __name__ == "__main__":
    main()
