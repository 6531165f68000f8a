"""The paper's study from finished runs: Table 1 (mean CCC per system, condition and attribute,
with Welch t-tests), Table 2 (the embedding analysis of section 4.2), CCC against SNR and every
system's predictions (the files are listed in docs/study.md).
"""

import io
import json
import os

import numpy as np
import pandas as pd
import torch

from .dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    remove_stale_staging,
    write_bytes_atomic,
    write_text_atomic,
)
from .losses import info_nce, negative_mask, transfer_loss
from .report import SHORT_NAMES
from .statistics import (
    fixed_groups,
    group_ccc,
    seeds_significance,
    significance,
)

__all__ = [
    "FIELD_FOLDER_MARKER",
    "FIELD_SYSTEM",
    "MARKERS",
    "SYSTEMS",
    "analyse_seeds",
    "analyse_study",
    "gain_kept",
    "embedding_analysis",
    "plot_ccc_vs_snr",
    "table1_markdown",
]

# The method adapted from field recordings rather than noise-only recordings.
FIELD_SYSTEM = "RM+TL+CL (field)"
# Stands for the study's field folder in the overrides of SYSTEMS.
FIELD_FOLDER_MARKER = "<field_folder>"
# The paper's systems (section 3.3), and the method adapted from field recordings: the
# hparams file and the overrides of each.
SYSTEMS = {
    "Original": ("hparams/teacher.yaml", []),
    "RH": (
        "hparams/student.yaml",
        [
            "--experiment_name",
            "rh",
            "--freeze_encoder",
            "True",
            "--lambda_tl",
            "0",
        ]
        + ["--lambda_cl", "0"],
    ),
    "RM": (
        "hparams/student.yaml",
        ["--experiment_name", "rm", "--lambda_tl", "0", "--lambda_cl", "0"],
    ),
    "RM+TL": (
        "hparams/student.yaml",
        ["--experiment_name", "rm_tl", "--lambda_cl", "0"],
    ),
    "RM+CL": (
        "hparams/student.yaml",
        ["--experiment_name", "rm_cl", "--lambda_tl", "0"],
    ),
    "RM+TL+CL": ("hparams/student.yaml", ["--experiment_name", "rm_tl_cl"]),
    # The method adapted from recordings of the place with people talking in them instead
    # of noise-only recordings (study.py puts its field folder in place of the marker).
    "RM+TL+CL (field)": (
        "hparams/student.yaml",
        [
            "--experiment_name",
            "rm_tl_cl_field",
            "--field_folder",
            FIELD_FOLDER_MARKER,
        ],
    ),
}

# The arguments of negative_mask among those of info_nce.
MASK_SETTINGS = ("margin", "rule", "boundary", "tolerance")

# Table 1's markers: significantly better than Original, RH, RM.
MARKERS = {"Original": "*", "RH": "†", "RM": "‡"}


def _escape(marker):
    """A literal ``*`` in Markdown (next to bold text it reads as emphasis)."""
    return marker.replace("*", "\\*")


def _condition_order(conditions):
    """Orders test conditions for tables and plots.

    clean first, then decreasing SNR (10dB, 5dB, 0dB), then any other
    condition.
    """

    def key(name):
        """The sort key of a condition.

        Arguments
        ---------
        name : str
            The condition, e.g. ``clean`` or ``10dB``.

        Returns
        -------
        key : tuple
            Its rank, minus its SNR, and its name.
        """
        if name == "clean":
            return (0, 0.0, name)
        if name.endswith("dB"):
            try:
                return (1, -float(name[:-2]), name)
            except ValueError:
                pass
        return (2, 0.0, name)

    return sorted(conditions, key=key)


