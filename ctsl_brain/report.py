"""Test results of finished runs as a table.

Run as::

    python -m ctsl_brain.report NAME=OUTPUT_FOLDER [NAME=OUTPUT_FOLDER ...]

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

from .dataio import ATTRIBUTES, MissingInputError, run_command

__all__ = ["load_results", "results_table"]

# Column names of the results tables, as in the paper.
SHORT_NAMES = {"arousal": "Aro.", "dominance": "Dom.", "valence": "Val."}


def load_results(output_folder):
    """Reads ``test_results.json`` of a run.

    Arguments
    ---------
    output_folder : str
        The run's ``output_folder``.

    Returns
    -------
    results : dict
        Condition -> statistics (``ccc_<attribute>``, ...).

    Raises
    ------
    MissingInputError
        When the run has not written ``test_results.json`` (its evaluation has
        not finished).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> _ = (folder / "test_results.json").write_text(
    ...     '{"clean": {"ccc_valence": 0.3}}'
    ... )
    >>> load_results(str(folder))
    {'clean': {'ccc_valence': 0.3}}
    """
    path = os.path.join(output_folder, "test_results.json")
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{path} does not exist: has this run finished its evaluation?"
        )
    with open(path) as fin:
        return json.load(fin)


def results_table(runs, *, digits=3):
    """Markdown table of test CCC.

    One row per system, one column per condition and attribute.

    Arguments
    ---------
    runs : dict
        System name -> that run's results (condition -> statistics with
        ``ccc_<attribute>``), as :func:`load_results` reads them.
    digits : int
        Decimals shown.

    Returns
    -------
    table : str
        The table in Markdown (an example is in the module's docstring).
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
    """Prints the test CCC of finished runs as a Markdown table.

    ``python -m ctsl_brain.report NAME=OUTPUT_FOLDER ...``: each ``NAME`` is a
    row of the table, its ``OUTPUT_FOLDER`` the run's ``output_folder``.

    Arguments
    ---------
    argv : list of str or None
        The command line's arguments; None: ``sys.argv[1:]``.
    """
    parser = argparse.ArgumentParser(
        description="``python -m ctsl_brain.report NAME=OUTPUT_FOLDER ...`` "
        "prints the runs' test CCC."
    )
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
