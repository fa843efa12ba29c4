"""Loss heads for deep metric learning, built around Ranjan et al. 2017 (L2-constrained softmax).

Every head is an ``nn.Module`` with ``forward(embeddings, labels) -> scalar loss``, a ``has_classifier``
flag, ``class_weights() -> Tensor [C, d] | None`` and, for classifier heads, ``logits(embeddings)``.

Written here (and checked against brute-force loops in tests/test_losses.py): ``softmax``,
``l2softmax`` and the ``triplet`` loss formula. Delegated to pytorch-metric-learning (PML): triplet
mining, ``npair``, ``arcface``, ``cosface`` and ``normface``.

Units of ``margin`` (they differ per loss, as in PML and the papers):
- triplet: squared Euclidean distance between L2-normalised embeddings (range of d is [0, 4]).
- arcface: DEGREES (PML converts with ``np.radians``); default 28.6 deg (= 0.5 rad, the paper's m).
- cosface: cosine units (subtracted from the target cosine); default 0.35.
- softmax, l2softmax, npair, normface: no margin; a given margin is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning import samplers as pml_samplers
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor, nn

from core.loss_specs import (  # noqa: F401 - re-exported: callers ask core.losses.loss_spec(name)
    DEFAULT_ARCFACE_MARGIN_DEG,
    DEFAULT_ARCFACE_SCALE,
    DEFAULT_COSFACE_MARGIN,
    DEFAULT_COSFACE_SCALE,
    DEFAULT_NORMFACE_SCALE,
    DEFAULT_TRIPLET_MARGIN,
    LOSS_SPECS,
    LOSSES,
    MINING,
    PML_LOSSES,
    Knob,
    LossSpec,
    loss_spec,
)


def alpha_lower_bound(num_classes: int, p: float = 0.9) -> float:
    """Lower bound on the L2-softmax scale alpha (Ranjan et al. 2017, eq. 6).

    ``alpha_low = log(p (C - 2) / (1 - p))``: the smallest feature norm for which a sample lying on its
    class weight direction can reach softmax probability ``p`` among ``C`` classes. It is undefined for
    ``C <= 2`` (the argument of the log is <= 0).
    """
    if int(num_classes) != num_classes:
        raise ValueError(f"num_classes must be an integer, got {num_classes!r}")
    if num_classes <= 2:
        raise ValueError(
            f"alpha lower bound log(p(C-2)/(1-p)) is undefined for C <= 2 classes (got C={num_classes})"
        )
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be a probability strictly between 0 and 1, got {p}")
    return math.log(p * (num_classes - 2) / (1.0 - p))


AUTO_ALPHA_P = 0.9  # the probability the paper's bound aims for when alpha is "auto"


def auto_alpha(num_classes: int, p: float = AUTO_ALPHA_P) -> float:
    """The alpha that "auto" picks: the paper's lower bound, with C <= 2 classes treated as C = 3.

    The bound is undefined for C <= 2, but the paper's intent (reach probability p) still needs some scale;
    this is the one place that rule lives."""
    return alpha_lower_bound(max(int(num_classes), 3), p)


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    # logsumexp keeps large logits (alpha * cos up to ~64) from overflowing exp().
    target = logits.gather(1, labels.long().view(-1, 1)).squeeze(1)
    return (torch.logsumexp(logits, dim=1) - target).mean()


def _zero_loss(embeddings: Tensor) -> Tensor:
    # A zero that is still connected to the graph, so `loss.backward()` in the trainer never fails.
    return embeddings.sum() * 0


def _check_dims(dim: int, num_classes: int | None = None) -> None:
    if dim < 1:
        raise ValueError(f"embedding dim must be >= 1, got {dim}")
    if num_classes is not None and num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")


class _Head(nn.Module):
    has_classifier: bool = False
    has_alpha: bool = False
    needs_sampler: bool = False

    def logits(self, embeddings: Tensor) -> Tensor:
        raise TypeError(f"{type(self).__name__} has no classifier (has_classifier=False); no logits")

    def class_weights(self) -> Tensor | None:
        return None


class SoftmaxHead(_Head):
    """Plain softmax: ``nn.Linear(dim, C)`` (with bias) on the raw features, cross-entropy loss."""

    has_classifier = True

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        _check_dims(dim, num_classes)
        self.fc = nn.Linear(dim, num_classes)

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.fc(embeddings)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return _cross_entropy(self.logits(embeddings), labels)

    def class_weights(self) -> Tensor:
        """Linear weight rows, [C, d] (detached)."""
        return self.fc.weight.detach()


class L2SoftmaxHead(_Head):
    """L2-constrained softmax (Ranjan et al. 2017): ``alpha * f / ||f||`` then ``nn.Linear`` + CE.

    ``trainable=False``: alpha is a (persistent) buffer. ``trainable=True``: alpha is a scalar
    ``nn.Parameter`` trained directly, as in the paper. It is NOT reparametrised (no exp/softplus), so
    nothing forces it positive: the gradient of correctly classified samples pushes it up (a sharper
    softmax), misclassified ones push it down; ``alpha_value`` lets the trainer log/watch it.
    Both variants are stored under the state_dict key ``alpha``.
    """

    has_classifier = True
    has_alpha = True

    def __init__(self, dim: int, num_classes: int, alpha: float = 16.0, trainable: bool = False) -> None:
        super().__init__()
        _check_dims(dim, num_classes)
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"alpha must be a positive finite number, got {alpha}")
        self.trainable = bool(trainable)
        init = torch.tensor(float(alpha))
        if self.trainable:
            self.alpha = nn.Parameter(init)
        else:
            self.register_buffer("alpha", init)
        self.fc = nn.Linear(dim, num_classes)

    @property
    def alpha_value(self) -> float:
        return float(self.alpha.detach())

    def scale_features(self, embeddings: Tensor) -> Tensor:
        # eps guards an all-zero feature (e.g. dead ReLU output) against 0/0.
        unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return self.alpha.to(embeddings.dtype) * unit

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.fc(self.scale_features(embeddings))

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return _cross_entropy(self.logits(embeddings), labels)

    def class_weights(self) -> Tensor:
        """Linear weight rows, [C, d] (detached)."""
        return self.fc.weight.detach()


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Row-wise ``||x_i - y_i||^2`` (computed from differences, not via the Gram trick, for accuracy)."""
    return (x - y).pow(2).sum(dim=1)