def table1_markdown(table, *, digits=3, seeds=None):
    """Table 1 in Markdown.

    One row per system, mean CCC per condition and attribute.

    A marker follows each value significantly better than a reference system
    (``*`` Original, ``†`` RH, ``‡`` RM); the best value of each column is bold.

    Arguments
    ---------
    table : pandas.DataFrame
        From :func:`ctsl_brain.statistics.significance`, or from
        :func:`ctsl_brain.statistics.seeds_significance` with ``seeds``.
    digits : int
        Decimals shown.
    seeds : list or None
        The seeds of a table over seeds: each cell then also gives the
        standard deviation over seeds.

    Returns
    -------
    markdown : str
        The table, then a line that explains its markers.
    """
    systems = list(dict.fromkeys(table["system"]))
    conditions = _condition_order(dict.fromkeys(table["condition"]))
    header = ["system"] + [
        f"{c} {SHORT_NAMES[a]}" for c in conditions for a in ATTRIBUTES
    ]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    indexed = table.set_index(["system", "condition", "attribute"])
    best = table.groupby(["condition", "attribute"])["mean"].max()
    for system in systems:
        cells = [system]
        for condition in conditions:
            for attribute in ATTRIBUTES:
                row = indexed.loc[(system, condition, attribute)]
                text = f"{row['mean']:.{digits}f}"
                if np.isclose(row["mean"], best[(condition, attribute)]):
                    text = f"**{text}**"
                if seeds is not None:
                    text += f" ± {row['std']:.{digits}f}"
                text += "".join(
                    _escape(marker)
                    for ref, marker in MARKERS.items()
                    if bool(row.get(f"better_than_{ref}", False))
                )
                cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    n_values = sorted(set(table["n"]))
    lines.append("")
    if seeds is not None:
        lines.append(
            f"Mean over seeds {', '.join(str(s) for s in seeds)} of each seed's mean CCC "
            "(checkpoints x test groups) ± standard deviation over seeds; "
            + ", ".join(
                f"{_escape(marker)}: better than {ref}"
                for ref, marker in MARKERS.items()
            )
            + " (one-tailed Welch's t-test over the per-seed means, p <= 0.05); "
            "bold: best per column."
        )
        return "\n".join(lines)
    lines.append(
        "Mean CCC over "
        + "/".join(str(n) for n in n_values)
        + " values (checkpoints x test groups); "
        + ", ".join(
            f"{_escape(marker)}: better than {ref}"
            for ref, marker in MARKERS.items()
        )
        + " (one-tailed Welch's t-test, p <= 0.05); bold: best per column."
    )
    return "\n".join(lines)


