"""Losses of contrastive teacher-student learning (Leem et al., ICASSP 2023, section 2).

Every function here is a pure function of tensors: no module state, no Brain. Each computes in
float32 (or wider) whatever dtype it is given, because the recipe may run under bf16/fp16 autocast
and a CCC or a softmax over cosine similarities in half precision is too coarse to train on.

>>> import torch
>>> pred = torch.tensor([[1.0, 2.0], [2.0, 3.0], [3.0, 5.0]])
>>> concordance_cc(pred, pred).tolist()
[1.0, 1.0]
"""

import torch

__all__ = [
    "concordance_cc",
    "ccc_loss",
    "transfer_loss",
    "negative_mask",
    "info_nce",
]


def _as_float(x):
    """Upcasts half precision to float32; float32 and float64 pass unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def concordance_cc(prediction, target, *, eps=1e-12):
    """Concordance correlation coefficient (Lin, 1989) over the first dimension.

    ``2 cov(x, y) / (var(x) + var(y) + (mean(x) - mean(y))**2)`` with population (biased)
    variances, as in audmetric.

    Arguments
    ---------
    prediction : torch.Tensor
        Predictions, shape ``[N]`` or ``[N, A]`` (A attributes, each scored separately).
    target : torch.Tensor
        Ground truth, same shape.
    eps : float
        Floor of the denominator. The only case it changes is prediction and target both
        constant and equal, where the CCC is undefined: this returns 0 there (audmetric returns
        NaN), so a constant prediction never puts NaN into a loss or a log.

    Returns
    -------
    torch.Tensor
        The CCC in [-1, 1], shape ``[]`` or ``[A]``.
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
        dx.pow(2).mean(dim=0) + dy.pow(2).mean(dim=0) + (x.mean(dim=0) - y.mean(dim=0)).pow(2)
    )
    return numerator / denominator.clamp_min(eps)


def ccc_loss(prediction, target):
    """L_CCC of the paper (equation 1): the sum over attributes of ``1 - CCC``.

    Arguments
    ---------
    prediction, target : torch.Tensor
        Shape ``[N, A]``.

    Returns
    -------
    torch.Tensor
        Scalar in [0, 2A].
    """
    return (1 - concordance_cc(prediction, target)).sum()


def transfer_loss(teacher, student):
    """L_TL of the paper (equation 2): RMSE between teacher and student embeddings.

    One scalar per batch, the square root of the mean squared difference over every element, as
    in the authors' code.

    Arguments
    ---------
    teacher : torch.Tensor
        Teacher embeddings of the clean utterances, ``[N, D]`` (no gradient is needed).
    student : torch.Tensor
        Student embeddings of the noisy utterances, ``[N, D]``.

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    mse = (_as_float(teacher) - _as_float(student)).pow(2).mean()
    # The floor keeps the gradient of sqrt finite when student equals teacher exactly.
    return mse.clamp_min(1e-12).sqrt()


def negative_mask(labels, *, margin, rule="all"):
    """Which utterances are negatives of which: labels differ by more than ``margin``.

    Arguments
    ---------
    labels : torch.Tensor
        ``[N, A]`` attribute labels, on the scale the margin is given in.
    margin : float
        A pair is a negative only where attributes differ by strictly more than this.
    rule : str
        ``"all"``: every attribute must differ (the authors' code); ``"any"``: one suffices.

    Returns
    -------
    torch.Tensor
        Boolean ``[N, N]``; entry ``(i, j)`` says whether ``j`` is a negative of query ``i``.
        The diagonal is False.
    """
    differs = (labels.unsqueeze(1) - labels.unsqueeze(0)).abs() > margin
    if rule == "all":
        mask = differs.all(dim=-1)
    elif rule == "any":
        mask = differs.any(dim=-1)
    else:
        raise ValueError(f"negative rule must be 'all' or 'any', got {rule!r}")
    return mask & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def info_nce(query, positive, labels, *, margin, rule="all", temperature=0.1):
    """L_CL of the paper (equation 3): InfoNCE with cosine similarity.

    For query ``i`` (the student's embedding of noisy utterance ``i``) the logits are
    ``[cos(q_i, p_i), cos(q_i, q_j) for each negative j] / temperature`` and the loss is the
    cross-entropy with the positive as target, so the positive is in the denominator. The
    negatives are the other queries (with gradient) whose labels differ by more than ``margin``
    (see :func:`negative_mask`).

    Arguments
    ---------
    query : torch.Tensor
        ``[N, D]`` student embeddings of the noisy utterances.
    positive : torch.Tensor
        ``[N, D]`` teacher embeddings of the same utterances, clean.
    labels : torch.Tensor
        ``[N, A]`` labels used to pick the negatives.
    margin : float
        See :func:`negative_mask`.
    rule : str
        See :func:`negative_mask`.
    temperature : float
        Divides the cosine similarities (paper: 0.1).

    Returns
    -------
    torch.Tensor
        Scalar: the mean over the queries that have at least one negative. Queries without a
        negative are left out; when no query has one the loss is 0 (still attached to the graph,
        so every process of a distributed run takes part in the backward pass).
    """
    q = torch.nn.functional.normalize(_as_float(query), dim=-1)
    p = torch.nn.functional.normalize(_as_float(positive), dim=-1)
    mask = negative_mask(labels, margin=margin, rule=rule)
    has_negative = mask.any(dim=1)
    if not has_negative.any():
        return q.sum() * 0.0

    positive_logit = (q * p).sum(dim=-1, keepdim=True) / temperature
    negative_logits = (q @ q.T / temperature).masked_fill(~mask, float("-inf"))
    logits = torch.cat([positive_logit, negative_logits], dim=1)
    per_query = torch.logsumexp(logits, dim=1) - positive_logit.squeeze(1)
    return per_query[has_negative].mean()
