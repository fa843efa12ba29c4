"""Frozen-backbone features, computed once per dataset and cached on disk.

A cache file is `<data_root>/features/<key>.npz`. The key hashes the images' content (file bytes, or
the pixel array for in-memory sets), the architecture, the image size, the layer set and whether the
weights are pretrained, so any change gives a new file. Each file also stores a sha256 of the key and
of every array; a tampered, truncated or foreign file fails that check, is reported as a miss and is
recomputed. Files are read with allow_pickle=False and written atomically."""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.backbones import (
    ARCH,
    DEFAULT_IMAGE_SIZE,
    PATCH_BLOCKS,
    PATCH_STRIDE,
    EfficientNetLite0Features,
    default_device,
    resize_batch,
)
from core.fsutil import write_npz

FEATURE_DIR = "features"
_KEY_FIELD, _DIGEST_FIELD = "cache_key", "cache_digest"
# What a damaged .npz can raise while it is opened or an array is decompressed.
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True)
class FeatureSpec:
    """What, besides the images, decides the features' values."""

    arch: str = ARCH
    image_size: int = DEFAULT_IMAGE_SIZE
    layers: str = "global"  # "global" (pooled) or "patch:1,2,4" (PatchCore-style patch embedding)
    pretrained: bool = True


def patch_layers(blocks: Sequence[int] = PATCH_BLOCKS) -> str:
    return "patch:" + ",".join(str(b) for b in blocks)


# ---------------------------------------------------------------- fingerprints and keys
def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def files_fingerprint(paths: Sequence[str | Path]) -> str:
    """Order-sensitive hash of the files' contents (not their names: a copied folder hits the cache)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(p).encode())
    return h.hexdigest()


def array_fingerprint(images: np.ndarray | torch.Tensor) -> str:
    """Hash of an in-memory image array (e.g. the mnist-5k rows), including its dtype and shape."""
    a = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def feature_cache_key(fingerprint: str, spec: FeatureSpec) -> str:
    payload = json.dumps({"images": fingerprint, **asdict(spec)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def cache_path(data_root: str | Path, key: str) -> Path:
    return Path(data_root) / FEATURE_DIR / f"{key}.npz"


# ---------------------------------------------------------------- cache files
def arrays_digest(key: str, arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(key.encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_cached(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    reserved = {_KEY_FIELD, _DIGEST_FIELD} & set(arrays)
    if reserved:
        raise ValueError(f"array names {sorted(reserved)} are reserved by the feature cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = arrays_digest(key, arrays)
    write_npz(path, **arrays, **{_KEY_FIELD: np.array(key), _DIGEST_FIELD: np.array(digest)})


def load_cached(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing, unreadable, for another key, or its
    contents do not match the stored digest (tampered or truncated). Never unpickles."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except _READ_ERRORS:
        return None
    stored_key = arrays.pop(_KEY_FIELD, None)
    stored_digest = arrays.pop(_DIGEST_FIELD, None)
    if stored_key is None or stored_digest is None or str(stored_key) != key:
        return None
    if str(stored_digest) != arrays_digest(key, arrays):
        return None
    return arrays


def cached_features(
    data_root: str | Path,
    key: str,
    compute: Callable[[], dict[str, np.ndarray]],
    notices: list[str] | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """(arrays, hit): the valid cache file for `key`, else `compute()` written to a fresh cache file.
    A file that exists but fails the check adds a one-line notice to `notices` (when given)."""
    path = cache_path(data_root, key)
    arrays = load_cached(path, key)
    if arrays is not None:
        return arrays, True
    if path.exists() and notices is not None:
        notices.append(f"cached features {path} were damaged or changed; recomputed them")
    arrays = compute()
    save_cached(path, key, arrays)
    return arrays, False


# ---------------------------------------------------------------- extraction
def _as_batch_source(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if t.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(t.shape)}")
    return t


def upsample_notice(height: int, width: int, image_size: int) -> str | None:
    """A notice when images are enlarged to the backbone's input size (the patch grid needs it)."""
    if min(height, width) >= image_size:
        return None
    cells = image_size // 8
    return (
        f"images of {width}x{height} px were upsampled to {image_size}x{image_size} px "
        f"so the backbone sees a {cells}x{cells} patch grid"
    )


