"""The losses against independent references: audmetric for CCC, direct loops for the rest."""

import math

import audmetric
import numpy as np
import pytest
import torch

from ctsl_brain.losses import ccc_loss, concordance_cc, info_nce, negative_mask, transfer_loss


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_audmetric(seed):
    rng = np.random.default_rng(seed)
    target = rng.uniform(1, 7, size=(50, 3))
    prediction = 0.6 * target + rng.normal(0, 1, size=(50, 3)) + rng.normal(0, 1, size=3)
    ours = concordance_cc(torch.tensor(prediction), torch.tensor(target)).numpy()
    reference = [audmetric.concordance_cc(target[:, a], prediction[:, a]) for a in range(3)]
    np.testing.assert_allclose(ours, reference, rtol=1e-10)


def test_ccc_of_constant_prediction_is_zero_not_nan():
    target = torch.tensor([1.0, 2.0, 4.0, 7.0])
    constant = torch.full_like(target, 3.0)
    assert concordance_cc(constant, target).item() == 0.0
    assert audmetric.concordance_cc(target.numpy(), constant.numpy()) == 0.0
    # Both constant and equal: audmetric says NaN (undefined); a loss must not.
    value = concordance_cc(constant, constant)
    assert math.isnan(audmetric.concordance_cc(constant.numpy(), constant.numpy()))
    assert value.item() == 0.0
    # Both constant and different.
    assert concordance_cc(constant, constant + 1).item() == 0.0


def test_ccc_gradient_is_finite_for_constant_prediction():
    prediction = torch.full((4, 3), 0.5, requires_grad=True)
    target = torch.rand(4, 3)
    ccc_loss(prediction, target).backward()
    assert torch.isfinite(prediction.grad).all()


def test_ccc_loss_is_sum_of_one_minus_ccc():
    prediction, target = torch.randn(20, 3), torch.randn(20, 3)
    expected = sum(1 - concordance_cc(prediction[:, a], target[:, a]) for a in range(3))
    torch.testing.assert_close(ccc_loss(prediction, target), expected)


def test_ccc_is_computed_in_float32_from_half_inputs():
    prediction = torch.randn(32, 3).to(torch.bfloat16)
    assert concordance_cc(prediction, prediction).dtype == torch.float32


def test_transfer_loss_is_batch_rmse():
    teacher, student = torch.randn(8, 16), torch.randn(8, 16)
    expected = np.sqrt(np.mean((teacher.numpy() - student.numpy()) ** 2))
    assert transfer_loss(teacher, student).item() == pytest.approx(expected, rel=1e-6)


def test_transfer_loss_gradient_is_finite_at_zero():
    student = torch.ones(2, 4, requires_grad=True)
    transfer_loss(torch.ones(2, 4), student).backward()
    assert torch.isfinite(student.grad).all()


def _info_nce_loop(query, positive, labels, margin, rule, temperature):
    """Equation 3 of the paper written out query by query, in float64."""
    q, p, y = query.double().numpy(), positive.double().numpy(), labels.double().numpy()

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    losses = []
    for i in range(len(q)):
        negatives = []
        for j in range(len(q)):
            differs = np.abs(y[i] - y[j]) > margin
            if j != i and (differs.all() if rule == "all" else differs.any()):
                negatives.append(j)
        if not negatives:
            continue
        numerator = math.exp(cos(q[i], p[i]) / temperature)
        denominator = numerator + sum(math.exp(cos(q[i], q[j]) / temperature) for j in negatives)
        losses.append(-math.log(numerator / denominator))
    return float(np.mean(losses)) if losses else 0.0


@pytest.mark.parametrize("rule", ["all", "any"])
@pytest.mark.parametrize("seed", range(4))
def test_info_nce_matches_direct_loop(rule, seed):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(12, 24, generator=generator, dtype=torch.float64)
    positive = query + 0.5 * torch.randn(12, 24, generator=generator, dtype=torch.float64)
    labels = 1 + 6 * torch.rand(12, 3, generator=generator, dtype=torch.float64)
    expected = _info_nce_loop(query, positive, labels, 0.5, rule, 0.1)
    ours = info_nce(query, positive, labels, margin=0.5, rule=rule, temperature=0.1)
    assert ours.item() == pytest.approx(expected, rel=1e-9)
    single = info_nce(query.float(), positive.float(), labels, margin=0.5, rule=rule)
    assert single.item() == pytest.approx(expected, abs=1e-5)


def test_negative_mask_rule_and_strict_margin():
    labels = torch.tensor(
        [
            [4.0, 4.0, 4.0],
            [5.0, 5.0, 5.0],  # differs by 1 on all three from row 0
            [5.0, 4.2, 5.0],  # differs by 0.2 on dominance from row 0
            [4.5, 4.5, 4.5],  # differs by exactly the margin from row 0: not a negative
        ]
    )
    every = negative_mask(labels, margin=0.5, rule="all")
    some = negative_mask(labels, margin=0.5, rule="any")
    assert every[0].tolist() == [False, True, False, False]
    assert some[0].tolist() == [False, True, True, False]
    assert not every.diagonal().any() and not some.diagonal().any()
    assert torch.equal(every, every.T) and torch.equal(some, some.T)
    with pytest.raises(ValueError, match="'all' or 'any'"):
        negative_mask(labels, margin=0.5, rule="most")


def test_info_nce_leaves_out_queries_without_negatives():
    generator = torch.Generator().manual_seed(0)
    query, positive = torch.randn(3, 8, generator=generator), torch.randn(3, 8, generator=generator)
    # Rows 0 and 1 are negatives of each other; row 2 is close to both and has none.
    labels = torch.tensor([[1.0, 1.0, 1.0], [7.0, 7.0, 7.0], [4.0, 4.0, 4.0]])
    labels[2] = torch.tensor([1.2, 6.8, 4.0])
    loss = info_nce(query, positive, labels, margin=0.5, temperature=0.1)
    only_two = info_nce(query[:2], positive[:2], labels[:2], margin=0.5, temperature=0.1)
    assert loss.item() == pytest.approx(only_two.item(), rel=1e-6)


def test_info_nce_without_any_negative_is_zero_and_differentiable():
    query = torch.randn(4, 8, requires_grad=True)
    labels = torch.full((4, 3), 4.0)
    loss = info_nce(query, torch.randn(4, 8), labels, margin=0.5, temperature=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(query.grad).all()
    single = info_nce(query[:1], torch.randn(1, 8), labels[:1], margin=0.5, temperature=0.1)
    assert single.item() == 0.0


def test_info_nce_gradient_reaches_negatives_and_query():
    query = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([[1.0] * 3, [7.0] * 3] * 3)
    info_nce(query, torch.randn(6, 8), labels, margin=0.5, temperature=0.1).backward()
    assert (query.grad.abs().sum(dim=1) > 0).all()


def test_info_nce_is_float32_under_half_inputs():
    query = torch.randn(6, 8).to(torch.float16)
    labels = torch.tensor([[1.0] * 3, [7.0] * 3] * 3)
    loss = info_nce(query, query, labels, margin=0.5, temperature=0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
