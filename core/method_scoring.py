"""Scoring new images with a run's own method, so every method's run scores the way it was evaluated.

- `metric`: the run's model.pt embeds the images; kNN cosine distance to the normal training rows.
- `knn`: the pretrained EfficientNet-Lite0's pooled features are the embedding; the same kNN rule.
- `patch`: the memory bank of method.npz (`PatchCore.from_arrays`, read with allow_pickle=False); the
  anomaly map is the patch-distance grid upsampled to the image and smoothed
  (core.patchcore.distance_maps_to_images), in the scores' units, and the score is its peak at the
  input size (`PatchCore.image_scores`). Neighbours (for display) come from the grid-averaged patch
  embedding, as embeddings.npz stores it."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from core.rundir import METHOD_FILE
from core.runs import Run, RunError, embed_images, score_embeddings


@dataclass
class Scored:
    emb: np.ndarray  # [N, d] the run's embedding of each image (what its neighbours are found with)
    scores: np.ndarray  # [N] anomaly scores, in the threshold's units
    nn_rows: np.ndarray  # [N, k] rows of the run's arrays
    nn_dist: np.ndarray  # [N, k] cosine distances to them
    maps: np.ndarray | None = None  # patch runs with maps: float32 [N, S, S], the scores' units
    notices: list[str] = field(default_factory=list)


def run_method(run: Run) -> str:
    return str(run.summary.get("method") or "metric")


@lru_cache(maxsize=4)
def _extractor(pretrained: bool, image_size: int):
    from core.backbones import EfficientNetLite0Features

    return EfficientNetLite0Features(pretrained=pretrained, image_size=image_size).eval()


def _method_arrays(run: Run) -> dict[str, np.ndarray]:
    path = run.run_dir / METHOD_FILE
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise RunError(f"{run.name}: {METHOD_FILE} is missing") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise RunError(f"{run.name}: {METHOD_FILE} is unreadable ({e.__class__.__name__})") from None


def load_patchcore(run: Run):
    """The run's fitted PatchCore, from method.npz (plain arrays, never unpickled)."""
    from core.patchcore import PatchCore

    arrays = _method_arrays(run)
    try:
        method = PatchCore.from_arrays(arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise RunError(f"{run.name}: {METHOD_FILE} is not a patch memory bank ({e})") from None
    method._extractor = _extractor(method.config.pretrained, method.config.image_size)
    return method


def knn_image_size(run: Run) -> int:
    size = run.summary.get("method_image_size")
    if size is None:
        size = int(_method_arrays(run)["image_size"])
    return int(size)


def score_images(run: Run, images: np.ndarray, k: int | None = None, with_maps: bool = False) -> Scored:
    """Score images [N, C, S, S] in [0, 1] (the run's input size) with the run's method."""
    from core.patchcore import distance_maps_to_images

    method = run_method(run)
    if method == "metric":
        emb, scored_as = embed_images(run.run_dir, images)
        return Scored(emb, *score_embeddings(run, scored_as, k))
    if method == "knn":
        from core.features import extract_features, upsample_notice

        size = knn_image_size(run)
        pretrained = bool(run.summary.get("pretrained", True))
        emb = extract_features(images, "global", size, extractor=_extractor(pretrained, size))
        notice = upsample_notice(images.shape[-2], images.shape[-1], size)
        return Scored(emb, *score_embeddings(run, emb, k), notices=[notice] if notice else [])
    if method != "patch":
        raise RunError(f"{run.name}: unknown method '{method}' in summary.json")
    patchcore = load_patchcore(run)
    grids = patchcore.patch_features(images)
    distances = patchcore.patch_distances(features=grids)
    emb = grids.mean(axis=(1, 2)).astype(np.float32)
    _, nn_rows, nn_dist = score_embeddings(run, emb, k)
    maps = None
    if with_maps:
        cfg = patchcore.config
        out_hw = (int(images.shape[-2]), int(images.shape[-1]))
        maps = distance_maps_to_images(distances, cfg.image_size, out_hw, cfg.sigma).astype(np.float32)
    scores = patchcore.image_scores(distances)
    return Scored(emb, scores, nn_rows, nn_dist, maps, list(patchcore.notices))