class TripletHead(_Head):
    """Triplet loss on L2-normalised embeddings with squared Euclidean distance.

    ``loss = mean over mined (a, p, n) of max(0, d(a,p) - d(a,n) + margin)``, ``d(x,y) = ||x - y||^2``.
    Mining (PML ``TripletMarginMiner`` with ``LpDistance(power=2)``, i.e. the same squared distance):

    - ``semihard``: triplets with ``d(a,p) < d(a,n) <= d(a,p) + margin``.
    - ``hard``: PML's "hard" = ALL triplets with ``d(a,n) <= d(a,p)`` (negative at least as close as the
      positive); it is not "batch-hard" (one hardest triplet per anchor).
    - ``random``: PML ``get_random_triplet_indices`` (per anchor, ``t_per_anchor`` random positives, each
      with a uniformly random negative; default: as many as the class has samples), no distance filter.

    A batch where nothing is mined (e.g. one class only, or all semihard triplets satisfied) gives a zero
    loss that still has a ``grad_fn``.
    """

    needs_sampler = True

    def __init__(
        self,
        margin: float = DEFAULT_TRIPLET_MARGIN,
        mining: str = "semihard",
        t_per_anchor: int | None = None,
    ) -> None:
        super().__init__()
        if mining not in MINING:
            raise ValueError(f"unknown triplet mining '{mining}'; choose one of: {', '.join(MINING)}")
        if not (math.isfinite(margin) and margin >= 0):
            raise ValueError(f"triplet margin must be a finite number >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining
        self.t_per_anchor = t_per_anchor
        self.miner: nn.Module | None = None
        if mining != "random":
            self.miner = pml_miners.TripletMarginMiner(
                margin=self.margin, type_of_triplets=mining, distance=LpDistance(power=2)
            )

    def mine(self, embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Indices (anchor, positive, negative) of the triplets the loss is averaged over."""
        if self.miner is not None:
            a, p, n = self.miner(embeddings.detach(), labels)
            return a, p, n
        # PML builds CPU masks internally; mining on CPU labels avoids a device mismatch on GPU.
        a, p, n = lmu.get_random_triplet_indices(labels.detach().cpu(), t_per_anchor=self.t_per_anchor)
        dev = embeddings.device
        return a.to(dev), p.to(dev), n.to(dev)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        emb = F.normalize(embeddings, p=2, dim=1)
        a, p, n = self.mine(emb, labels)
        if a.numel() == 0:
            return _zero_loss(embeddings)
        d_ap = squared_distances(emb[a], emb[p])
        d_an = squared_distances(emb[a], emb[n])
        return torch.clamp(d_ap - d_an + self.margin, min=0).mean()


class PMLHead(_Head):
    """Thin wrapper over pytorch-metric-learning losses: ``npair``, ``arcface``, ``cosface``, ``normface``.

    - ``npair``: ``NPairsLoss()`` (PML default: dot product of L2-normalised embeddings, no scale);
      no classifier; ``scale``/``margin`` are ignored.
    - ``arcface``: ``ArcFaceLoss(C, d, margin=<DEGREES>, scale)``; defaults 28.6 deg, 64.
    - ``cosface``: ``CosFaceLoss(C, d, margin=<cosine units>, scale)``; defaults 0.35, 64.
    - ``normface``: ``NormalizedSoftmaxLoss(C, d, temperature=1/scale)``; default scale 16; margin ignored.

    ``logits(embeddings)`` = ``scale * cos(embedding, class weight)`` without any margin (what a test-time
    classifier uses). ``class_weights()`` returns ``W.T`` ([C, d]); PML stores ``W`` as [d, C].
    """

    def __init__(
        self,
        name: str,
        dim: int,
        num_classes: int,
        scale: float | None = None,
        margin: float | None = None,
    ) -> None:
        super().__init__()
        if name not in PML_LOSSES:
            raise ValueError(f"unknown PML loss '{name}'; choose one of: {', '.join(PML_LOSSES)}")
        _check_dims(dim, num_classes)
        if scale is not None and not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale}")
        if margin is not None and not math.isfinite(margin):
            raise ValueError(f"margin must be finite, got {margin}")
        self.name = name
        self.scale: float | None = None
        self.margin: float | None = None
        if name == "npair":
            self.loss = pml_losses.NPairsLoss()
        elif name == "arcface":
            self.scale = float(DEFAULT_ARCFACE_SCALE if scale is None else scale)
            self.margin = float(DEFAULT_ARCFACE_MARGIN_DEG if margin is None else margin)
            self.loss = pml_losses.ArcFaceLoss(num_classes, dim, margin=self.margin, scale=self.scale)
        elif name == "cosface":
            self.scale = float(DEFAULT_COSFACE_SCALE if scale is None else scale)
            self.margin = float(DEFAULT_COSFACE_MARGIN if margin is None else margin)
            self.loss = pml_losses.CosFaceLoss(num_classes, dim, margin=self.margin, scale=self.scale)
        else:  # normface
            self.scale = float(DEFAULT_NORMFACE_SCALE if scale is None else scale)
            self.loss = pml_losses.NormalizedSoftmaxLoss(num_classes, dim, temperature=1.0 / self.scale)
        self.has_classifier = loss_spec(name).has_classifier
        self.needs_sampler = loss_spec(name).needs_sampler

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = self.loss(embeddings, labels)
        # PML returns a graph-less 0 when nothing can be formed (npair: no class with 2 samples).
        if not loss.requires_grad and embeddings.requires_grad:
            return _zero_loss(embeddings)
        return loss

    def _weight(self) -> Tensor:
        return self.loss.W  # [d, C]

    def logits(self, embeddings: Tensor) -> Tensor:
        if not self.has_classifier:
            return super().logits(embeddings)
        # Cast without touching W's storage (PML's forward casts W.data in place; logits need not).
        w = F.normalize(self._weight().to(embeddings.dtype), p=2, dim=0)
        return F.normalize(embeddings, p=2, dim=1) @ w * self.scale

    def class_weights(self) -> Tensor | None:
        if not self.has_classifier:
            return None
        return self._weight().detach().t()


def make_sampler(
    labels: Sequence[int] | np.ndarray | Tensor, m_per_class: int, batch_size: int, length: int
) -> pml_samplers.MPerClassSampler:
    """PML ``MPerClassSampler``: every batch holds ``batch_size / m_per_class`` classes x ``m_per_class``.

    ``length`` is the number of indices per epoch (rounded down to a multiple of ``batch_size``). PML
    checks its preconditions with ``assert`` (gone under ``python -O``), so they are raised here as
    ValueError with the numbers that violate them.
    """
    labels_np = labels.cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    n_classes = len(np.unique(labels_np))
    if m_per_class < 1 or batch_size < 1:
        raise ValueError(f"m_per_class and batch_size must be >= 1 (got {m_per_class}, {batch_size})")
    if batch_size % m_per_class != 0:
        raise ValueError(f"batch_size ({batch_size}) must be a multiple of m_per_class ({m_per_class})")
    if m_per_class * n_classes < batch_size:
        raise ValueError(
            f"batch_size ({batch_size}) needs at least {batch_size // m_per_class} classes with "
            f"m_per_class={m_per_class}, but the labels have only {n_classes}; lower batch_size"
        )
    if length < batch_size:
        raise ValueError(f"length ({length}) must be >= batch_size ({batch_size})")
    return pml_samplers.MPerClassSampler(
        labels_np, m=m_per_class, batch_size=batch_size, length_before_new_iter=length
    )


def build_head(
    loss: str,
    dim: int,
    num_classes: int,
    alpha: float = 16.0,
    alpha_trainable: bool = False,
    margin: float | None = None,
    mining: str = "semihard",
    scale: float | None = None,
) -> nn.Module:
    """Head for ``loss`` (one of ``LOSSES``). ``margin``/``scale`` None -> per-loss defaults (see module doc).

    ``alpha``/``alpha_trainable`` only matter for l2softmax, ``mining`` only for triplet; arguments a loss
    does not use are ignored so the CLI can pass one config to every loss.
    """
    if loss == "softmax":
        return SoftmaxHead(dim, num_classes)
    if loss == "l2softmax":
        return L2SoftmaxHead(dim, num_classes, alpha=alpha, trainable=alpha_trainable)
    if loss == "triplet":
        return TripletHead(margin=DEFAULT_TRIPLET_MARGIN if margin is None else margin, mining=mining)
    if loss in PML_LOSSES:
        return PMLHead(loss, dim, num_classes, scale=scale, margin=margin)
    raise ValueError(f"unknown loss '{loss}'; choose one of: {', '.join(LOSSES)}")
