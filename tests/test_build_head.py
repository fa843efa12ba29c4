"""build_head for every loss, the m-per-class sampler, the loss specs and the "auto" alpha rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import samplers as pml_samplers

from core.losses import (
    LOSSES,
    L2SoftmaxHead,
    PMLHead,
    SoftmaxHead,
    TripletHead,
    alpha_lower_bound,
    auto_alpha,
    build_head,
    make_sampler,
)
from tests.test_losses import random_batch


def test_build_head_every_loss() -> None:
    expected = {
        "softmax": SoftmaxHead,
        "l2softmax": L2SoftmaxHead,
        "triplet": TripletHead,
        "npair": PMLHead,
        "arcface": PMLHead,
        "cosface": PMLHead,
        "normface": PMLHead,
    }
    assert LOSSES == tuple(expected)
    x, y = random_batch(12, 8, 3, torch.float32, seed=14)
    for name in LOSSES:
        head = build_head(name, 8, 3)
        assert isinstance(head, expected[name])
        assert torch.isfinite(head(x, y))
    t = build_head("triplet", 8, 3)
    assert t.margin == 0.2 and t.mining == "semihard"
    assert build_head("triplet", 8, 3, margin=0.1, mining="hard").mining == "hard"
    l2 = build_head("l2softmax", 8, 3, alpha=7.0, alpha_trainable=True)
    assert l2.alpha_value == 7.0 and isinstance(l2.alpha, torch.nn.Parameter)


def test_build_head_unknown_loss() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'x'; choose one of: softmax, l2softmax, triplet"):
        build_head("x", 8, 3)


def test_make_sampler_batches_have_m_per_class() -> None:
    labels = np.repeat(np.arange(5), 10)
    sampler = make_sampler(labels, m_per_class=4, batch_size=12, length=120)
    assert isinstance(sampler, pml_samplers.MPerClassSampler)
    idx = list(iter(sampler))
    assert len(idx) == len(sampler) == 120
    for start in range(0, 120, 12):
        _, counts = np.unique(labels[idx[start : start + 12]], return_counts=True)
        assert sorted(counts.tolist()) == [4, 4, 4]


def test_make_sampler_rejects_impossible_batches() -> None:
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match="multiple of m_per_class"):
        make_sampler(labels, m_per_class=4, batch_size=10, length=100)
    with pytest.raises(ValueError, match="only 3"):
        make_sampler(labels, m_per_class=4, batch_size=16, length=100)
    with pytest.raises(ValueError, match="length"):
        make_sampler(labels, m_per_class=2, batch_size=6, length=4)


def test_heads_agree_with_their_specs():
    import core.losses as L

    """What a head says it needs is what its spec says, for every loss (callers rely on either)."""
    for name in L.LOSSES:
        head = L.build_head(name, dim=8, num_classes=4)
        spec = L.loss_spec(name)
        assert (head.has_classifier, head.has_alpha, head.needs_sampler) == (
            spec.has_classifier,
            spec.has_alpha,
            spec.needs_sampler,
        ), name
    assert [s.name for s in L.LOSS_SPECS.values() if s.has_alpha] == ["l2softmax"]
    assert {s.name for s in L.LOSS_SPECS.values() if s.needs_sampler} == {"triplet", "npair"}
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        L.loss_spec("nope")


def test_auto_alpha_is_the_bound_and_treats_two_classes_as_three() -> None:
    assert auto_alpha(10) == pytest.approx(math.log(0.9 * 8 / 0.1))  # log(72)
    assert auto_alpha(10) == alpha_lower_bound(10, 0.9)
    # the bound is undefined for C <= 2; "auto" still needs a scale and uses C = 3: log(9)
    assert auto_alpha(2) == auto_alpha(1) == pytest.approx(math.log(9.0))
    with pytest.raises(ValueError, match="undefined for C <= 2"):
        alpha_lower_bound(2)
