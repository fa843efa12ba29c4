"""Deterministic, stratified train/val/test splits, and the pool of samples they are cut from."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.rundir import SPLIT_TEST as TEST  # noqa: F401 - part codes are the run directory's split codes
from core.rundir import SPLIT_TRAIN as TRAIN  # noqa: F401
from core.rundir import SPLIT_VAL as VAL  # noqa: F401


@dataclass
class Pool:
    """Samples before holdout/reference handling; x is uint8 (0..255) or float32 (0..1)."""

    x: np.ndarray  # [N, C, S, S]
    y: np.ndarray  # int64 [N]
    part: np.ndarray  # int8 [N]: TRAIN / VAL / TEST
    anomaly: np.ndarray  # bool [N]
    source: list[str]


def _largest_remainder(counts: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Share `total` among groups in proportion to counts, exactly (Hamilton apportionment)."""
    if total <= 0 or counts.sum() == 0:
        return np.zeros_like(counts)
    quota = counts * (total / counts.sum())
    alloc = np.minimum(np.floor(quota).astype(np.int64), counts)
    missing = total - int(alloc.sum())
    if missing > 0:
        frac = np.where(alloc < counts, quota - alloc, -1.0)
        # Random tie-break (seeded) so no class is systematically favoured by its position.
        order = np.lexsort((rng.random(len(counts)), -frac))
        alloc[order[:missing]] += 1
    return alloc


def stratified_split(labels: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Partition indices of `labels` into len(sizes) parts of exactly those sizes, each with the class
    proportions of the whole (to within one sample per class). Deterministic for a given seed."""
    labels = np.asarray(labels)
    if sum(sizes) != len(labels):
        raise ValueError(f"sizes {list(sizes)} do not add up to {len(labels)} samples")
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(labels, return_inverse=True)
    remaining = np.bincount(inverse, minlength=len(classes)).astype(np.int64)
    # Allocate the smaller, later parts first; the first part takes what is left of each class.
    per_part = [np.zeros_like(remaining) for _ in sizes]
    for p in range(len(sizes) - 1, 0, -1):
        per_part[p] = _largest_remainder(remaining, int(sizes[p]), rng)
        remaining = remaining - per_part[p]
    per_part[0] = remaining
    parts: list[list[np.ndarray]] = [[] for _ in sizes]
    for c in range(len(classes)):
        members = rng.permutation(np.flatnonzero(inverse == c))
        start = 0
        for p in range(len(sizes)):
            parts[p].append(members[start : start + per_part[p][c]])
            start += per_part[p][c]
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def per_class_parts(labels: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Part code per sample from per-class fractions, keeping at least one training sample per class."""
    rng = np.random.default_rng(seed)
    part = np.zeros(len(labels), dtype=np.int8)
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = len(members)
        counts = [int(np.floor(f * n + 0.5)) for f in fractions[1:]]
        # Tiny classes: a class with no training image cannot be learned, so val/test give way.
        while n - sum(counts) < 1 and sum(counts) > 0:
            k = next(i for i in range(len(counts)) if counts[i] > 0)
            counts[k] -= 1
        start = n - sum(counts)
        for p, cnt in enumerate(counts, start=1):
            part[members[start : start + cnt]] = p
            start += cnt
    return part


def stratified_subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(y) <= limit:
        return np.arange(len(y))
    _, chosen = stratified_split(y, (len(y) - limit, limit), seed)
    return chosen
