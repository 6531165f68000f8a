"""Test results of finished runs as a table.

>>> table = results_table(
...     {
...         "Original": {
...             "clean": {
...                 "ccc_arousal": 0.5,
...                 "ccc_dominance": 0.4,
...                 "ccc_valence": 0.3,
...             }
...         }
...     }
... )
>>> print(table)
| system   |   clean Aro. |   clean Dom. |   clean Val. |
|:---------|-------------:|-------------:|-------------:|
| Original |          0.5 |          0.4 |          0.3 |
"""

import argparse
import json
import os
import sys

import pandas as pd
from ctsl_brain.dataio import ATTRIBUTES, MissingInputError, run_command

__all__ = ["load_results", "results_table"]

# Column names of the results tables, as in the paper.
SHORT_NAMES = {"arousal": "Aro.", "dominance": "Dom.", "valence": "Val."}


def load_results(output_folder):
    """Reads ``test_results.json`` of a run: condition -> statistics."""
    path = os.path.join(output_folder, "test_results.json")
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{path} does not exist: has this run finished its evaluation?"
        )
    with open(path) as fin:
        return json.load(fin)


def results_table(runs, *, digits=3):
    """Markdown table of test CCC: one row per system, one column per condition and attribute.

    Arguments
    ---------
    runs : dict
        System name -> that run's results (condition -> statistics with ``ccc_<attribute>``).
    digits : int
        Decimals shown.

    Returns
    -------
    str
    """
    rows = {}
    for system, results in runs.items():
        rows[system] = {
            f"{condition} {SHORT_NAMES[name]}": round(
                stats[f"ccc_{name}"], digits
            )
            for condition, stats in results.items()
            for name in ATTRIBUTES
        }
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "system"
    return frame.to_markdown()


def main(argv=None):
    """``python -m ctsl_brain.report NAME=OUTPUT_FOLDER ...`` prints the runs' test CCC."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "runs", nargs="+", help="NAME=OUTPUT_FOLDER of a finished run"
    )
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            parser.error(f"{item!r}: expected NAME=OUTPUT_FOLDER")
        runs[name] = load_results(folder)
    print(results_table(runs))


if __name__ == "__main__":
    sys.exit(run_command(main))
