"""Run-directory arrays for the training-free methods (`knn`, `patch`), in the same format as a
trained `metric` run, so the Anomaly page, the threshold slider and core.score read them unchanged.

`training_free_arrays` returns what the trainer writes (see docs/CONTRACT.md):
- `embeddings`: the embeddings.npz arrays. `emb` is the method's own feature vector (knn: 1280-d pooled
  backbone features, whose kNN cosine scores ARE the knn method; patch: the 152-d patch embedding
  averaged over the grid, for the Explore views only). `score` is the method's score; for knn the
  normal training rows get leave-one-out scores, for patch they are scored against the memory bank
  they helped build (so they read low).
- `method`: the fitted method's arrays (knn reference features, or the patch memory bank and its
  settings) for `method.npz`; `PatchCore.from_arrays` restores a scorer from them.
- `patch_maps`: (patch only) `distances` float32 [N_test, h, w] patch-distance grids, `row` int64
  [N_test] (rows of embeddings.npz), `image_size`, `sigma`; `core.patchcore.distance_maps_to_images`
  turns them into anomaly maps at any display size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from core.methods import KnnFeatures
from core.patchcore import PatchCore


class SplitLike(Protocol):  # core.data.Split
    x: torch.Tensor | np.ndarray
    y: np.ndarray
    anomaly: np.ndarray
    source: list[str]


@dataclass
class TrainingFreeArrays:
    embeddings: dict[str, np.ndarray]
    method: dict[str, np.ndarray]
    patch_maps: dict[str, np.ndarray] | None
    notices: list[str]


def _knn_rows(method: KnnFeatures, splits: Sequence[SplitLike], normal_train: np.ndarray):
    feats = np.concatenate([method.features(s.x) for s in splits])
    method.fit(features=feats[normal_train])
    score = method.score(features=feats)
    score[normal_train] = method.train_scores()  # leave-one-out, as a metric run stores them
    return feats, score, None


def _patch_rows(method: PatchCore, splits: Sequence[SplitLike], normal_train: np.ndarray):
    grids = np.concatenate([method.patch_features(s.x) for s in splits])
    method.fit(features=grids[normal_train])
    distances = method.patch_distances(features=grids)
    return grids.mean(axis=(1, 2)), method.image_scores(distances), distances


def training_free_arrays(
    method: KnnFeatures | PatchCore,
    train: SplitLike,
    val: SplitLike,
    test: SplitLike,
    class_names: Sequence[str],
    normal_classes: Sequence[int],
) -> TrainingFreeArrays:
    """Fit `method` on the normal training images (reference-class rows are left out of its bank)
    and score every row of train, val and test, in that order (split codes 0, 1, 2)."""
    splits = (train, val, test)
    split = np.concatenate([np.full(len(s.y), code, dtype=np.int8) for code, s in enumerate(splits)])
    label = np.concatenate([np.asarray(s.y, dtype=np.int64) for s in splits])
    normal_train = (split == 0) & np.isin(label, list(normal_classes))
    if normal_train.sum() < 2:
        raise ValueError(f"the {method.name} method needs at least 2 normal training images")
    if isinstance(method, PatchCore):
        emb, score, distances = _patch_rows(method, splits, normal_train)
    else:
        emb, score, distances = _knn_rows(method, splits, normal_train)
    emb = emb.astype(np.float32)
    embeddings = {
        "emb": emb,
        "norm": np.linalg.norm(emb, axis=1).astype(np.float32),
        "label": label,
        "split": split,
        "anomaly": np.concatenate([np.asarray(s.anomaly, dtype=bool) for s in splits]),
        "source": np.array([src for s in splits for src in s.source], dtype=str),
        "score": score.astype(np.float32),
        "class_weights": np.zeros((0, emb.shape[1]), np.float32),
        "class_names": np.array(list(class_names), dtype=str),
    }
    maps = None
    if distances is not None:
        rows = np.flatnonzero(split == 2)
        maps = {
            "distances": distances[rows].astype(np.float32),
            "row": rows.astype(np.int64),
            "image_size": np.asarray(method.config.image_size),
            "sigma": np.asarray(method.config.sigma),
        }
    return TrainingFreeArrays(embeddings, method.to_arrays(), maps, list(method.notices))
