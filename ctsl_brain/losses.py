"""Losses of contrastive teacher-student learning.

Leem et al., ICASSP 2023, section 2.

Every function here is a pure function of tensors: no module state, no Brain.
Each computes in float32 (or wider) whatever dtype it is given, because the
recipe may run under bf16/fp16 autocast and a CCC or a softmax over cosine
similarities in half precision is too coarse to train on.

Where the paper's typeset equations and the authors' released code differ, the
code's form is the default and the typeset one an option; the code cited is the
public repository sgleem/contrastive-teacher-student-learning-for-SSL-SER at
commit 4b0d68c.

>>> import torch
>>> pred = torch.tensor([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]])
>>> concordance_cc(pred, pred).tolist()
[1.0, 1.0]
"""

import torch

__all__ = [
    "INFONCE_DENOMINATORS",
    "NEGATIVE_BOUNDARIES",
    "NEGATIVE_RULES",
    "TRANSFER_FORMS",
    "concordance_cc",
    "ccc_loss",
    "transfer_loss",
    "negative_mask",
    "info_nce",
]


# The choices of the loss settings (the first of each is its default).
TRANSFER_FORMS = ("batch", "utterance")
NEGATIVE_RULES = ("all", "any")
NEGATIVE_BOUNDARIES = ("more_than", "at_least")
INFONCE_DENOMINATORS = ("with_positive", "negatives")


def _choice(name, value, choices):
    """Raises ValueError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{name} must be {' or '.join(map(repr, choices))}, got {value!r}"
        )


def _as_float(x):
    """Upcasts half precision to float32; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def concordance_cc(prediction, target, *, eps=1e-12):
    """Concordance correlation coefficient (Lin, 1989) over the first dimension.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))**2)`` with population
    (biased) variances, as in audmetric.

    Arguments
    ---------
    prediction : torch.Tensor
        Predictions, shape ``[N]`` or ``[N, A]`` (A attributes, each scored
        separately).
    target : torch.Tensor
        Ground truth, same shape.
    eps : float
        Floor of the denominator. The only case it changes is prediction and
        target both constant and equal, where the CCC is undefined: this returns
        0 there (audmetric returns NaN), so a constant prediction never puts NaN
        into a loss or a log.

    Returns
    -------
    ccc : torch.Tensor
        The CCC in [-1, 1], shape ``[]`` or ``[A]``.

    Raises
    ------
    ValueError
        When ``prediction`` and ``target`` differ in shape.

    Example
    -------
    >>> target = torch.tensor([1.0, 2.0, 3.0])
    >>> round(concordance_cc(target + 1, target).item(), 4)  # 4/7
    0.5714
    """
    if prediction.shape != target.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape"
        )
    x, y = _as_float(prediction), _as_float(target)
    dx = x - x.mean(dim=0)
    dy = y - y.mean(dim=0)
    numerator = 2 * (dx * dy).mean(dim=0)
    denominator = (
        dx.pow(2).mean(dim=0)
        + dy.pow(2).mean(dim=0)
        + (x.mean(dim=0) - y.mean(dim=0)).pow(2)
    )
    return numerator / denominator.clamp_min(eps)


def ccc_loss(prediction, target):
    """L_CCC of the paper (equation 1): the sum over attributes of ``1 - CCC``.

    Arguments
    ---------
    prediction : torch.Tensor
        Predictions, shape ``[N, A]``.
    target : torch.Tensor
        Ground truth, same shape.

    Returns
    -------
    loss : torch.Tensor
        Scalar in [0, 2A].

    Example
    -------
    >>> target = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])
    >>> ccc_loss(target, target).item()
    0.0
    """
    return (1 - concordance_cc(prediction, target)).sum()


