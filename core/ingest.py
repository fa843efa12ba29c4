"""Safe reading of user-supplied files: zip archives, image folders and single images.

Quality engineers upload whatever they have at hand, so everything here assumes hostile input:
archives are validated from the central directory before a single byte is written, images are
checked against a pixel budget before they are decoded, and unreadable files are skipped with a
reason instead of failing a whole folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from core.errors import DataError, IngestError, PathLike
from core.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    GRAYSCALE_MODES,
    IMAGE_EXTENSIONS,
    JUNK_DIRS,
    MAX_IMAGE_PIXELS,
    choose_channels,
    image_pixel_limit,
    is_image_name,
    load_image,
    load_images,
    load_thumbnail_image,
    probe_files,
    probe_image,
)
from core.zipsafe import ZipLimits, safe_extract_zip

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "GRAYSCALE_MODES",
    "IMAGE_EXTENSIONS",
    "MAX_IMAGE_PIXELS",
    "DataError",
    "FolderScan",
    "IngestError",
    "PathLike",
    "ScannedDataset",
    "ZipLimits",
    "choose_channels",
    "class_folders",
    "detect_layout",
    "image_pixel_limit",
    "is_image_name",
    "list_image_files",
    "list_subdirs",
    "load_image",
    "load_images",
    "load_thumbnail_image",
    "mvtec_categories",
    "probe_files",
    "probe_image",
    "resolve_upload",
    "safe_extract_zip",
    "scan_dataset",
    "scan_image_folder",
]


@dataclass
class FolderScan:
    images: np.ndarray  # float32 [N, C, S, S] in [0, 1]
    labels: list[str]  # class folder name per image
    paths: list[str]  # absolute path per image
    skipped: list[tuple[str, str]]  # (path, reason) for files that could not be used
    class_names: list[str] = field(default_factory=list)  # sorted classes that kept >= 1 image
    channels: int = 1


def list_image_files(root: PathLike, recursive: bool = True) -> list[Path]:
    """Image files under root (sorted, deterministic), ignoring hidden files and archiver junk."""
    root = Path(os.fsdecode(root))
    found: list[Path] = []
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p.name))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in JUNK_DIRS and not d.startswith("."))
        found.extend(Path(dirpath) / f for f in filenames if is_image_name(f))
    return sorted(found)


def class_folders(root: Path) -> tuple[list[Path], list[Path]]:
    """Class subfolders of an ImageFolder-style root, and the images lying loose at its top level.
    IngestError when there is no class folder at all."""
    class_dirs = list_subdirs(root)
    loose = list_image_files(root, recursive=False)
    if not class_dirs:
        hint = f" (found {len(loose)} images directly in it)" if loose else ""
        raise IngestError(
            f"no class folders in {root}{hint}: put each class's images in its own subfolder "
            "(<root>/<class>/*.png) or use the MVTec layout (<category>/train/good, <category>/test/<defect>)"
        )
    return class_dirs, loose


def list_subdirs(root: PathLike) -> list[Path]:
    """Visible subfolders of root, sorted, without archiver junk."""
    root = Path(os.fsdecode(root))
    return sorted(
        p for p in root.iterdir() if p.is_dir() and p.name not in JUNK_DIRS and not p.name.startswith(".")
    )


def mvtec_categories(root: PathLike) -> list[Path]:
    """Category folders of an MVTec-AD layout: root itself, or its subfolders, having train/good and test."""

    def is_category(p: Path) -> bool:
        return (p / "train" / "good").is_dir() and (p / "test").is_dir()

    root = Path(os.fsdecode(root))
    if is_category(root):
        return [root]
    return [p for p in list_subdirs(root) if is_category(p)]


def detect_layout(root: PathLike) -> Literal["imagefolder", "mvtec"]:
    """'mvtec' for `<root>[/<category>]/train/good` + `test/...`, else 'imagefolder' (class per folder)."""
    return "mvtec" if mvtec_categories(root) else "imagefolder"


def scan_image_folder(root: PathLike, size: int, channels: int | None = None) -> FolderScan:
    """Load a class-per-folder tree (`root/<class>/**/*.png`). channels=None picks 1 or 3 from the modes.

    Unusable files are skipped with a reason; IngestError when there are no class folders or no
    image is left."""
    root = Path(os.fsdecode(root))
    if not root.is_dir():
        raise IngestError(f"folder not found: {root}")
    class_dirs, loose = class_folders(root)
    skipped = [(str(p), "not inside a class folder") for p in loose]
    files: list[Path] = []
    labels: list[str] = []
    for d in class_dirs:
        for f in list_image_files(d):
            files.append(f.absolute())
            labels.append(d.name)
    usable, modes, header_skipped = probe_files(files)
    skipped += header_skipped
    if channels is None:
        channels = choose_channels(modes)
    images, kept, load_skipped = load_images([files[i] for i in usable], size, channels)
    skipped += load_skipped
    kept_idx = [usable[k] for k in kept]
    if not kept_idx:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise IngestError(f"no usable images under {root} ({len(skipped)} files skipped{first})")
    kept_labels = [labels[i] for i in kept_idx]
    return FolderScan(
        images=images,
        labels=kept_labels,
        paths=[str(files[i]) for i in kept_idx],
        skipped=skipped,
        class_names=sorted(set(kept_labels)),
        channels=channels,
    )


# ------------------------------------------------------------------------------ one scanned dataset


GRAY_DEFAULT_SIZE = 28
COLOR_DEFAULT_SIZE = 64
MVTEC_LAYOUT, IMAGEFOLDER_LAYOUT = "mvtec", "imagefolder"


@dataclass
class ScannedDataset:
    """Every usable image of an upload, decoded, with what the folder layout says about it.

    `roles[i]`: "any" (class-per-folder: split later), "train" (MVTec train/good) or "test" (MVTec test/*).
    `normal_classes` / `anomaly_classes`: sorted class names that kept at least one image (MVTec defect
    folders are the anomaly classes, named "<category>/<defect>")."""

    root: Path
    layout: str  # "imagefolder" | "mvtec"
    images: np.ndarray  # float32 [N, C, S, S] in [0, 1]
    labels: list[str]
    paths: list[str]  # absolute
    roles: list[str]
    anomaly: np.ndarray  # bool [N]
    normal_classes: list[str]
    anomaly_classes: list[str]
    channels: int
    image_size: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of unusable files


@dataclass
class _Entry:
    path: Path
    label: str
    role: str  # "any", "train" or "test" (see ScannedDataset.roles)
    anomaly: bool = False


def _unwrap_single_folder(root: Path) -> Path:
    """Zips usually wrap everything in one top folder (`data.zip/data/<class>/...`); step into it,
    but never into a leaf folder, which would be the only class."""
    while detect_layout(root) != MVTEC_LAYOUT:
        subs = list_subdirs(root)
        if len(subs) != 1 or list_image_files(root, recursive=False) or not list_subdirs(subs[0]):
            break
        root = subs[0]
    return root


def resolve_upload(data: str, data_root: str | os.PathLike) -> Path:
    """The folder of an upload: the folder itself, or a .zip extracted (safely) under data_root/uploads."""
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


def _mvtec_entries(root: Path) -> list[_Entry]:
    entries: list[_Entry] = []
    for cat in mvtec_categories(root):
        name = cat.name
        entries += [_Entry(p.absolute(), name, "train") for p in list_image_files(cat / "train" / "good")]
        for sub in list_subdirs(cat / "test"):
            if sub.name == "good":
                entries += [_Entry(p.absolute(), name, "test") for p in list_image_files(sub)]
            else:
                label = f"{name}/{sub.name}"
                entries += [_Entry(p.absolute(), label, "test", True) for p in list_image_files(sub)]
    return entries


def scan_dataset(
    root: Path,
    image_size: int | None = None,
    channels: int | None = None,
    normal_only: bool = False,
) -> ScannedDataset:
    """Find and decode every image of an upload folder (class-per-folder or MVTec layout).

    channels=None picks 1 or 3 from the images' modes; image_size=None: 28 for grey, 64 for colour.
    `normal_only` drops MVTec defect images (reference data). DataError when no image is found, or none
    is usable (an empty result is allowed with normal_only: the caller names what was missing)."""
    layout = detect_layout(root)
    skipped: list[tuple[str, str]] = []
    if layout == MVTEC_LAYOUT:
        entries = _mvtec_entries(root)
    else:
        class_dirs, loose = class_folders(root)
        skipped += [(str(p.absolute()), "not inside a class folder") for p in loose]
        entries = [_Entry(p.absolute(), d.name, "any") for d in class_dirs for p in list_image_files(d)]
    if normal_only:
        entries = [e for e in entries if not e.anomaly]
    elif not entries:
        raise DataError(f"no images found under {root}")
    paths = [e.path for e in entries]
    usable, modes, header_skipped = probe_files(paths)
    channels = channels or choose_channels(modes)
    size = image_size or (GRAY_DEFAULT_SIZE if channels == 1 else COLOR_DEFAULT_SIZE)
    images, kept, load_skipped = load_images([paths[i] for i in usable], size, channels)
    skipped += header_skipped + load_skipped
    kept_entries = [entries[usable[k]] for k in kept]
    if not kept_entries and not normal_only:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"no usable images under {root} ({len(skipped)} files skipped{first})")
    return ScannedDataset(
        root=root,
        layout=layout,
        images=images,
        labels=[e.label for e in kept_entries],
        paths=[str(e.path) for e in kept_entries],
        roles=[e.role for e in kept_entries],
        anomaly=np.array([e.anomaly for e in kept_entries], dtype=bool),
        normal_classes=sorted({e.label for e in kept_entries if not e.anomaly}),
        anomaly_classes=sorted({e.label for e in kept_entries if e.anomaly}),
        channels=channels,
        image_size=size,
        skipped=skipped,
    )