def plot_ccc_vs_snr(table, path, *, error_bars=False):
    """Plots CCC against test condition (clean, then decreasing SNR).

    One panel per attribute, one line per system. The figure is written
    atomically.

    Arguments
    ---------
    table : pandas.DataFrame
        From :func:`ctsl_brain.statistics.significance` (columns ``system``,
        ``condition``, ``attribute``, ``mean``).
    path : str
        The PNG file to write.
    error_bars : bool
        Bars of one ``std`` each side (a table over seeds: the spread over
        seeds).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = _condition_order(dict.fromkeys(table["condition"]))
    figure, axes = plt.subplots(
        1, len(ATTRIBUTES), figsize=(12, 3.8), sharey=True
    )
    for axis, attribute in zip(axes, ATTRIBUTES, strict=True):
        part = table[table["attribute"] == attribute]
        for system in dict.fromkeys(part["system"]):
            means = part[part["system"] == system].set_index("condition")[
                "mean"
            ]
            errors = None
            if error_bars:
                spread = part[part["system"] == system].set_index("condition")[
                    "std"
                ]
                errors = [spread.get(c, np.nan) for c in conditions]
            axis.errorbar(
                range(len(conditions)),
                [means.get(c, np.nan) for c in conditions],
                yerr=errors,
                marker="o",
                capsize=3 if error_bars else 0,
                label=system,
                linewidth=2.2 if system == "RM+TL+CL" else 1.2,
            )
        axis.set_xticks(range(len(conditions)), conditions)
        axis.set_title(attribute)
        axis.set_xlabel("test condition")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(
        "CCC (mean over seeds, ± sd)"
        if error_bars
        else "CCC (mean over checkpoints x groups)"
    )
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def embedding_analysis(
    clean, noisy, labels, *, group_size=32, seed=0, infonce=None
):
    """Table 2's measures between clean and noisy embeddings.

    The clean embeddings are the reference's, the noisy ones a system's.

    The utterances are shuffled (seeded) into groups of ``group_size``
    clean/noisy pairs, as in training: per group, RMSE over all elements (the
    transfer loss) and InfoNCE with the clean embedding as positive and other
    noisy embeddings with different labels as negatives. Groups where no
    utterance has a negative are left out of the InfoNCE mean.

    Arguments
    ---------
    clean : torch.Tensor
        ``[N, D]`` reference embeddings of the clean utterances.
    noisy : torch.Tensor
        ``[N, D]`` embeddings of the same utterances, noisy, in the same order.
    labels : torch.Tensor
        ``[N, 3]`` on the corpus' scale (the InfoNCE margin is on that scale).
    group_size : int
        Clean/noisy pairs per group.
    seed : int
        The seed of the shuffle.
    infonce : dict or None
        Keyword arguments of :func:`ctsl_brain.losses.info_nce` (the run's, as
        recorded in its ``evaluation.json``); None: the paper's margin of 0.5
        and the function's defaults.

    Returns
    -------
    measures : dict
        ``rmse`` and ``infonce`` (means over groups), ``cosine`` (mean over
        utterances), ``groups`` (number of groups with negatives).

    Example
    -------
    >>> clean = torch.eye(4)
    >>> labels = torch.tensor([[1.0] * 3, [2.0] * 3, [3.0] * 3, [4.0] * 3])
    >>> measures = embedding_analysis(clean, 2 * clean, labels)
    >>> measures["rmse"], measures["cosine"], measures["groups"]
    (0.5, 1.0, 1)
    """
    infonce = {"margin": 0.5, **(infonce or {})}
    clean, noisy, labels = clean.double(), noisy.double(), labels.double()
    order = torch.as_tensor(np.random.default_rng(seed).permutation(len(clean)))
    rmse, group_infonce = [], []
    for start in range(0, len(order), group_size):
        members = order[start : start + group_size]
        if len(members) < 2:
            continue
        rmse.append(float(transfer_loss(clean[members], noisy[members])))
        mask_settings = {k: infonce[k] for k in infonce if k in MASK_SETTINGS}
        if negative_mask(labels[members], **mask_settings).any():
            group_infonce.append(
                float(
                    info_nce(
                        noisy[members],
                        clean[members],
                        labels[members],
                        **infonce,
                    )
                )
            )
    cosine = torch.nn.functional.cosine_similarity(clean, noisy, dim=-1)
    return {
        "rmse": float(np.mean(rmse)),
        "cosine": float(cosine.mean()),
        "infonce": float(np.mean(group_infonce))
        if group_infonce
        else float("nan"),
        "groups": len(group_infonce),
    }


def _load_embeddings(run_folder, condition):
    path = os.path.join(run_folder, "embeddings", f"dev_{condition}.pt")
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{path} does not exist: run train.py for this system again to finish its evaluation"
        )
    content = torch.load(path)
    order = np.argsort(content["ids"], kind="stable")
    return (
        [content["ids"][i] for i in order],
        content["embeddings"][order],
        content["labels"][order],
    )


def _read_predictions(system, run_folder):
    path = os.path.join(run_folder, "predictions.csv")
    if not os.path.isfile(path):
        raise MissingInputError(
            f"{path} does not exist: the {system} run has not finished its evaluation; "
            "run the study again to finish it"
        )
    frame = pd.read_csv(path, dtype={"ID": str, "condition": str})
    frame.insert(1, "system", system)
    return frame


def _write_table(frame, folder, name, markdown):
    write_text_atomic(
        os.path.join(folder, f"{name}.csv"), frame.to_csv(index=False)
    )
    write_text_atomic(
        os.path.join(folder, f"{name}.json"),
        json.dumps(json.loads(frame.to_json(orient="records")), indent=2),
    )
    write_text_atomic(os.path.join(folder, f"{name}.md"), markdown + "\n")


def analyse_study(
    runs,
    study_folder,
    *,
    n_groups=30,
    group_seed=0,
    alpha=0.05,
    embedding_group_size=32,
    infonce=None,
):
    """Writes the study's tables, figure and predictions from finished runs.

    Arguments
    ---------
    runs : dict
        System name -> output folder of its finished ``train.py`` run;
        ``Original`` (the teacher) must be among them, as the reference of the
        embedding analysis.
    study_folder : str
        Where the outputs go (created).
    n_groups : int
        Groups of the fixed split of the test set.
    group_seed : int
        Seed of that split, and of the embedding analysis' shuffle.
    alpha : float
        Significance level.
    embedding_group_size : int
        Clean/noisy pairs per group of the embedding analysis.
    infonce : dict or None
        Its InfoNCE settings, as in training (see :func:`embedding_analysis`).

    Returns
    -------
    outputs : dict
        ``table1`` and ``table2`` (DataFrames) and ``files`` (paths written).

    Raises
    ------
    MissingInputError
        When a run has not finished its evaluation (no ``predictions.csv`` or
        dev embeddings).
    DataError
        When a system's dev utterances differ from Original's.
    """
    os.makedirs(study_folder, exist_ok=True)
    remove_stale_staging(study_folder)
    predictions = pd.concat(
        [_read_predictions(system, folder) for system, folder in runs.items()],
        ignore_index=True,
    )
    groups = fixed_groups(
        predictions.loc[predictions["condition"] == "clean", "ID"],
        n_groups=n_groups,
        seed=group_seed,
    )
    values = group_ccc(predictions, groups)
    table1 = significance(values, alpha=alpha)
    files = {}
    files["predictions"] = os.path.join(study_folder, "predictions.csv")
    write_text_atomic(files["predictions"], predictions.to_csv(index=False))
    files["group_ccc"] = os.path.join(study_folder, "group_ccc.csv")
    write_text_atomic(files["group_ccc"], values.to_csv(index=False))
    _write_table(table1, study_folder, "table1", table1_markdown(table1))
    files["figure"] = os.path.join(study_folder, "ccc_vs_snr.png")
    plot_ccc_vs_snr(table1, files["figure"])

    reference = runs["Original"]
    ref_ids, clean, labels = _load_embeddings(reference, "clean")
    with open(os.path.join(reference, "evaluation.json")) as fin:
        dev_conditions = json.load(fin)["dev_conditions"]
    rows = []
    for system, folder in runs.items():
        for condition in _condition_order(dev_conditions):
            ids, noisy, _ = _load_embeddings(folder, condition)
            if ids != ref_ids:
                raise DataError(
                    f"{system}: the dev utterances of condition {condition} differ from "
                    "Original's clean dev set; run every system on the same manifests"
                )
            measures = embedding_analysis(
                clean,
                noisy,
                labels,
                group_size=embedding_group_size,
                seed=group_seed,
                infonce=infonce,
            )
            rows.append({"system": system, "condition": condition, **measures})
    table2 = pd.DataFrame(rows)
    wide = table2.pivot(
        index="system",
        columns="condition",
        values=["rmse", "cosine", "infonce"],
    )
    wide = wide.reindex(index=list(runs)).reindex(
        columns=[
            (m, c)
            for c in _condition_order(dev_conditions)
            for m in ("rmse", "cosine", "infonce")
        ]
    )
    wide.columns = [f"{c} {m}" for m, c in wide.columns]
    markdown = wide.round(4).to_markdown() + (
        "\n\nBetween Original's clean dev embeddings and each system's embeddings of the same "
        f"utterances in each condition; InfoNCE over groups of {embedding_group_size} pairs."
    )
    _write_table(table2, study_folder, "table2", markdown)
    for name in ("table1", "table2"):
        for ext in ("md", "csv", "json"):
            files[f"{name}_{ext}"] = os.path.join(study_folder, f"{name}.{ext}")
    return {"table1": table1, "table2": table2, "files": files}


def gain_kept(tables, system, *, reference="RM+TL+CL", condition="0dB"):
    """The share of ``reference``'s gain over Original that ``system`` keeps, per seed.

    Arguments
    ---------
    tables : dict
        Seed -> that seed's Table 1 (from
        :func:`ctsl_brain.statistics.significance`).
    system : str
        The system whose gain is measured, e.g. ``RM+TL+CL (field)``.
    reference : str
        The system whose gain is the whole.
    condition : str
        The test condition.

    Returns
    -------
    shares : pandas.DataFrame
        One row per seed and attribute: ``Original``, ``reference``,
        ``system`` (mean CCC) and ``kept``, ``(system - Original) /
        (reference - Original)``.
    """
    rows = []
    for seed, table in tables.items():
        cells = table[table["condition"] == condition].set_index(
            ["system", "attribute"]
        )["mean"]
        for attribute in ATTRIBUTES:
            original = cells[("Original", attribute)]
            whole = cells[(reference, attribute)] - original
            part = cells[(system, attribute)] - original
            rows.append(
                {
                    "seed": seed,
                    "attribute": attribute,
                    "Original": original,
                    reference: cells[(reference, attribute)],
                    system: cells[(system, attribute)],
                    "kept": part / whole if whole != 0 else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def analyse_seeds(study_folders, out_folder, *, alpha=0.05):
    """Writes Table 1 over seeds and its figure from the seeds' finished studies.

    Arguments
    ---------
    study_folders : dict
        Seed -> that seed's study folder (holding its ``table1.csv``).
    out_folder : str
        Where the outputs go (created): ``table1.{md,csv,json}``,
        ``ccc_vs_snr.png`` with error bars over seeds and, when the study
        holds the field system, ``field_gain.{md,csv,json}``.
    alpha : float
        Significance level.

    Returns
    -------
    outputs : dict
        ``table1`` (DataFrame), ``field_gain`` (DataFrame or None) and
        ``files`` (paths written).

    Raises
    ------
    MissingInputError
        When a seed's study has no ``table1.csv``.
    """
    tables = {}
    for seed, folder in study_folders.items():
        path = os.path.join(folder, "table1.csv")
        if not os.path.isfile(path):
            raise MissingInputError(
                f"seed {seed}: {path} is missing; run the study of that seed first"
            )
        tables[seed] = pd.read_csv(path)
    os.makedirs(out_folder, exist_ok=True)
    table = seeds_significance(tables, alpha=alpha)
    seeds = list(tables)
    markdown = table1_markdown(table, seeds=seeds)
    frame = table.assign(seed_means=table["seed_means"].map(json.dumps))
    _write_table(frame, out_folder, "table1", markdown)
    files = {
        f"table1_{ext}": os.path.join(out_folder, f"table1.{ext}")
        for ext in ("md", "csv", "json")
    }
    files["figure"] = os.path.join(out_folder, "ccc_vs_snr.png")
    plot_ccc_vs_snr(table, files["figure"], error_bars=True)
    field = None
    systems = set(table["system"])
    if {"Original", "RM+TL+CL", FIELD_SYSTEM} <= systems:
        field = gain_kept(tables, FIELD_SYSTEM)
        summary = field.groupby("attribute", sort=False)["kept"].agg(
            ["mean", "std"]
        )
        lines = [
            f"| seed | {' | '.join(ATTRIBUTES)} |",
            "|---:|" + "---:|" * len(ATTRIBUTES),
        ]
        for seed in seeds:
            kept = field[field["seed"] == seed].set_index("attribute")["kept"]
            lines.append(
                f"| {seed} | "
                + " | ".join(f"{kept[a]:.0%}" for a in ATTRIBUTES)
                + " |"
            )
        lines.append(
            "| mean ± sd | "
            + " | ".join(
                f"{summary.loc[a, 'mean']:.0%} ± {summary.loc[a, 'std']:.0%}"
                for a in ATTRIBUTES
            )
            + " |"
        )
        lines += [
            "",
            f"Share of RM+TL+CL's 0 dB gain over Original that {FIELD_SYSTEM} keeps: "
            f"(field - Original) / (RM+TL+CL - Original), per seed.",
        ]
        _write_table(field, out_folder, "field_gain", "\n".join(lines))
        for ext in ("md", "csv", "json"):
            files[f"field_gain_{ext}"] = os.path.join(
                out_folder, f"field_gain.{ext}"
            )
    return {"table1": table, "field_gain": field, "files": files}
