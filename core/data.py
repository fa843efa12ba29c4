"""Data sources: the bundled 5k MNIST digits, full MNIST, and user folders or zips.

Every source ends up as a DataBundle with deterministic train/val/test splits, optional held-out
classes (anomalies at test time) and, when only one normal class is left, reference classes so a
softmax classifier has something to separate the normal class from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import DataError, IngestError
from core.ingest import load_thumbnail_image, resolve_upload, scan_dataset
from core.mnist import (
    MNIST_SIDE,
    full_mnist_pool,
    mnist5k_arrays,
    mnist5k_pool,
    mnist_thumbnail,
    try_full_mnist,
)
from core.splits import TEST, TRAIN, VAL, per_class_parts, stratified_split, stratified_subsample
from core.splits import Pool as _Pool

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
FOLDER_FRACTIONS = (0.7, 0.1, 0.2)  # train, val, test for class-per-folder uploads
MVTEC_VAL_FRACTION = 0.1
MAX_REFERENCE_SAMPLES = 2000
# one-class photo uploads: crops of natural photographs (core.reference_photos), one class per photo;
# about as many as the good images, within these bounds (at 224 px, 500 crops are 300 MB of floats)
PHOTO_REFERENCE_RANGE = (100, 500)
PHOTO_SOURCE_PREFIX = "reference-photo#"
REFERENCE_VAL_FRACTION = 0.1


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


# ---------------------------------------------------------------------------------------- uploads


def _upload_pool(
    root: Path, image_size: int | None, seed: int
) -> tuple[_Pool, list[str], list[int], int, int, list[tuple[str, str]]]:
    """(pool, class names, normal class indices, channels, image size, skipped) for a folder: the
    scanned dataset (core.ingest) split into train/val/test parts here."""
    scan = scan_dataset(root, image_size)
    if not scan.normal_classes:
        raise DataError(f"no usable normal images under {root} (train/good is empty or unreadable)")
    class_names = scan.normal_classes + scan.anomaly_classes
    index = {n: i for i, n in enumerate(class_names)}
    y = np.array([index[label] for label in scan.labels], dtype=np.int64)
    part = np.full(len(y), TEST, dtype=np.int8)
    if scan.layout == "imagefolder":
        part = per_class_parts(y, FOLDER_FRACTIONS, seed)
    else:
        train_rows = np.flatnonzero([role == "train" for role in scan.roles])
        part[train_rows] = TRAIN
        # MVTec has no validation split: hold back 10% (at least one) of each category's train/good.
        rng = np.random.default_rng(seed)
        for c in np.unique(y[train_rows]):
            members = rng.permutation(train_rows[y[train_rows] == c])
            n_val = max(1, int(np.floor(MVTEC_VAL_FRACTION * len(members) + 0.5))) if len(members) > 1 else 0
            part[members[:n_val]] = VAL
    pool = _Pool(scan.images, y, part, scan.anomaly, scan.paths)
    normal = list(range(len(scan.normal_classes)))
    return pool, class_names, normal, scan.channels, scan.image_size, scan.skipped


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
        x_all, y_all = mnist5k_arrays()
        names = [str(d) for d in range(10)]
        keep = stratified_subsample(y_all, MAX_REFERENCE_SAMPLES, seed)
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
    root = resolve_upload(reference, data_root)
    scan = scan_dataset(root, size, channels, normal_only=True)
    if not scan.labels:
        raise DataError(f"no usable reference images under {root}")
    names = scan.normal_classes
    y = np.array([names.index(label) for label in scan.labels], dtype=np.int64)
    keep = stratified_subsample(y, MAX_REFERENCE_SAMPLES, seed)
    return torch.from_numpy(scan.images[keep]), names, y[keep], [scan.paths[i] for i in keep], scan.skipped


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


def _source_pool(
    data: str, data_root: str | os.PathLike, seed: int, image_size: int | None, notices: list[str]
) -> tuple[str, _Pool, list[str], list[int], int, int, list[tuple[str, str]]]:
    """(name, pool, class names, normal class indices, channels, image size, skipped) of a data source."""
    name, key = data, data.lower()
    if key == "mnist":
        arrays, why = try_full_mnist(Path(data_root))
        if arrays is None:
            notices.append(
                f"notice: full MNIST not found under {data_root} and {why}; using the bundled mnist-5k"
            )
            name, pool = "mnist-5k", mnist5k_pool(seed)
        else:
            pool = full_mnist_pool(arrays, seed)
    elif key == "mnist-5k":
        name, pool = "mnist-5k", mnist5k_pool(seed)
    else:
        root = resolve_upload(data, data_root)
        pool, class_names, normal, channels, size, skipped = _upload_pool(
            root, int(image_size) if image_size else None, seed
        )
        return name, pool, class_names, normal, channels, size, skipped
    digits = [str(d) for d in range(10)]
    return name, pool, digits, list(range(10)), 1, int(image_size or MNIST_SIDE), []


def _photo_reference(
    bundle: DataBundle, seed: int
) -> tuple[torch.Tensor, list[str], np.ndarray, list[str], str]:
    """(x, class names, y, sources, description) of natural-photo crops, one class per photograph."""
    from core.reference_photos import reference_crops

    low, high = PHOTO_REFERENCE_RANGE
    n = min(high, max(low, len(bundle.train) + len(bundle.val)))
    crops = reference_crops(n, bundle.image_size, bundle.channels, seed)
    names = list(crops.photos)
    y = np.array([names.index(src) for src in crops.sources], dtype=np.int64)
    sources = [f"{PHOTO_SOURCE_PREFIX}{i}:{src}" for i, src in enumerate(crops.sources)]
    return torch.from_numpy(crops.images), names, y, sources, crops.notice()


def _is_photo_bundle(bundle: DataBundle) -> bool:
    from core.defaults import DataProfile

    return DataProfile(len(bundle.train), bundle.channels, bundle.image_size).is_photo


def _add_reference(
    bundle: DataBundle, reference: str, data_root: str | os.PathLike, seed: int, is_mnist: bool
) -> None:
    """With a single normal class, add reference classes ("ref:<name>") to train/val, or refuse."""
    ref_value = str(reference).strip()
    ref_keyword = ref_value.lower()
    normal = bundle.normal_classes
    if len(normal) != 1:
        if ref_keyword not in ("auto", "none"):
            bundle.notices.append(
                f"notice: reference {ref_value!r} not used: the data already has {len(normal)} normal classes"
            )
        return
    only = bundle.class_names[normal[0]]
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
    photo_notice = None
    if keyword == "auto" and not is_mnist and _is_photo_bundle(bundle):
        x_ref, ref_names, y_ref, src_ref, photo_notice = _photo_reference(bundle, seed)
    else:
        x_ref, ref_names, y_ref, src_ref, ref_skipped = _reference_pool(
            keyword or ref_value, data_root, bundle.image_size, bundle.channels, seed
        )
        bundle.skipped += ref_skipped
    offset = len(bundle.class_names)
    bundle.class_names = bundle.class_names + [f"{REF_PREFIX}{n}" for n in ref_names]
    bundle.train_classes += list(range(offset, offset + len(ref_names)))
    y_ref = y_ref + offset
    n_val = int(round(REFERENCE_VAL_FRACTION * len(y_ref))) if len(y_ref) > 1 else 0
    ref_train, ref_val = stratified_split(y_ref, (len(y_ref) - n_val, n_val), seed)
    bundle.train = _concat(bundle.train, x_ref[ref_train], y_ref[ref_train], [src_ref[i] for i in ref_train])
    bundle.val = _concat(bundle.val, x_ref[ref_val], y_ref[ref_val], [src_ref[i] for i in ref_val])
    label = "bundled mnist-5k digits" if keyword else ref_value
    if photo_notice:
        label = "crops of natural photographs"
        bundle.notices.append(f"notice: {photo_notice}")
    bundle.notices.append(
        f"notice: one normal class ('{only}'); added {len(ref_names)} reference classes "
        f"({len(y_ref)} images) from {label}"
    )


def load_data(
    data: str,
    data_root: str | os.PathLike = "data",
    holdout_classes: list[str] | None = None,
    reference: str = "auto",
    seed: int = 0,
    image_size: int | None = None,
    add_reference: bool = True,
) -> DataBundle:
    """Load `mnist-5k`, `mnist`, a folder or a .zip into deterministic train/val/test splits.

    holdout_classes are removed from train/val and become test anomalies. With a single normal
    class, `reference` ("auto" | "mnist-5k" | PATH | "none") supplies extra training classes
    named "ref:<name>" (train/val only); photo uploads get crops of natural photographs for "auto".
    `add_reference=False` (training-free methods) never adds them.
    Raises DataError (one line) on unusable input."""
    data = str(data).strip()
    seed = int(seed)
    if image_size is not None and int(image_size) < 1:
        raise DataError(f"image_size must be positive, got {image_size}")
    notices: list[str] = []
    name, pool, class_names, normal, channels, size, skipped = _source_pool(
        data, data_root, seed, image_size, notices
    )
    held = _validate_holdout(holdout_classes or [], class_names, normal)
    remaining_normal = [c for c in normal if c not in held]
    is_held = np.isin(pool.y, sorted(held))
    pool.anomaly = pool.anomaly | (is_held & (pool.part == TEST))
    train = _split_from(pool, np.flatnonzero((pool.part == TRAIN) & ~is_held), size, channels)
    val = _split_from(pool, np.flatnonzero((pool.part == VAL) & ~is_held), size, channels)
    test = _split_from(pool, np.flatnonzero(pool.part == TEST), size, channels)
    for c in remaining_normal:
        if int((pool.y == c).sum()) == 1:
            notices.append(
                f"notice: class '{class_names[c]}' has a single image: it is used for training only "
                "(no validation or test image of it)"
            )
    del pool  # the float copies above are all we need; free the decoded originals
    bundle = DataBundle(
        name=name,
        class_names=class_names,
        train_classes=list(remaining_normal),
        normal_classes=list(remaining_normal),
        channels=channels,
        image_size=size,
        train=train,
        val=val,
        test=test,
        notices=notices,
        skipped=skipped,
    )
    if add_reference:
        _add_reference(bundle, reference, data_root, seed, data.lower() in BUILTIN_DATA)
    if bundle.skipped:
        path, reason = bundle.skipped[0]
        bundle.notices.append(
            f"notice: skipped {len(bundle.skipped)} unusable file(s), e.g. {path}: {reason}"
        )
    return bundle


def load_bundle(config) -> DataBundle:
    """The DataBundle a TrainConfig asks for (its data, holdout, reference, seed and image size)."""
    return load_data(
        config.data,
        data_root=config.data_root,
        holdout_classes=config.holdout_classes or None,
        reference=config.reference,
        seed=config.seed,
        image_size=config.image_size,
        add_reference=getattr(config, "method", "metric") == "metric",
    )


def limit_train(bundle: DataBundle, max_samples: int, seed: int) -> DataBundle:
    """Keep at most `max_samples` training images (0: all), drawn reproducibly from `seed`."""
    if not max_samples or len(bundle.train.y) <= max_samples:
        return bundle
    keep = np.sort(np.random.default_rng(seed).permutation(len(bundle.train.y))[:max_samples])
    t = bundle.train
    bundle.train = Split(
        x=t.x[keep], y=t.y[keep], anomaly=t.anomaly[keep], source=[t.source[i] for i in keep]
    )
    return bundle


# ------------------------------------------------------------------------------------- thumbnails


def load_thumbnail(source: str, data_root: str | os.PathLike = "data") -> np.ndarray:
    """A displayable uint8 image for a Split.source entry: [28, 28] for digits, [H, W] or [H, W, 3]
    (longest side <= 128) for files."""
    try:
        digit = mnist_thumbnail(source, data_root)
    except (ValueError, IndexError):  # before LookupError: IndexError is one
        raise DataError(f"not a valid image reference: {source!r}") from None
    except LookupError as e:  # full MNIST is not on this machine
        raise DataError(str(e)) from None
    if digit is not None:
        return digit
    if not os.path.isfile(source):
        raise DataError(f"image not found: {source}")
    return load_thumbnail_image(source)
