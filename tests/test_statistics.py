"""The evaluation protocol of section 4.1 against independent references: Welch's t-test by its
formula, CCC by audmetric, the selection rule by exhaustive simulation."""

import itertools
import logging
import math

import audmetric
import numpy as np
import pandas as pd
import pytest
import scipy.stats
from ctsl_brain.statistics import (
    fixed_groups,
    group_ccc,
    kept_for_selection,
    seeds_significance,
    select_checkpoints,
    significance,
    welch_greater,
)

# Fixed inputs: 90 values each, as in the paper (3 checkpoints x 30 groups).
RNG = np.random.default_rng(7)
BETTER = RNG.normal(0.35, 0.05, 90)
WORSE = RNG.normal(0.30, 0.08, 90)


def _welch_by_formula(a, b):
    """Welch (1947): t with the Welch-Satterthwaite degrees of freedom, upper tail."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return scipy.stats.t.sf(t, df)


@pytest.mark.parametrize(
    "a, b", [(BETTER, WORSE), (WORSE, BETTER), (BETTER[:20], WORSE)]
)
def test_welch_matches_its_formula(a, b):
    assert welch_greater(a, b) == pytest.approx(
        _welch_by_formula(a, b), rel=1e-10
    )


def test_welch_is_one_tailed():
    p_greater = welch_greater(BETTER, WORSE)
    two_sided = scipy.stats.ttest_ind(BETTER, WORSE, equal_var=False).pvalue
    assert p_greater == pytest.approx(two_sided / 2)
    assert welch_greater(WORSE, BETTER) == pytest.approx(1 - p_greater)


def _values(system_means):
    rows = []
    for system, (mean, spread) in system_means.items():
        rng = np.random.default_rng(len(system))
        for checkpoint, group in itertools.product((1, 3, 5), range(30)):
            noise = rng.normal(0, spread, 3)
            rows.append((system, "0dB", checkpoint, group, *(mean + noise)))
    return pd.DataFrame(
        rows,
        columns=[
            "system",
            "condition",
            "checkpoint",
            "group",
            "arousal",
            "dominance",
            "valence",
        ],
    )


def test_significance_marks_only_p_at_most_alpha():
    values = _values(
        {"Original": (0.30, 0.05), "RH": (0.31, 0.05), "RM+TL+CL": (0.40, 0.05)}
    )
    table = significance(values, references=("Original", "RH", "RM"))
    assert "p_vs_RM" not in table  # no RM among the systems
    assert set(table["n"]) == {90}
    for _, row in table.iterrows():
        for ref in ("Original", "RH"):
            if row["system"] == ref:
                assert (
                    math.isnan(row[f"p_vs_{ref}"])
                    and not row[f"better_than_{ref}"]
                )
                continue
            a = values.loc[values["system"] == row["system"], row["attribute"]]
            b = values.loc[values["system"] == ref, row["attribute"]]
            p_value = _welch_by_formula(a.to_numpy(), b.to_numpy())
            assert row[f"p_vs_{ref}"] == pytest.approx(p_value, rel=1e-9)
            assert row[f"better_than_{ref}"] == (p_value <= 0.05)
    best = table[table["system"] == "RM+TL+CL"]
    assert best["better_than_Original"].all() and best["better_than_RH"].all()
    rh = table[table["system"] == "RH"]
    assert not rh["better_than_Original"].any()


def test_group_ccc_matches_audmetric():
    rng = np.random.default_rng(3)
    ids = [f"utt{i:03d}" for i in range(90)]
    groups = fixed_groups(ids, n_groups=30, seed=11)
    true = rng.uniform(1, 7, (90, 3))
    pred = true + rng.normal(0, 1.0, (90, 3))
    frame = pd.DataFrame(
        {
            "ID": ids,
            "system": "RM",
            "condition": "clean",
            "checkpoint": 4,
            **{
                f"{n}_pred": pred[:, i]
                for i, n in enumerate(("arousal", "dominance", "valence"))
            },
            **{
                f"{n}_true": true[:, i]
                for i, n in enumerate(("arousal", "dominance", "valence"))
            },
        }
    )
    values = group_ccc(frame, groups)
    assert len(values) == 30
    for _, row in values.iterrows():
        members = groups.index[groups == row["group"]]
        part = frame.set_index("ID").loc[members]
        for name in ("arousal", "dominance", "valence"):
            expected = audmetric.concordance_cc(
                part[f"{name}_true"], part[f"{name}_pred"]
            )
            assert row[name] == pytest.approx(expected, abs=1e-9)


def test_group_ccc_refuses_an_id_outside_the_groups():
    groups = fixed_groups([f"u{i}" for i in range(4)], n_groups=2)
    frame = pd.DataFrame(
        {"ID": ["u9"], "system": "RM", "condition": "clean", "checkpoint": 1}
        | {
            f"{n}_{k}": [4.0]
            for n in ("arousal", "dominance", "valence")
            for k in ("pred", "true")
        }
    )
    with pytest.raises(ValueError, match="u9"):
        group_ccc(frame, groups)


# ----- The fixed 30-way split -----


def test_groups_are_fixed_balanced_and_order_independent():
    ids = [f"test_{i:05d}" for i in range(247)]
    groups = fixed_groups(ids, n_groups=30, seed=0)
    assert sorted(set(groups)) == list(range(30))
    sizes = groups.value_counts()
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 247
    shuffled = (
        list(reversed(ids)) + ids[:10]
    )  # order and repeats (several conditions) ignored
    assert groups.equals(fixed_groups(shuffled, n_groups=30, seed=0))
    assert not groups.equals(fixed_groups(ids, n_groups=30, seed=1))
    # Not the sorted order cut into blocks: neighbours in ID order are spread over groups.
    assert groups.iloc[:9].nunique() > 3


def test_groups_need_two_utterances_each():
    with pytest.raises(ValueError, match="59 test utterances"):
        fixed_groups([str(i) for i in range(59)], n_groups=30)


def test_groups_of_fewer_than_ten_utterances_are_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        fixed_groups([str(i) for i in range(111)], n_groups=30)
    assert (
        "111 test utterances make 30 groups of 3 to 4 utterances" in caplog.text
    )
    assert "at most 11 groups (--n_groups)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        fixed_groups([str(i) for i in range(300)], n_groups=30)
    assert caplog.text == ""


# ----- The non-consecutive selection rule -----


@pytest.mark.parametrize(
    "scores, expected",
    [
        ({1: 0.1, 2: 0.9, 3: 0.8, 4: 0.7, 5: 0.2, 6: 0.6}, [2, 4, 6]),
        ({1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1}, [1, 3, 5]),
        (
            {1: 0.3, 2: 0.9, 3: 0.8},
            [2],
        ),  # neighbours of the best are never taken
        (
            {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5},
            [1, 3, 5],
        ),  # ties go to the earlier epoch
        ({7: 0.4}, [7]),
        ({}, []),
    ],
)
def test_selection_examples(scores, expected):
    assert select_checkpoints(scores, 3) == expected


def _best_nonconsecutive_by_search(scores, k):
    """The same greedy rule written as a search: the best epoch whose neighbours are free."""
    chosen, free = [], dict(scores)
    while free and len(chosen) < k:
        best = max(free, key=lambda e: (free[e], -e))
        chosen.append(best)
        for epoch in (best - 1, best, best + 1):
            free.pop(epoch, None)
    return chosen


def test_selection_from_kept_checkpoints_equals_selection_from_all_epochs():
    """Keeping the best kept_for_selection(k) checkpoints after every epoch (as the
    checkpointer does) never loses a checkpoint the final selection needs."""
    rng = np.random.default_rng(0)
    for _ in range(3000):
        n_epochs = int(rng.integers(1, 16))
        scores = {
            e: float(rng.choice([0.1, 0.2, 0.3, 0.4, rng.random()]))
            for e in range(1, 21)
        }
        scores = {e: scores[e] for e in range(1, n_epochs + 1)}
        kept = {}
        for epoch, score in scores.items():
            kept[epoch] = score
            ranked = sorted(kept, key=lambda e: (-kept[e], e))
            kept = {e: kept[e] for e in ranked[: kept_for_selection(3)]}
        assert select_checkpoints(kept, 3) == select_checkpoints(scores, 3)
        assert select_checkpoints(scores, 3) == _best_nonconsecutive_by_search(
            scores, 3
        )
        chosen = select_checkpoints(scores, 3)
        assert all(abs(a - b) > 1 for a, b in itertools.combinations(chosen, 2))
        if (
            n_epochs >= 7
        ):  # then three non-consecutive epochs always exist and greedy finds them
            assert len(chosen) == 3


def test_significance_at_p_equal_to_alpha():
    """The paper asserts significance at p <= 0.05: the boundary itself counts."""
    values = _values({"Original": (0.30, 0.05), "RM": (0.32, 0.05)})
    p_value = significance(values, references=("Original",)).iloc[-1][
        "p_vs_Original"
    ]
    at = significance(values, references=("Original",), alpha=p_value).iloc[-1]
    below = significance(
        values, references=("Original",), alpha=p_value * 0.999
    ).iloc[-1]
    assert at["better_than_Original"] and not below["better_than_Original"]


def _seed_table(seed, means):
    """A seed's Table 1: ``means`` maps system -> (clean, 0dB) mean CCC, all attributes."""
    rows = []
    for system, (clean, noisy) in means.items():
        for condition, value in (("clean", clean), ("0dB", noisy)):
            for k, attribute in enumerate(("arousal", "dominance", "valence")):
                rows.append(
                    {
                        "system": system,
                        "condition": condition,
                        "attribute": attribute,
                        "mean": value + 0.01 * k + 0.001 * seed,
                        "std": 0.05,
                        "n": 90,
                    }
                )
    return pd.DataFrame(rows)


