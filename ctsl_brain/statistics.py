"""Model selection and significance testing of the paper's evaluation protocol (section 4.1):
the three best dev checkpoints from non-consecutive epochs, 30 fixed test groups, and a
one-tailed Welch's t-test against a reference system; over several seeds, the same test on
the per-seed means.

>>> select_checkpoints(
...     {1: 0.40, 2: 0.52, 3: 0.50, 4: 0.55, 5: 0.30, 6: 0.45}, 3
... )
[4, 2, 6]
>>> groups = fixed_groups([f"utt{i}" for i in range(10)], n_groups=3, seed=0)
>>> sorted(groups.value_counts().tolist())
[3, 3, 4]
"""

import logging

import numpy as np
import pandas as pd
import scipy.stats
import torch

from .dataio import ATTRIBUTES, DataError
from .losses import concordance_cc

__all__ = [
    "SMALL_GROUP",
    "group_ccc",
    "kept_for_selection",
    "select_checkpoints",
    "seeds_significance",
    "significance",
    "fixed_groups",
    "welch_greater",
]

logger = logging.getLogger(__name__)

# Test groups of fewer utterances than this give noisy per-group CCC values: a
# warning says so.
SMALL_GROUP = 10


def kept_for_selection(k):
    """How many best dev checkpoints to keep so that ``k`` can be selected.

    The ``j``-th pick of :func:`select_checkpoints` is ranked at most
    ``3 (j - 1) + 1``: each earlier pick excludes itself and its neighbours.

    Arguments
    ---------
    k : int
        Number of checkpoints to be selected.

    Returns
    -------
    kept : int
        Number of best checkpoints to keep.

    Example
    -------
    >>> kept_for_selection(3)
    7
    """
    return 3 * (k - 1) + 1


def select_checkpoints(scores, k=3):
    """The ``k`` best epochs by dev score, no two of them consecutive.

    Picked greedily, best first.

    Arguments
    ---------
    scores : dict
        Epoch (int) -> dev score (higher is better).
    k : int
        Number of checkpoints wanted.

    Returns
    -------
    epochs : list of int
        Selected epochs, best first; fewer than ``k`` when the epochs do not
        allow ``k`` non-consecutive ones (e.g. a run of fewer than ``2 k - 1``
        epochs).

    Example
    -------
    >>> select_checkpoints({1: 0.4, 2: 0.6, 3: 0.5}, k=2)
    [2]
    """
    chosen = []
    # Ties go to the earlier epoch, so that the selection does not depend on
    # dict order.
    for epoch in sorted(scores, key=lambda e: (-scores[e], e)):
        if len(chosen) == k:
            break
        if all(abs(epoch - other) > 1 for other in chosen):
            chosen.append(epoch)
    return chosen


