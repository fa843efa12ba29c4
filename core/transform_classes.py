"""Rotated and mirrored copies of the known classes, trained as classes of their own.

Self-supervised label augmentation (Lee et al. 2020; the "shifting transformations" of Tack et al.
2020): every training batch is joined by a copy in which each image is rotated or mirrored (one
transform of the square's symmetry group, drawn per image) and labelled ``t * C + y``: class ``y``
seen through transform ``t`` is a class of its own. A classifier of the C known classes only learns
what tells them apart; this one must also learn what an upright digit of each known class looks
like, so an unknown digit that the plain network puts next to a known one (a closed 9 next to a 4)
lands apart from it, and the kNN anomaly score sees the gap.

``logits`` and ``class_weights`` show only the C upright classes, so accuracy, the sphere's class rays
and the export see a C-class model; the extra classes exist only in training.

Scoring looks at two views of each image (``SCORE_VIEWS``): the image and the image turned by 180°,
each against the training images seen the same way. The network learned both as classes of their own,
and the two views err on different samples, so their mean similarity separates unknown digits better
than the upright view alone (RESULTS.md, issue 12).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.config import TRANSFORM_SETS

# the views the anomaly score compares (transform indices): upright, and turned by 180°
SCORE_VIEWS = (0, 2)


def transform_images(x: Tensor, t: int) -> Tensor:
    """Images [N, C, H, W] (square) through transform `t`: 0 identity, 1-3 rotation by 90°·t,
    4 left-right mirror, 5 up-down mirror, 6 transpose, 7 anti-transpose."""
    if t == 0:
        return x
    if t <= 3:
        return torch.rot90(x, t, dims=(2, 3))
    if t == 4:
        return x.flip(3)
    if t == 5:
        return x.flip(2)
    if t == 6:
        return x.transpose(2, 3)
    if t == 7:
        return torch.rot90(x, 2, dims=(2, 3)).transpose(2, 3)
    raise ValueError(f"transform index must be 0-7, got {t}")


def class_multiplier(transforms: str) -> int:
    """How many classes the head holds per known class (1 + the extra transforms)."""
    if transforms not in TRANSFORM_SETS:
        names = ", ".join(TRANSFORM_SETS)
        raise ValueError(f"unknown transform_classes '{transforms}'; choose one of: {names}")
    return 1 + len(TRANSFORM_SETS[transforms])


class TransformedClassesHead(nn.Module):
    """A classifier head of ``C * (1 + T)`` classes that presents itself as a C-class head.

    The loss step asks it for ``expand_batch(x, y)`` (the batch plus one transformed copy, with the
    copies' joint labels) and trains the inner head on all of it; everything after training sees the
    C upright classes only."""

    has_classifier = True
    needs_sampler = False

    def __init__(self, head: nn.Module, num_classes: int, transforms: str) -> None:
        super().__init__()
        if not getattr(head, "has_classifier", False):
            raise ValueError("transform_classes needs a loss with a classifier (not triplet or npair)")
        if class_multiplier(transforms) == 1:
            raise ValueError(f"transform_classes '{transforms}' adds no classes")
        self.head = head
        self.num_classes = int(num_classes)
        self.transforms = TRANSFORM_SETS[transforms]

    @property
    def has_alpha(self) -> bool:
        return bool(getattr(self.head, "has_alpha", False))

    @property
    def alpha_value(self) -> float:
        return self.head.alpha_value

    @property
    def score_views(self) -> tuple[int, ...]:
        """The transforms whose embeddings the anomaly score compares: the upright image and the
        SCORE_VIEWS this head was trained on."""
        return (0,) + tuple(t for t in SCORE_VIEWS if t in self.transforms)

    def expand_batch(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The batch followed by a copy of it, each image through one random transform, labelled
        ``t * C + y`` (t counts from 1 over this head's transforms)."""
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"transform_classes needs square images, got {x.shape[-2]}x{x.shape[-1]}")
        pick = torch.randint(0, len(self.transforms), (len(x),), device=x.device)
        copies = torch.empty_like(x)
        for i, t in enumerate(self.transforms):
            chosen = pick == i
            if chosen.any():
                copies[chosen] = transform_images(x[chosen], t)
        return torch.cat([x, copies]), torch.cat([y, (pick + 1) * self.num_classes + y])

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.head(embeddings, labels)

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.head.logits(embeddings)[:, : self.num_classes]

    def class_weights(self) -> Tensor | None:
        weights = self.head.class_weights()
        return None if weights is None else weights[: self.num_classes]


def with_transform_classes(head: nn.Module, num_classes: int, transforms: str) -> nn.Module:
    """`head` itself for "none"; else wrapped so that it trains on the transformed copies too."""
    if class_multiplier(transforms) == 1:
        return head
    return TransformedClassesHead(head, num_classes, transforms)