def transfer_loss(teacher, student, *, form="batch"):
    """L_TL of the paper (equation 2): RMSE of teacher and student embeddings.

    Arguments
    ---------
    teacher : torch.Tensor
        Teacher embeddings of the clean utterances, ``[N, D]`` (no gradient is
        needed).
    student : torch.Tensor
        Student embeddings of the noisy utterances, ``[N, D]``.
    form : str
        ``"batch"`` (default): one RMSE over every element of the batch, as in
        the authors' code that produced the paper's numbers
        (sgleem/contrastive-teacher-student-learning-for-SSL-SER,
        ``train_ssl_ser_tl_cl.py`` line 171:
        ``torch.sqrt(F.mse_loss(T_h, S_h))``). ``"utterance"``: the mean over
        utterances of each utterance's RMSE over its ``D`` elements, equation 2
        as typeset. The two differ by a few percent when the utterances' errors
        differ in size.

    Returns
    -------
    loss : torch.Tensor
        Scalar.

    Raises
    ------
    ValueError
        When ``form`` is not one of :data:`TRANSFER_FORMS`.

    Example
    -------
    >>> teacher = torch.zeros(2, 4)
    >>> student = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 3.0, 3.0, 3.0]])
    >>> round(
    ...     transfer_loss(teacher, student).item(), 4
    ... )  # sqrt((4 * 1 + 4 * 9) / 8)
    2.2361
    >>> transfer_loss(teacher, student, form="utterance").item()  # (1 + 3) / 2
    2.0
    """
    _choice("transfer loss form", form, TRANSFER_FORMS)
    squared = (_as_float(teacher) - _as_float(student)).pow(2)
    # The floor keeps the gradient of sqrt finite when student equals teacher exactly.
    if form == "batch":
        return squared.mean().clamp_min(1e-12).sqrt()
    return squared.mean(dim=-1).clamp_min(1e-12).sqrt().mean()


def negative_mask(
    labels, *, margin, rule="all", boundary="more_than", tolerance=1e-4
):
    """Which utterances are negatives of which.

    A pair is a negative when its labels differ by more than ``margin``.

    Arguments
    ---------
    labels : torch.Tensor
        ``[N, A]`` attribute labels, on the scale the margin is given in (the
        corpus' scale: 0.5 on MSP-Podcast's 1-7).
    margin : float
        The label gap that makes a pair a negative, per attribute.
    rule : str
        ``"all"``: every attribute must differ (the paper, section 3.3, and the
        authors' code); ``"any"``: one suffices.
    boundary : str
        What a gap equal to the margin is. ``"more_than"`` (default): not a
        negative, the paper's "larger than" (section 3.3). ``"at_least"``: a
        negative, as in the authors' code (``utils/infonce.py`` line 165, where
        ``attr_diff < margin`` is the only exclusion).
    tolerance : float
        Gaps within ``tolerance`` of the margin count as equal to it, so that
        the boundary and not floating-point rounding decides them: in float32,
        2.1 - 1.6 is 0.49999988 while 4.7 - 4.2 is 0.5. The default,
        1e-4 on the label scale, covers labels written with 4 or more decimals;
        a gap between means of ratings from fewer than about 70 raters each is
        either equal to the margin or further than this from it.

    Returns
    -------
    mask : torch.Tensor
        Boolean ``[N, N]``; entry ``(i, j)`` says whether ``j`` is a negative of
        query ``i``. The diagonal is False.

    Raises
    ------
    ValueError
        When ``rule`` or ``boundary`` is not one of its choices
        (:data:`NEGATIVE_RULES`, :data:`NEGATIVE_BOUNDARIES`).

    Example
    -------
    >>> labels = torch.tensor(
    ...     [[4.2, 4.2, 4.2], [4.7, 4.7, 4.7], [5.0, 5.0, 5.0]]
    ... )
    >>> negative_mask(labels, margin=0.5)[0].tolist()
    [False, False, True]
    >>> negative_mask(labels, margin=0.5, boundary="at_least")[0].tolist()
    [False, True, True]
    """
    _choice("negative boundary", boundary, NEGATIVE_BOUNDARIES)
    _choice("negative rule", rule, NEGATIVE_RULES)
    gap = (labels.unsqueeze(1).double() - labels.unsqueeze(0).double()).abs()
    if boundary == "more_than":
        differs = gap > margin + tolerance
    else:
        differs = gap >= margin - tolerance
    mask = differs.all(dim=-1) if rule == "all" else differs.any(dim=-1)
    return mask & ~torch.eye(
        len(labels), dtype=torch.bool, device=labels.device
    )