def fixed_groups(ids, *, n_groups=30, seed=0):
    """Splits utterance IDs into fixed groups of (almost) equal size.

    The split depends only on the set of IDs and the seed, so it is the same
    for every system and condition that evaluates the same test set. A
    warning gives the figures when a group has fewer than
    :data:`SMALL_GROUP` utterances.

    Arguments
    ---------
    ids : iterable of str
        Utterance IDs of the test set (duplicates count once).
    n_groups : int
        Number of groups (paper: 30).
    seed : int
        Seed of the random split.

    Returns
    -------
    groups : pandas.Series
        ID -> group number (0 .. n_groups - 1), indexed by the sorted IDs.

    Raises
    ------
    ctsl_brain.dataio.DataError
        There are fewer than two IDs per group (a CCC needs two values).
    """
    ids = sorted(set(ids))
    if len(ids) < 2 * n_groups:
        raise DataError(
            f"{len(ids)} test utterances cannot make {n_groups} groups of at least 2 "
            "(CCC needs two values): use a larger test set or fewer groups (--n_groups)"
        )
    smallest = len(ids) // n_groups
    if smallest < SMALL_GROUP:
        logger.warning(
            "%d test utterances make %d groups of %d to %d utterances: a CCC over fewer than "
            "%d utterances is noisy, and so are the significance tests over them; use a larger "
            "test set, or at most %d groups (--n_groups)",
            len(ids),
            n_groups,
            smallest,
            -(-len(ids) // n_groups),
            SMALL_GROUP,
            max(1, len(ids) // SMALL_GROUP),
        )
    order = np.random.default_rng(seed).permutation(len(ids))
    group = np.empty(len(ids), dtype=int)
    for number, members in enumerate(np.array_split(order, n_groups)):
        group[members] = number
    return pd.Series(group, index=pd.Index(ids, name="ID"), name="group")


def group_ccc(predictions, groups):
    """CCC per attribute for each system, condition, checkpoint and test group.

    Arguments
    ---------
    predictions : pandas.DataFrame
        One row per utterance, system, condition and checkpoint, with columns
        ``ID``, ``system``, ``condition``, ``checkpoint``,
        ``<attribute>_pred`` and ``<attribute>_true`` for arousal, dominance
        and valence.
    groups : pandas.Series
        ID -> group, from :func:`fixed_groups`.

    Returns
    -------
    values : pandas.DataFrame
        Columns ``system``, ``condition``, ``checkpoint``, ``group``,
        arousal, dominance, valence (CCC values).

    Raises
    ------
    ctsl_brain.dataio.DataError
        A predicted ID is in no group: the systems were not all evaluated on
        the same test set.
    """
    missing = set(predictions["ID"]) - set(groups.index)
    if missing:
        raise DataError(
            f"{len(missing)} predicted IDs are in no test group (e.g. {sorted(missing)[0]}): "
            "all systems must be evaluated on the same test set"
        )
    frame = predictions.assign(group=predictions["ID"].map(groups).to_numpy())
    pred_cols = [f"{name}_pred" for name in ATTRIBUTES]
    true_cols = [f"{name}_true" for name in ATTRIBUTES]
    rows = []
    keys = ["system", "condition", "checkpoint", "group"]
    for key, part in frame.groupby(keys, sort=False):
        ccc = concordance_cc(
            torch.tensor(part[pred_cols].to_numpy(), dtype=torch.float64),
            torch.tensor(part[true_cols].to_numpy(), dtype=torch.float64),
        )
        rows.append((*key, *ccc.tolist()))
    return pd.DataFrame(rows, columns=[*keys, *ATTRIBUTES])


def welch_greater(values, reference):
    """One-tailed Welch's t-test that ``values`` have the greater mean.

    Arguments
    ---------
    values : array_like
        Values of the system tested (e.g. its CCC per group and checkpoint).
    reference : array_like
        Values of the reference system.

    Returns
    -------
    p_value : float
        p-value of "mean of ``values`` > mean of ``reference``".

    Example
    -------
    >>> round(welch_greater([3.0, 4.0, 5.0], [1.0, 2.0, 3.0]), 3)
    0.035
    """
    result = scipy.stats.ttest_ind(
        values, reference, equal_var=False, alternative="greater"
    )
    return float(result.pvalue)


def _summary(system, condition, attribute, sample):
    """A table row's mean, standard deviation (ddof 1; NaN for one value) and count."""
    return {
        "system": system,
        "condition": condition,
        "attribute": attribute,
        "mean": float(sample.mean()),
        "std": float(sample.std(ddof=1)) if len(sample) > 1 else float("nan"),
        "n": len(sample),
    }


def significance(values, *, references=("Original", "RH", "RM"), alpha=0.05):
    """Mean CCC per system, attribute and condition, tested against references.

    Arguments
    ---------
    values : pandas.DataFrame
        From :func:`group_ccc`.
    references : sequence of str
        Systems each other system is compared with (those present in
        ``values``).
    alpha : float
        Significance level: a system is significantly better when
        ``p <= alpha``.

    Returns
    -------
    table : pandas.DataFrame
        One row per system, condition and attribute: ``mean``, ``std``, ``n``
        (number of values), and for each reference ``p_vs_<reference>`` and
        ``better_than_<reference>`` (NaN and False for the reference itself).
    """
    systems = list(dict.fromkeys(values["system"]))
    references = [ref for ref in references if ref in systems]
    rows = []
    for (system, condition), part in values.groupby(
        ["system", "condition"], sort=False
    ):
        for attribute in ATTRIBUTES:
            sample = part[attribute].to_numpy()
            row = _summary(system, condition, attribute, sample)
            for ref in references:
                p_value = float("nan")
                if ref != system:
                    ref_part = values[
                        (values["system"] == ref)
                        & (values["condition"] == condition)
                    ]
                    p_value = welch_greater(
                        sample, ref_part[attribute].to_numpy()
                    )
                row[f"p_vs_{ref}"] = p_value
                row[f"better_than_{ref}"] = bool(p_value <= alpha)
            rows.append(row)
    return pd.DataFrame(rows)


def seeds_significance(
    tables, *, references=("Original", "RH", "RM"), alpha=0.05
):
    """Table 1 over seeds: per cell, the mean and spread of the per-seed means.

    A system is significantly better than a reference when a one-tailed
    Welch's t-test over its per-seed mean CCCs against the reference's says
    so: the seed, not the test group, is the unit that repeats training.

    Arguments
    ---------
    tables : dict
        Seed -> that seed's Table 1 (from
        :func:`ctsl_brain.statistics.significance`).
    references : sequence of str
        Systems each other system is compared with (those present).
    alpha : float
        Significance level.

    Returns
    -------
    table : pandas.DataFrame
        One row per system, condition and attribute: ``mean`` (over seeds),
        ``std`` (over seeds, ddof 1), ``n`` (seeds), ``seed_means`` (the
        per-seed means, in the order of ``tables``), and for each reference
        ``p_vs_<reference>`` and ``better_than_<reference>``.

    Raises
    ------
    DataError
        When the seeds' tables do not hold the same systems and conditions.
    """
    frames = []
    for seed, table in tables.items():
        frames.append(
            table[["system", "condition", "attribute", "mean"]].assign(
                seed=seed
            )
        )
    cells = {
        seed: set(zip(t["system"], t["condition"], t["attribute"], strict=True))
        for seed, t in tables.items()
    }
    first = next(iter(cells.values()))
    for seed, keys in cells.items():
        if keys != first:
            raise DataError(
                f"seed {seed}: its Table 1 holds other systems or conditions than the "
                "first seed's; run every seed with the same --systems and test sets"
            )
    values = pd.concat(frames, ignore_index=True)
    systems = list(dict.fromkeys(values["system"]))
    references = [ref for ref in references if ref in systems]
    by_cell = {
        key: part["mean"].to_numpy()
        for key, part in values.groupby(
            ["system", "condition", "attribute"], sort=False
        )
    }
    rows = []
    for (system, condition, attribute), sample in by_cell.items():
        row = _summary(system, condition, attribute, sample)
        row["seed_means"] = [round(float(v), 10) for v in sample]
        for ref in references:
            p_value = float("nan")
            if ref != system and len(sample) > 1:
                p_value = welch_greater(
                    sample, by_cell[(ref, condition, attribute)]
                )
            row[f"p_vs_{ref}"] = p_value
            row[f"better_than_{ref}"] = bool(p_value <= alpha)
        rows.append(row)
    return pd.DataFrame(rows)