def patch_grid(image_size: int) -> tuple[int, int]:
    """The patch grid of an image_size input: the stride-8 stage's output (TF "same" padding)."""
    side = -(-int(image_size) // PATCH_STRIDE)
    return side, side


def patch_embedding(maps: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
    """PatchCore-style locally aware patch features: each map's cells averaged over their 3x3
    neighbourhood, resized (bilinear) to the stride-8 `grid` (finer maps shrunk, deeper ones
    enlarged), then concatenated."""
    pooled = [F.avg_pool2d(m, kernel_size=3, stride=1, padding=1) for m in maps]
    grid = tuple(int(g) for g in grid)
    resized = [
        p if p.shape[-2:] == grid else F.interpolate(p, size=grid, mode="bilinear", align_corners=False)
        for p in pooled
    ]
    return torch.cat(resized, dim=1)


def backbone_features(
    net: torch.nn.Module, images: torch.Tensor, image_size: int, blocks: tuple[int, ...] | None
) -> torch.Tensor:
    """One batch through the backbone at image_size: pooled features [N, 1280] (blocks None) or the
    patch embedding [N, h, w, D]. Extraction and the exported graph (core.export) both call this, so
    a run and its export compute the same features."""
    x = resize_batch(images, image_size)
    if blocks is None:
        return net(x)
    return patch_embedding(net.feature_maps(x, blocks), patch_grid(image_size)).permute(0, 2, 3, 1)


@torch.inference_mode()
def extract_features(
    images: np.ndarray | torch.Tensor,
    layers: str = "global",
    image_size: int = DEFAULT_IMAGE_SIZE,
    pretrained: bool = True,
    extractor: EfficientNetLite0Features | None = None,
    batch_size: int = 32,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Frozen EfficientNet-Lite0 features of images in [0, 1] ([N, 1|3, H, W], resized to image_size).
    layers="global": [N, 1280] pooled features. layers="patch:a,b": [N, h, w, D] patch embedding of
    blocks a and b on the stride-8 grid (h = w = ceil(image_size / 8))."""
    x = _as_batch_source(images)
    blocks = (
        tuple(int(b) for b in layers.split(":", 1)[1].split(",")) if layers.startswith("patch:") else None
    )
    if layers != "global" and blocks is None:
        raise ValueError(f"unknown layer set '{layers}'; use 'global' or 'patch:<block>,<block>'")
    device = torch.device(device) if device is not None else default_device()
    net = extractor if extractor is not None else EfficientNetLite0Features(pretrained, image_size)
    net = net.to(device).eval()
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(device, torch.float32)
        feats = backbone_features(net, batch, image_size, blocks)
        out.append(feats.float().cpu().numpy())
    if not out:
        raise ValueError("no images to extract features from")
    return np.concatenate(out, axis=0)


def cached_extract(
    images: np.ndarray | torch.Tensor,
    data_root: str | Path,
    spec: FeatureSpec,
    fingerprint: str | None = None,
    notices: list[str] | None = None,
    **extract_kwargs: object,
) -> tuple[np.ndarray, bool]:
    """(features, hit): `extract_features` through the cache. `fingerprint` defaults to the pixels'
    hash; pass `files_fingerprint(paths)` when the images come from files."""
    if spec.arch != ARCH:
        raise ValueError(f"feature cache supports '{ARCH}' only, got '{spec.arch}'")
    key = feature_cache_key(fingerprint or array_fingerprint(images), spec)

    def compute() -> dict[str, np.ndarray]:
        feats = extract_features(images, spec.layers, spec.image_size, spec.pretrained, **extract_kwargs)
        return {"features": feats}

    arrays, hit = cached_features(data_root, key, compute, notices)
    return arrays["features"], hit
