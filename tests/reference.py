"""Independent references for the losses, written from the paper with loops in float64.

They share no code with ``ctsl_brain``: CCC comes from audmetric, everything else is spelled out
utterance by utterance, so that a test comparing the library (or the Brain) with them fails when
the library's wiring or formulas change.
"""

import math

import audmetric
import numpy as np


def _array(x):
    """A float64 numpy array from a tensor or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def ccc_loss(prediction, target):
    """Equation 1: the sum over the attributes of 1 - CCC (audmetric's CCC)."""
    prediction, target = _array(prediction), _array(target)
    return sum(
        1.0 - audmetric.concordance_cc(target[:, a], prediction[:, a])
        for a in range(target.shape[1])
    )


def transfer_rmse(teacher, student, form):
    """Equation 2. ``batch``: one RMSE over every element; ``utterance``: the mean over
    utterances of each one's RMSE."""
    teacher, student = _array(teacher), _array(student)
    squares = [
        [(t - s) ** 2 for t, s in zip(row_t, row_s, strict=True)]
        for row_t, row_s in zip(teacher, student, strict=True)
    ]
    if form == "batch":
        return math.sqrt(sum(sum(row) for row in squares) / teacher.size)
    if form == "utterance":
        return sum(math.sqrt(sum(row) / len(row)) for row in squares) / len(
            squares
        )
    raise ValueError(form)


def is_negative(label_i, label_j, margin, rule, boundary, tolerance):
    """Section 3.3: do two utterances' labels differ enough to make a negative pair?"""
    verdicts = []
    for a, b in zip(label_i, label_j, strict=True):
        gap = abs(float(a) - float(b))
        if abs(gap - margin) <= tolerance:
            verdicts.append(
                boundary == "at_least"
            )  # equal to the margin, up to rounding
        else:
            verdicts.append(gap > margin)
    return all(verdicts) if rule == "all" else any(verdicts)


def info_nce(
    query,
    positive,
    labels,
    *,
    margin,
    rule,
    boundary,
    tolerance,
    temperature,
    denominator,
):
    """Equation 3 query by query: ``-log(exp(cos(q_i, p_i) / tau) / D_i)``, ``D_i`` the sum of
    ``exp(cos(q_i, q_j) / tau)`` over the negatives ``j`` of ``i`` (``denominator="negatives"``)
    plus the positive's term (``"with_positive"``); the mean over the queries that have a
    negative, 0 if none has."""
    q, p, y = _array(query), _array(positive), _array(labels)

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    losses = []
    for i in range(len(q)):
        negatives = [
            j
            for j in range(len(q))
            if j != i
            and is_negative(y[i], y[j], margin, rule, boundary, tolerance)
        ]
        if not negatives:
            continue
        numerator = math.exp(cos(q[i], p[i]) / temperature)
        total = sum(math.exp(cos(q[i], q[j]) / temperature) for j in negatives)
        if denominator == "with_positive":
            total += numerator
        elif denominator != "negatives":
            raise ValueError(denominator)
        losses.append(-math.log(numerator / total))
    return sum(losses) / len(losses) if losses else 0.0


def student_objective(prediction, labels, student, teacher, settings):
    """Equation 4, ``L_CCC + lambda_TL L_TL + lambda_CL L_CL``, and each of its terms.

    Arguments
    ---------
    prediction : array-like
        ``[N, 3]`` the head's output, on the unit scale the model is trained on.
    labels : array-like
        ``[N, 3]`` labels on the corpus' scale (``label_min`` to ``label_max``).
    student, teacher : array-like or None
        ``[N, D]`` the student's noisy and the teacher's clean embeddings; ``teacher`` None
        for the teacher stage, whose loss is L_CCC alone.
    settings : dict
        The stage's YAML values (``label_min``, ``label_max``, and for the student
        ``lambda_tl``, ``lambda_cl``, ``transfer_rmse``, ``negative_margin``,
        ``negative_rule``, ``negative_boundary``, ``negative_margin_tolerance``,
        ``temperature``, ``infonce_denominator``).

    Returns
    -------
    dict
        ``loss`` and the terms ``ccc_loss`` (and ``tl_loss``, ``cl_loss`` with a teacher).
    """
    labels = _array(labels)
    low, high = settings["label_min"], settings["label_max"]
    unit = np.array(
        [[(value - low) / (high - low) for value in row] for row in labels]
    )
    terms = {"ccc_loss": ccc_loss(prediction, unit)}
    if teacher is None:
        return {**terms, "loss": terms["ccc_loss"]}
    terms["tl_loss"] = transfer_rmse(
        teacher, student, settings["transfer_rmse"]
    )
    terms["cl_loss"] = info_nce(
        student,
        teacher,
        labels,
        margin=settings["negative_margin"],
        rule=settings["negative_rule"],
        boundary=settings["negative_boundary"],
        tolerance=settings["negative_margin_tolerance"],
        temperature=settings["temperature"],
        denominator=settings["infonce_denominator"],
    )
    loss = (
        terms["ccc_loss"]
        + settings["lambda_tl"] * terms["tl_loss"]
        + settings["lambda_cl"] * terms["cl_loss"]
    )
    return {**terms, "loss": loss}
