"""The losses against independent references: audmetric for CCC, direct loops for the rest."""

import math

import audmetric
import numpy as np
import pytest
import reference
import torch
from ctsl_brain.losses import (
    ccc_loss,
    concordance_cc,
    info_nce,
    negative_mask,
    transfer_loss,
)


@pytest.mark.parametrize("seed", range(5))
def test_ccc_matches_audmetric(seed):
    rng = np.random.default_rng(seed)
    target = rng.uniform(1, 7, size=(50, 3))
    prediction = (
        0.6 * target + rng.normal(0, 1, size=(50, 3)) + rng.normal(0, 1, size=3)
    )
    ours = concordance_cc(
        torch.tensor(prediction), torch.tensor(target)
    ).numpy()
    reference = [
        audmetric.concordance_cc(target[:, a], prediction[:, a])
        for a in range(3)
    ]
    np.testing.assert_allclose(ours, reference, rtol=1e-10)


def test_ccc_of_constant_prediction_is_zero_not_nan():
    target = torch.tensor([1.0, 2.0, 4.0, 7.0])
    constant = torch.full_like(target, 3.0)
    assert concordance_cc(constant, target).item() == 0.0
    assert audmetric.concordance_cc(target.numpy(), constant.numpy()) == 0.0
    # Both constant and equal: audmetric says NaN (undefined); a loss must not.
    value = concordance_cc(constant, constant)
    assert math.isnan(
        audmetric.concordance_cc(constant.numpy(), constant.numpy())
    )
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
    expected = sum(
        1 - concordance_cc(prediction[:, a], target[:, a]) for a in range(3)
    )
    torch.testing.assert_close(ccc_loss(prediction, target), expected)


def test_ccc_is_computed_in_float32_from_half_inputs():
    prediction = torch.randn(32, 3).to(torch.bfloat16)
    assert concordance_cc(prediction, prediction).dtype == torch.float32


@pytest.mark.parametrize("form", ["batch", "utterance"])
def test_transfer_loss_matches_reference(form):
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(8, 16, generator=generator, dtype=torch.float64)
    # Utterances with errors of different sizes, where the two forms differ.
    scale = torch.linspace(0.1, 2.0, 8, dtype=torch.float64).unsqueeze(1)
    student = teacher + scale * torch.randn(
        8, 16, generator=generator, dtype=torch.float64
    )
    expected = reference.transfer_rmse(teacher, student, form)
    assert transfer_loss(teacher, student, form=form).item() == pytest.approx(
        expected, rel=1e-12
    )
    single = transfer_loss(teacher.float(), student.float(), form=form)
    assert single.item() == pytest.approx(expected, rel=1e-5)


def test_transfer_loss_forms_differ_and_the_default_is_the_authors_batch_rmse():
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(8, 16, generator=generator)
    student = torch.randn(8, 16, generator=generator)
    student[0] *= 5
    batch = transfer_loss(teacher, student, form="batch")
    assert torch.equal(transfer_loss(teacher, student), batch)
    assert (
        abs(batch - transfer_loss(teacher, student, form="utterance"))
        > 0.01 * batch
    )
    with pytest.raises(ValueError, match="'batch' or 'utterance'"):
        transfer_loss(teacher, student, form="mean")


@pytest.mark.parametrize("form", ["batch", "utterance"])
def test_transfer_loss_gradient_is_finite_at_zero(form):
    student = torch.ones(2, 4, requires_grad=True)
    transfer_loss(torch.ones(2, 4), student, form=form).backward()
    assert torch.isfinite(student.grad).all()


@pytest.mark.parametrize("denominator", ["with_positive", "negatives"])
@pytest.mark.parametrize("boundary", ["more_than", "at_least"])
@pytest.mark.parametrize("rule", ["all", "any"])
@pytest.mark.parametrize("seed", range(3))
def test_info_nce_matches_reference(rule, boundary, denominator, seed):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(12, 24, generator=generator, dtype=torch.float64)
    positive = query + 0.5 * torch.randn(
        12, 24, generator=generator, dtype=torch.float64
    )
    # Labels on a grid of 0.1 (means of 10 ratings), so that gaps equal to the margin occur.
    labels = (
        1 + torch.randint(0, 61, (12, 3), generator=generator).double() / 10
    )
    settings = {
        "margin": 0.5,
        "rule": rule,
        "boundary": boundary,
        "tolerance": 1e-4,
    }
    settings.update(temperature=0.1, denominator=denominator)
    expected = reference.info_nce(query, positive, labels, **settings)
    ours = info_nce(query, positive, labels, **settings)
    assert ours.item() == pytest.approx(expected, rel=1e-9)
    single = info_nce(
        query.float(), positive.float(), labels.float(), **settings
    )
    assert single.item() == pytest.approx(expected, abs=1e-5)