SEED_MEANS = {
    1: {"Original": (0.80, 0.45), "RM": (0.74, 0.69), "RM+TL+CL": (0.76, 0.72)},
    2: {"Original": (0.82, 0.49), "RM": (0.72, 0.63), "RM+TL+CL": (0.75, 0.70)},
    3: {"Original": (0.81, 0.47), "RM": (0.75, 0.70), "RM+TL+CL": (0.77, 0.69)},
}


def test_seeds_significance_is_welch_over_the_per_seed_means():
    tables = {seed: _seed_table(seed, m) for seed, m in SEED_MEANS.items()}
    table = seeds_significance(tables)
    assert set(table["n"]) == {3} and "p_vs_RH" not in table
    cells = {
        (r.system, r.condition, r.attribute): r for r in table.itertuples()
    }
    for (system, condition, attribute), row in cells.items():
        k = ("arousal", "dominance", "valence").index(attribute)
        column = 0 if condition == "clean" else 1
        per_seed = np.array(
            [
                SEED_MEANS[s][system][column] + 0.01 * k + 0.001 * s
                for s in SEED_MEANS
            ]
        )
        assert row.seed_means == pytest.approx(per_seed.tolist())
        assert row.mean == pytest.approx(per_seed.mean())
        assert row.std == pytest.approx(per_seed.std(ddof=1))
        for ref in ("Original", "RM"):
            p_value = getattr(row, f"p_vs_{ref}")
            if ref == system:
                assert math.isnan(p_value)
                continue
            reference = np.array(
                [
                    SEED_MEANS[s][ref][column] + 0.01 * k + 0.001 * s
                    for s in SEED_MEANS
                ]
            )
            expected = _welch_by_formula(per_seed, reference)
            assert p_value == pytest.approx(expected, rel=1e-9)
            assert getattr(row, f"better_than_{ref}") == (expected <= 0.05)
    assert cells[("RM+TL+CL", "0dB", "arousal")].better_than_Original
    assert not cells[("RM+TL+CL", "clean", "arousal")].better_than_Original


def test_seeds_with_other_systems_are_refused():
    from ctsl_brain.dataio import DataError

    tables = {seed: _seed_table(seed, m) for seed, m in SEED_MEANS.items()}
    tables[3] = tables[3][tables[3]["system"] != "RM"]
    with pytest.raises(DataError, match="seed 3"):
        seeds_significance(tables)
