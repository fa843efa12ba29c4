"""Reference set for one-class photo uploads: random crops of natural photographs that ship inside
scikit-image and scikit-learn (no download). Texture photographs (grass, gravel, brick, moon, ...) are
left out on purpose: they could be the user's own kind of surface, and a reference class that looks
like the normal class would teach the embedding to separate what should be close."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _motorcycle() -> np.ndarray:
    from skimage import data

    return data.stereo_motorcycle()[0]  # the left view; the right one is nearly the same picture


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


# name -> loader; the names are what the UI and README list
REFERENCE_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut (scikit-image)": _skimage("astronaut"),
    "camera (scikit-image)": _skimage("camera"),
    "chelsea (scikit-image)": _skimage("chelsea"),
    "coffee (scikit-image)": _skimage("coffee"),
    "coins (scikit-image)": _skimage("coins"),
    "hubble_deep_field (scikit-image)": _skimage("hubble_deep_field"),
    "motorcycle_left (scikit-image)": _motorcycle,
    "rocket (scikit-image)": _skimage("rocket"),
    "china.jpg (scikit-learn)": _sklearn("china.jpg"),
    "flower.jpg (scikit-learn)": _sklearn("flower.jpg"),
}
EXCLUDED_TEXTURES = ("grass", "gravel", "brick", "moon", "immunohistochemistry")


@dataclass
class ReferenceCrops:
    images: np.ndarray  # float32 [N, C, size, size] in [0, 1]
    sources: list[str]  # per crop: the photograph it was cut from
    photos: list[str]  # the photographs used, in REFERENCE_PHOTOS order (for the UI's notice)

    def notice(self) -> str:
        return f"reference set: {len(self.images)} random crops of {', '.join(self.photos)}"


def _as_float_rgb(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    a = a.astype(np.float32) / (255.0 if a.dtype == np.uint8 else 1.0)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]


def _crop_resized(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop, its side between a quarter of the photo's short side and the whole
    short side (at least `size` px when the photo allows), resized to size x size -> [3, size, size]."""
    h, w = photo.shape[:2]
    short = min(h, w)
    side = int(rng.integers(min(max(size, short // 4), short), short + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(photo[y : y + side, x : x + side].transpose(2, 0, 1)))[None]
    resized = F.interpolate(
        crop, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
    )
    return resized[0].clamp_(0, 1).numpy()


def reference_crops(n: int, size: int, channels: int = 3, seed: int = 0) -> ReferenceCrops:
    """`n` crops spread evenly over the photographs (round robin in a seeded random order), each
    [channels, size, size]; grayscale output is the mean of R, G and B. Deterministic from `seed`."""
    if n < 1:
        raise ValueError(f"need at least 1 reference crop, got {n}")
    if channels not in (1, 3):
        raise ValueError(f"reference crops have 1 or 3 channels, got {channels}")
    rng = np.random.default_rng(seed)
    names = list(REFERENCE_PHOTOS)
    order = [names[i] for i in rng.permutation(len(names))]
    chosen = [order[i % len(order)] for i in range(n)]
    photos = {name: _as_float_rgb(REFERENCE_PHOTOS[name]()) for name in dict.fromkeys(chosen)}
    crops = np.stack([_crop_resized(photos[name], size, rng) for name in chosen])
    if channels == 1:
        crops = crops.mean(axis=1, keepdims=True)
    used = [name for name in names if name in photos]
    return ReferenceCrops(images=crops.astype(np.float32), sources=chosen, photos=used)