def info_nce(
    query,
    positive,
    labels,
    *,
    margin,
    rule="all",
    boundary="more_than",
    tolerance=1e-4,
    temperature=0.1,
    denominator="with_positive",
):
    """L_CL of the paper (equation 3): InfoNCE with cosine similarity.

    For query ``i`` (the student's embedding of noisy utterance ``i``) the
    positive logit is ``cos(q_i, p_i) / temperature`` and the negative logits
    ``cos(q_i, q_j) / temperature`` for each negative ``j``: the other queries
    (with gradient) whose labels differ by more than ``margin`` (see
    :func:`negative_mask`). The loss of query ``i`` is ``-log(exp(positive) /
    denominator)``.

    Arguments
    ---------
    query : torch.Tensor
        ``[N, D]`` student embeddings of the noisy utterances.
    positive : torch.Tensor
        ``[N, D]`` teacher embeddings of the same utterances, clean.
    labels : torch.Tensor
        ``[N, A]`` labels used to pick the negatives.
    margin : float
        The label gap that makes a pair a negative (see :func:`negative_mask`).
    rule : str
        ``"all"`` or ``"any"`` attribute must differ (see
        :func:`negative_mask`).
    boundary : str
        ``"more_than"`` or ``"at_least"``: what a gap equal to the margin is
        (see :func:`negative_mask`).
    tolerance : float
        Gaps this close to the margin count as equal to it (see
        :func:`negative_mask`).
    temperature : float
        Divides the cosine similarities (paper: 0.1).
    denominator : str
        ``"with_positive"`` (default): the sum of ``exp`` over the positive and
        the negatives, the standard InfoNCE of van den Oord et al. and the
        authors' code (cross-entropy over the positive and the negatives with
        the positive as target: ``utils/infonce.py`` lines 100-111).
        ``"negatives"``: the sum over the negatives only, equation 3 as typeset
        (this loss can be negative).

    Returns
    -------
    loss : torch.Tensor
        Scalar: the mean over the queries that have at least one negative.
        Queries without a negative are left out; when no query has one the loss
        is 0 (still attached to the graph, so every process of a distributed run
        takes part in the backward pass).

    Raises
    ------
    ValueError
        When ``denominator``, ``rule`` or ``boundary`` is not one of its
        choices.

    Example
    -------
    >>> query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> labels = torch.tensor([[1.0, 1.0, 1.0], [7.0, 7.0, 7.0]])
    >>> loss = info_nce(query, query, labels, margin=0.5, temperature=1.0)
    >>> round(
    ...     loss.item(), 4
    ... )  # -log(e / (e + 1)): cos 1 to the positive, 0 to the negative
    0.3133
    >>> info_nce(
    ...     query,
    ...     query,
    ...     labels,
    ...     margin=0.5,
    ...     temperature=1.0,
    ...     denominator="negatives",
    ... )
    tensor(-1.)
    """
    _choice("InfoNCE denominator", denominator, INFONCE_DENOMINATORS)
    q = torch.nn.functional.normalize(_as_float(query), dim=-1)
    p = torch.nn.functional.normalize(_as_float(positive), dim=-1)
    mask = negative_mask(
        labels, margin=margin, rule=rule, boundary=boundary, tolerance=tolerance
    )
    has_negative = mask.any(dim=1)
    if not has_negative.any():
        return q.sum() * 0.0

    # Only the queries with a negative: a row of -inf logits would give NaN gradients.
    queries, mask = q[has_negative], mask[has_negative]
    positive_logit = (queries * p[has_negative]).sum(
        dim=-1, keepdim=True
    ) / temperature
    logits = (queries @ q.T / temperature).masked_fill(~mask, float("-inf"))
    if denominator == "with_positive":
        logits = torch.cat([positive_logit, logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - positive_logit.squeeze(1)).mean()
