"""Tests for core/losses.py.

The hand-written losses (softmax, l2softmax, triplet) are compared with brute-force Python loops over
samples / classes / coordinates (in Python floats, i.e. float64), for float32 and float64 inputs.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.losses import (
    L2SoftmaxHead,
    PMLHead,
    SoftmaxHead,
    TripletHead,
    alpha_lower_bound,
    build_head,
)

DTYPES = [torch.float32, torch.float64]


def tol(dtype: torch.dtype) -> dict:
    # float32 results vs a float64 reference: allow single-precision rounding.
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def random_batch(
    n: int, d: int, c: int, dtype: torch.dtype, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype)
    y = torch.arange(n) % c
    y = y[torch.randperm(n, generator=g)]
    return x, y


# ---------------------------------------------------------------- brute-force references (Python floats)


def bf_linear(x: list[float], weight: list[list[float]], bias: list[float]) -> list[float]:
    out = []
    for j in range(len(weight)):
        s = bias[j]
        for k in range(len(x)):
            s += weight[j][k] * x[k]
        out.append(s)
    return out


def bf_cross_entropy(logits: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, y in zip(logits, labels, strict=True):
        m = max(row)
        s = 0.0
        for v in row:
            s += math.exp(v - m)
        total += (math.log(s) + m) - row[y]
    return total / len(labels)


def bf_normalize(x: list[float]) -> list[float]:
    n = math.sqrt(sum(v * v for v in x))
    return [v / n for v in x]


def bf_sqdist(a: list[float], b: list[float]) -> float:
    s = 0.0
    for k in range(len(a)):
        s += (a[k] - b[k]) ** 2
    return s


def bf_triplet_loss(emb: list[list[float]], triplets: list[tuple[int, int, int]], margin: float) -> float:
    unit = [bf_normalize(e) for e in emb]
    total = 0.0
    for a, p, n in triplets:
        total += max(0.0, bf_sqdist(unit[a], unit[p]) - bf_sqdist(unit[a], unit[n]) + margin)
    return total / len(triplets)


def bf_mine(emb: list[list[float]], labels: list[int], margin: float, kind: str) -> set[tuple[int, int, int]]:
    unit = [bf_normalize(e) for e in emb]
    out = set()
    n = len(labels)
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for q in range(n):
                if labels[q] == labels[a]:
                    continue
                d_ap, d_an = bf_sqdist(unit[a], unit[p]), bf_sqdist(unit[a], unit[q])
                if kind == "semihard" and d_ap < d_an <= d_ap + margin:
                    out.add((a, p, q))
                if kind == "hard" and d_an <= d_ap:
                    out.add((a, p, q))
    return out


# ---------------------------------------------------------------- alpha lower bound


def test_alpha_lower_bound_value() -> None:
    assert round(alpha_lower_bound(10, 0.9), 2) == 4.28
    assert alpha_lower_bound(10) == pytest.approx(math.log(0.9 * 8 / 0.1))
    # CASIA-WebFace (10575 identities), the paper's training set.
    assert alpha_lower_bound(10575, 0.9) == pytest.approx(math.log(0.9 * 10573 / 0.1))


@pytest.mark.parametrize("c", [2, 1, 0])
def test_alpha_lower_bound_undefined_for_two_or_fewer_classes(c: int) -> None:
    with pytest.raises(ValueError, match=r"undefined for C <= 2"):
        alpha_lower_bound(c)


@pytest.mark.parametrize("p", [0.0, 1.0, 1.5])
def test_alpha_lower_bound_rejects_bad_p(p: float) -> None:
    with pytest.raises(ValueError, match="probability"):
        alpha_lower_bound(10, p)


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_matches_brute_force(dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    x, y = random_batch(7, 5, 4, dtype)
    head = SoftmaxHead(5, 4).to(dtype)
    loss = head(x, y)
    w, b = head.fc.weight.tolist(), head.fc.bias.tolist()
    logits = [bf_linear(row, w, b) for row in x.tolist()]
    expected = bf_cross_entropy(logits, y.tolist())
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=dtype), **tol(dtype))
    torch.testing.assert_close(head.logits(x), torch.tensor(logits, dtype=dtype), **tol(dtype))
    assert head.has_classifier
    assert head.class_weights().shape == (4, 5)
    loss.backward()
    assert head.fc.weight.grad is not None


# ---------------------------------------------------------------- L2-softmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("alpha", [1.0, 4.28, 16.0, 64.0])
def test_l2softmax_matches_brute_force(dtype: torch.dtype, trainable: bool, alpha: float) -> None:
    torch.manual_seed(2)
    x, y = random_batch(6, 4, 3, dtype, seed=3)
    x = x * 10  # features far from the unit sphere: the normalisation must matter
    head = L2SoftmaxHead(4, 3, alpha=alpha, trainable=trainable).to(dtype)
    w, b = head.fc.weight.tolist(), head.fc.bias.tolist()
    # alpha is created in float32, so 4.28 is stored as 4.2800002...: the reference uses the stored value.
    alpha_given, alpha = alpha, head.alpha_value
    assert alpha == pytest.approx(alpha_given, rel=1e-6)
    scaled = [[alpha * v for v in bf_normalize(row)] for row in x.tolist()]
    logits = [bf_linear(row, w, b) for row in scaled]
    expected = bf_cross_entropy(logits, y.tolist())
    torch.testing.assert_close(head(x, y), torch.tensor(expected, dtype=dtype), **tol(dtype))
    torch.testing.assert_close(head.scale_features(x), torch.tensor(scaled, dtype=dtype), **tol(dtype))
    # The L2 constraint itself: every scaled feature lies on the sphere of radius alpha.
    norms = head.scale_features(x).norm(dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, alpha), **tol(dtype))
    # alpha_value is what the trainer writes to metrics.jsonl and summary.json: it must survive JSON (a
    # tensor would not) and be the radius the features are actually scaled to.
    logged = json.loads(json.dumps({"alpha": head.alpha_value}))["alpha"]
    assert logged == pytest.approx(norms.mean().item(), rel=tol(dtype)["rtol"])


def test_l2softmax_trainable_alpha_learns() -> None:
    torch.manual_seed(4)
    x, y = random_batch(16, 8, 4, torch.float32)
    head = L2SoftmaxHead(8, 4, alpha=4.0, trainable=True)
    assert isinstance(head.alpha, torch.nn.Parameter)
    assert any(p is head.alpha for p in head.parameters())
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    head(x, y).backward()
    assert head.alpha.grad is not None and head.alpha.grad.abs().item() > 0
    opt.step()
    assert head.alpha_value != pytest.approx(4.0, abs=1e-6)


def test_l2softmax_fixed_alpha_does_not_change() -> None:
    torch.manual_seed(5)
    x, y = random_batch(16, 8, 4, torch.float32)
    head = L2SoftmaxHead(8, 4, alpha=4.0, trainable=False)
    assert not isinstance(head.alpha, torch.nn.Parameter)
    assert all(p is not head.alpha for p in head.parameters())
    assert "alpha" in head.state_dict()  # saved with the model either way
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    w_before = head.fc.weight.detach().clone()
    head(x, y).backward()
    opt.step()
    assert head.alpha_value == 4.0
    assert not torch.equal(head.fc.weight.detach(), w_before)


def test_l2softmax_gradcheck() -> None:
    torch.manual_seed(6)
    x, y = random_batch(5, 3, 3, torch.float64)
    head = L2SoftmaxHead(3, 3, alpha=8.0, trainable=True).double()
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: head(e, y), (x,))


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_l2softmax_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        L2SoftmaxHead(4, 3, alpha=alpha)


# ---------------------------------------------------------------- triplet


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mining", ["random", "semihard", "hard"])
def test_triplet_matches_brute_force_over_mined_triplets(dtype: torch.dtype, mining: str) -> None:
    x, y = random_batch(12, 3, 3, dtype, seed=7)
    margin = 0.5  # wide enough that semihard finds triplets in a random batch
    head = TripletHead(margin=margin, mining=mining)
    torch.manual_seed(8)  # "random" mining draws from torch's global RNG
    loss = head(x, y)
    torch.manual_seed(8)
    a, p, n = head.mine(F.normalize(x, dim=1), y)
    triplets = list(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    assert len(triplets) > 0
    for ta, tp, tn in triplets:
        assert ta != tp and y[ta] == y[tp] and y[ta] != y[tn]
    expected = bf_triplet_loss(x.tolist(), triplets, margin)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=dtype), **tol(dtype))
    assert not head.has_classifier and head.class_weights() is None


@pytest.mark.parametrize("mining", ["semihard", "hard"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pml_miner_semantics_match_independent_brute_force(mining: str, seed: int) -> None:
    # float64 and a batch < 25 rows (torch.cdist then avoids the matmul shortcut): no boundary noise.
    x, y = random_batch(10, 3, 3, torch.float64, seed=seed)
    margin = 0.3
    head = TripletHead(margin=margin, mining=mining)
    a, p, n = head.mine(F.normalize(x, dim=1), y)
    got = set(zip(a.tolist(), p.tolist(), n.tolist(), strict=True))
    expected = bf_mine(x.tolist(), y.tolist(), margin, mining)
    assert len(expected) > 0
    assert got == expected


def test_random_mining_covers_each_anchor() -> None:
    x, y = random_batch(12, 4, 3, torch.float32, seed=9)
    head = TripletHead(mining="random")
    torch.manual_seed(0)
    a, p, n = head.mine(x, y)
    assert set(a.tolist()) == set(range(12))
    assert (y[a] == y[p]).all() and (y[a] != y[n]).all() and (a != p).all()


@pytest.mark.parametrize("mining", ["random", "semihard", "hard"])
def test_triplet_zero_triplets_gives_zero_loss_with_grad(mining: str) -> None:
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.zeros(6, dtype=torch.long)  # one class: no negatives, so nothing can be mined
    loss = TripletHead(mining=mining)(x, y)
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


def test_triplet_semihard_none_when_classes_are_separated() -> None:
    # Two tight antipodal clusters: d(a,n) - d(a,p) ~ 4 > margin, so no semihard (or hard) triplet.
    base = torch.tensor([[1.0, 0.0, 0.0]])
    x = torch.cat([base + 0.01 * torch.randn(4, 3), -base + 0.01 * torch.randn(4, 3)]).requires_grad_(True)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for mining in ("semihard", "hard"):
        loss = TripletHead(margin=0.2, mining=mining)(x, y)
        assert loss.item() == 0.0 and loss.grad_fn is not None


def test_triplet_rejects_bad_args() -> None:
    with pytest.raises(ValueError, match="mining"):
        TripletHead(mining="batchhard")
    with pytest.raises(ValueError, match="margin"):
        TripletHead(margin=-0.1)


# ---------------------------------------------------------------- PML heads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["arcface", "cosface", "normface"])
def test_pml_classifier_heads(dtype: torch.dtype, name: str) -> None:
    torch.manual_seed(10)
    d, c = 6, 5
    x, y = random_batch(20, d, c, dtype, seed=11)
    x.requires_grad_(True)
    head = PMLHead(name, d, c)
    assert head.has_classifier
    loss = head(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert head.loss.W.grad is not None
    w = head.class_weights()
    assert w.shape == (c, d)
    logits = head.logits(x.detach())
    assert logits.shape == (20, c)
    # Argmax of the logits = the class weight with the largest cosine to the embedding (brute force).
    for i, row in enumerate(x.detach().tolist()):
        u = bf_normalize(row)
        cosines = [sum(a * b for a, b in zip(u, bf_normalize(wc), strict=True)) for wc in w.tolist()]
        assert int(logits[i].argmax()) == int(np.argmax(cosines))
        torch.testing.assert_close(
            logits[i], torch.tensor(cosines, dtype=dtype) * head.scale, rtol=1e-4, atol=1e-4
        )
    # Our logits are PML's own (margin-free) logits.
    torch.testing.assert_close(logits, head.loss.get_logits(x.detach()), rtol=1e-5, atol=1e-5)


def test_npair_head() -> None:
    torch.manual_seed(12)
    x, y = random_batch(12, 6, 4, torch.float32, seed=13)  # 3 samples per class
    x.requires_grad_(True)
    head = build_head("npair", 6, 4)
    assert isinstance(head, PMLHead) and not head.has_classifier
    assert head.class_weights() is None
    loss = head(x, y)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    with pytest.raises(TypeError, match="no classifier"):
        head.logits(x)


def test_npair_no_pairs_gives_zero_loss_with_grad() -> None:
    x = torch.randn(4, 6, requires_grad=True)
    loss = build_head("npair", 6, 4)(x, torch.arange(4))  # every class once: no positive pair
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()


def test_pml_defaults_and_units() -> None:
    arc = build_head("arcface", 8, 5)
    assert arc.margin == 28.6 and arc.scale == 64.0
    assert arc.loss.margin == pytest.approx(math.radians(28.6))  # PML takes degrees
    cos = build_head("cosface", 8, 5)
    assert cos.margin == 0.35 and cos.scale == 64.0 and cos.loss.margin == 0.35
    norm = build_head("normface", 8, 5)
    assert norm.scale == 16.0 and norm.loss.temperature == pytest.approx(0.0625)
    assert build_head("normface", 8, 5, scale=20).loss.temperature == pytest.approx(0.05)
    assert build_head("arcface", 8, 5, margin=10.0, scale=30).loss.margin == pytest.approx(math.radians(10))
