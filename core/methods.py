"""Scoring methods with one interface, side by side.

- `metric`: the trained embedding of core.train with kNN scoring (lives in the trainer, not here).
- `knn`: pretrained EfficientNet-Lite0 global features, kNN cosine distance to the good images
  (core.anomaly.knn_cosine_scores), no training.
- `patch`: PatchCore-style patch memory bank (core.patchcore.PatchCore), with anomaly maps.

Training-free methods share: `fit(good_images, features=None)`, `score(images, features=None) ->
[N]`, `notices: list[str]`, `layers` (the feature-cache layer set) and `to_arrays()`. Only `patch`
has `anomaly_maps(images)` / `score_and_maps(images)`."""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from core.anomaly import DEFAULT_K, knn_cosine_scores
from core.backbones import DEFAULT_IMAGE_SIZE, EfficientNetLite0Features, default_device
from core.features import extract_features, upsample_notice
from core.patchcore import PatchCore, PatchCoreConfig

METHODS = ("metric", "knn", "patch")
TRAINING_FREE_METHODS = ("knn", "patch")
METHOD_HELP = {
    "metric": "train an embedding with the chosen loss, then score by kNN distance to good images",
    "knn": "no training: pretrained features, score = distance to the most similar good images",
    "patch": "no training: compare every image patch to good patches; shows where the defect is",
}


class InspectionMethod(Protocol):
    name: str
    notices: list[str]

    @property
    def layers(self) -> str: ...

    def fit(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> object: ...

    def score(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> np.ndarray: ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...


class KnnFeatures:
    """The `knn` method: global pooled pretrained features; score = mean cosine distance to the k
    nearest good training images."""

    name = "knn"
    layers = "global"

    def __init__(
        self,
        k: int = DEFAULT_K,
        image_size: int = DEFAULT_IMAGE_SIZE,
        pretrained: bool = True,
        device: torch.device | str | None = None,
        extractor: EfficientNetLite0Features | None = None,
        batch_size: int = 32,
    ) -> None:
        self.k = int(k)
        self.image_size = int(image_size)
        self.pretrained = bool(pretrained)
        self.device = torch.device(device) if device is not None else default_device()
        self.batch_size = batch_size
        self._extractor = extractor
        self.reference: np.ndarray | None = None
        self.notices: list[str] = []

    def features(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """[N, 1280] pooled features (the 'embedding' this method scores with)."""
        notice = upsample_notice(images.shape[-2], images.shape[-1], self.image_size)
        if notice and notice not in self.notices:
            self.notices.append(notice)
        if self._extractor is None:
            self._extractor = EfficientNetLite0Features(self.pretrained, self.image_size)
        return extract_features(
            images,
            "global",
            self.image_size,
            extractor=self._extractor,
            batch_size=self.batch_size,
            device=self.device,
        )

    def fit(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> KnnFeatures:
        ref = self.features(images) if features is None else np.asarray(features, dtype=np.float32)
        if len(ref) < 2:
            raise ValueError("the knn method needs at least 2 good training images")
        self.reference = ref
        return self

    def score(
        self, images: np.ndarray | torch.Tensor | None = None, features: np.ndarray | None = None
    ) -> np.ndarray:
        if self.reference is None:
            raise RuntimeError("knn method is not fitted: call fit() with good images first")
        query = self.features(images) if features is None else np.asarray(features, dtype=np.float32)
        return knn_cosine_scores(query, self.reference, k=self.k)[0]

    def train_scores(self) -> np.ndarray:
        """Leave-one-out scores of the good training images (as embeddings.npz stores for train rows)."""
        if self.reference is None:
            raise RuntimeError("knn method is not fitted: call fit() with good images first")
        return knn_cosine_scores(self.reference, self.reference, k=self.k, exclude_self=True)[0]

    def to_arrays(self) -> dict[str, np.ndarray]:
        if self.reference is None:
            raise RuntimeError("knn method is not fitted: nothing to save")
        return {
            "reference": self.reference,
            "k": np.asarray(self.k),
            "image_size": np.asarray(self.image_size),
        }


def build_method(
    name: str,
    image_size: int = DEFAULT_IMAGE_SIZE,
    pretrained: bool = True,
    k: int = DEFAULT_K,
    device: torch.device | str | None = None,
    patch_config: PatchCoreConfig | None = None,
) -> InspectionMethod:
    """A training-free method by name ('knn' or 'patch'); 'metric' is trained by core.train."""
    if name == "knn":
        return KnnFeatures(k=k, image_size=image_size, pretrained=pretrained, device=device)
    if name == "patch":
        cfg = patch_config or PatchCoreConfig(image_size=image_size, pretrained=pretrained)
        return PatchCore(cfg, device=device)
    if name == "metric":
        raise ValueError("method 'metric' is trained by core.train, not built here")
    raise ValueError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