def test_info_nce_defaults_are_the_authors_denominator_and_the_papers_boundary():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(6, 8, generator=generator)
    positive = torch.randn(6, 8, generator=generator)
    labels = torch.tensor(
        [[1.0] * 3, [1.5] * 3, [4.2] * 3, [4.7] * 3, [7.0] * 3, [6.0] * 3]
    )
    explicit = info_nce(
        query,
        positive,
        labels,
        margin=0.5,
        rule="all",
        boundary="more_than",
        tolerance=1e-4,
        temperature=0.1,
        denominator="with_positive",
    )
    assert torch.equal(info_nce(query, positive, labels, margin=0.5), explicit)
    for changed in ({"boundary": "at_least"}, {"denominator": "negatives"}):
        assert not torch.equal(
            info_nce(query, positive, labels, margin=0.5, **changed), explicit
        )
    with pytest.raises(ValueError, match="'with_positive' or 'negatives'"):
        info_nce(query, positive, labels, margin=0.5, denominator="positives")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "pair", [(4.0, 4.5), (4.2, 4.7), (1.6, 2.1), (2.1, 1.6), (6.5, 7.0)]
)
def test_a_gap_equal_to_the_margin_is_decided_by_the_boundary_not_by_rounding(
    pair, dtype
):
    """In float64 4.7 - 4.2 and 2.1 - 1.6 are exactly 0.5, but in float32 2.1 - 1.6 is
    0.49999988, and on the unit scale (4.5 - 1) / 6 - (4.0 - 1) / 6 is above 0.5 / 6 in
    float64: without the tolerance the boundary would call some of these pairs negatives and
    not others."""
    labels = torch.tensor([[pair[0]] * 3, [pair[1]] * 3], dtype=dtype)
    strict = negative_mask(labels, margin=0.5)
    assert not strict.any(), "the paper's 'more than 0.5' excludes a gap of 0.5"
    inclusive = negative_mask(labels, margin=0.5, boundary="at_least")
    assert inclusive.tolist() == [[False, True], [True, False]], (
        "the authors' code includes it"
    )
    # On the unit scale of training, (y - 1) / 6, the margin 0.5 / 6 gives the same verdicts.
    unit = (labels - 1) / 6
    assert torch.equal(
        negative_mask(unit, margin=0.5 / 6, tolerance=1e-4 / 6), strict
    )
    assert torch.equal(
        negative_mask(
            unit, margin=0.5 / 6, boundary="at_least", tolerance=1e-4 / 6
        ),
        inclusive,
    )


@pytest.mark.parametrize("boundary", ["more_than", "at_least"])
def test_gaps_beyond_the_tolerance_keep_their_side_of_the_margin(boundary):
    labels = torch.tensor([[4.0] * 3, [4.5011] * 3, [4.4989] * 3])
    mask = negative_mask(labels, margin=0.5, boundary=boundary, tolerance=1e-3)
    assert mask[0].tolist() == [False, True, False]
    with pytest.raises(ValueError, match="'more_than' or 'at_least'"):
        negative_mask(labels, margin=0.5, boundary="above")


def test_info_nce_of_negatives_only_has_finite_gradients_with_a_query_without_negatives():
    query = torch.randn(3, 8, requires_grad=True)
    labels = torch.tensor(
        [[1.0] * 3, [7.0] * 3, [4.0] * 3]
    )  # row 2 has no negative
    loss = info_nce(
        query, torch.randn(3, 8), labels, margin=3.5, denominator="negatives"
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(query.grad).all()


def test_negative_mask_rule_and_strict_margin():
    labels = torch.tensor(
        [
            [4.0, 4.0, 4.0],
            [5.0, 5.0, 5.0],  # differs by 1 on all three from row 0
            [5.0, 4.2, 5.0],  # differs by 0.2 on dominance from row 0
            [
                4.5,
                4.5,
                4.5,
            ],  # differs by exactly the margin from row 0: not a negative
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
    query, positive = (
        torch.randn(3, 8, generator=generator),
        torch.randn(3, 8, generator=generator),
    )
    # Rows 0 and 1 are negatives of each other; row 2 is close to both and has none.
    labels = torch.tensor([[1.0, 1.0, 1.0], [7.0, 7.0, 7.0], [4.0, 4.0, 4.0]])
    labels[2] = torch.tensor([1.2, 6.8, 4.0])
    loss = info_nce(query, positive, labels, margin=0.5, temperature=0.1)
    only_two = info_nce(
        query[:2], positive[:2], labels[:2], margin=0.5, temperature=0.1
    )
    assert loss.item() == pytest.approx(only_two.item(), rel=1e-6)


def test_info_nce_without_any_negative_is_zero_and_differentiable():
    query = torch.randn(4, 8, requires_grad=True)
    labels = torch.full((4, 3), 4.0)
    loss = info_nce(
        query, torch.randn(4, 8), labels, margin=0.5, temperature=0.1
    )
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(query.grad).all()
    single = info_nce(
        query[:1], torch.randn(1, 8), labels[:1], margin=0.5, temperature=0.1
    )
    assert single.item() == 0.0


def test_info_nce_gradient_reaches_negatives_and_query():
    query = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([[1.0] * 3, [7.0] * 3] * 3)
    info_nce(
        query, torch.randn(6, 8), labels, margin=0.5, temperature=0.1
    ).backward()
    assert (query.grad.abs().sum(dim=1) > 0).all()


def test_info_nce_is_float32_under_half_inputs():
    query = torch.randn(6, 8).to(torch.float16)
    labels = torch.tensor([[1.0] * 3, [7.0] * 3] * 3)
    loss = info_nce(query, query, labels, margin=0.5, temperature=0.1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
