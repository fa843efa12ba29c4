"""Safe reading of user-supplied files: zip archives, image folders and single images.

Quality engineers upload whatever they have at hand, so everything here assumes hostile input:
archives are validated from the central directory before a single byte is written, images are
checked against a pixel budget before they are decoded, and unreadable files are skipped with a
reason instead of failing a whole folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import struct
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class DataError(ValueError):
    """A problem with the user's data, with a one-line message meant for the user.

    Defined here rather than in core.data so that ingest does not import data (data imports ingest)."""


class IngestError(DataError):
    """A file or archive that cannot be used safely; one-line, user-facing message."""


PathLike = str | bytes | os.PathLike

DEFAULT_MAX_IMAGE_PIXELS = 40_000_000


def _env_pixel_limit(default: int) -> int:
    try:
        return int(os.environ.get("HSE_MAX_IMAGE_PIXELS") or default)
    except ValueError:  # a typo in the environment must not make every import fail
        return default


MAX_IMAGE_PIXELS = _env_pixel_limit(DEFAULT_MAX_IMAGE_PIXELS)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

# Modes whose pixels carry no colour; an upload made only of these is treated as 1-channel data.
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})

# Folders that archivers and operating systems sprinkle into uploads; never data.
_JUNK_DIRS = frozenset({"__MACOSX", "__pycache__", ".git", ".svn"})

_CHUNK = 1 << 20
# What Pillow and its codecs raise on broken files; any of these means "skip this file".
_DECODE_ERRORS = (
    OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, EOFError, zlib.error
)
# Longest file name component most file systems accept, in bytes.
_MAX_NAME_BYTES = 255


def _env_limit(name: str, default: float, cast: type = int) -> float:
    """A positive limit from the environment, or the default (a typo must not disable a limit)."""
    try:
        value = cast(os.environ.get(name) or default)
    except ValueError:
        return default
    return value if value > 0 else default


@dataclass
class ZipLimits:
    """Archive budget. Defaults come from HSE_ZIP_MAX_TOTAL_BYTES, HSE_ZIP_MAX_FILES, HSE_ZIP_MAX_RATIO
    and HSE_ZIP_MAX_ENTRY_BYTES when set, read each time a ZipLimits() is made."""

    max_total_bytes: int = field(default_factory=lambda: _env_limit("HSE_ZIP_MAX_TOTAL_BYTES", 2_000_000_000))
    max_files: int = field(default_factory=lambda: _env_limit("HSE_ZIP_MAX_FILES", 200_000))
    max_ratio: float = field(default_factory=lambda: _env_limit("HSE_ZIP_MAX_RATIO", 200.0, float))
    max_entry_bytes: int = field(default_factory=lambda: _env_limit("HSE_ZIP_MAX_ENTRY_BYTES", 200_000_000))
    # Tiny entries (a blank text file, a flat mask) legitimately compress by 1000x; only entries
    # this large are big enough for their compression ratio to matter.
    ratio_min_bytes: int = 1_000_000


@dataclass
class FolderScan:
    images: np.ndarray  # float32 [N, C, S, S] in [0, 1]
    labels: list[str]  # class folder name per image
    paths: list[str]  # absolute path per image
    skipped: list[tuple[str, str]]  # (path, reason) for files that could not be used
    class_names: list[str] = field(default_factory=list)  # sorted classes that kept >= 1 image
    channels: int = 1


def image_pixel_limit() -> int:
    """The pixel budget per image; read at call time so the env var can be changed by a running app."""
    return _env_pixel_limit(MAX_IMAGE_PIXELS)


def is_image_name(name: str | os.PathLike) -> bool:
    """True for a visible file with an image extension outside archiver junk folders."""
    p = Path(name)
    if p.name.startswith(".") or any(part in _JUNK_DIRS for part in p.parts):
        return False
    return p.suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------- zip


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _safe_member_parts(info: zipfile.ZipInfo) -> list[str]:
    """Path components of an archive entry, or IngestError when the name tries to escape."""
    raw = info.filename
    if "\x00" in raw:
        raise IngestError(f"refusing the archive: entry {raw!r} has a NUL byte in its name")
    # Windows tools write backslashes as separators, and Windows extractors honour them, so
    # "..\\..\\x" must be judged as a traversal rather than as an odd file name.
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise IngestError(f"refusing the archive: entry {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise IngestError(f"refusing the archive: entry {raw!r} points outside the archive (zip slip)")
    if any(re.match(r"^[A-Za-z]:", p) for p in parts):
        raise IngestError(f"refusing the archive: entry {raw!r} contains a drive letter")
    mode = (info.external_attr >> 16) & 0xFFFF
    if stat.S_ISLNK(mode):
        raise IngestError(f"refusing the archive: entry {raw!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise IngestError(f"refusing the archive: entry {raw!r} is encrypted")
    return parts


def _fit_name(part: str) -> str:
    """Shorten a path component that the file system would reject, keeping it unique and its extension."""
    if len(os.fsencode(part)) <= _MAX_NAME_BYTES:
        return part
    stem, ext = os.path.splitext(part)
    digest = hashlib.sha256(os.fsencode(part)).hexdigest()[:12]
    keep = stem
    while len(os.fsencode(f"{keep}~{digest}{ext}")) > _MAX_NAME_BYTES:
        keep = keep[:-1]
    return f"{keep}~{digest}{ext}"


def _check_zip_budget(infos: Sequence[zipfile.ZipInfo], limits: ZipLimits) -> None:
    files = [i for i in infos if not i.is_dir()]
    if len(files) > limits.max_files:
        raise IngestError(
            f"refusing the archive: {len(files)} files, over the limit of {limits.max_files}"
        )
    total = sum(i.file_size for i in files)
    if total > limits.max_total_bytes:
        raise IngestError(
            f"refusing the archive: it unpacks to {total:,} bytes, "
            f"over the limit of {limits.max_total_bytes:,}"
        )
    for i in files:
        if i.file_size > limits.max_entry_bytes:
            raise IngestError(
                f"refusing the archive: entry {i.filename!r} unpacks to {i.file_size:,} bytes, "
                f"over the per-file limit of {limits.max_entry_bytes:,}"
            )
        if i.file_size >= limits.ratio_min_bytes:
            ratio = i.file_size / max(i.compress_size, 1)
            if ratio > limits.max_ratio:
                raise IngestError(
                    f"refusing the archive: entry {i.filename!r} expands {ratio:.0f}x, "
                    f"over the limit of {limits.max_ratio:.0f}x (zip bomb?)"
                )
    compressed = sum(i.compress_size for i in files)
    if total >= limits.ratio_min_bytes and total / max(compressed, 1) > limits.max_ratio:
        raise IngestError(
            f"refusing the archive: it expands {total / max(compressed, 1):.0f}x overall, "
            f"over the limit of {limits.max_ratio:.0f}x (zip bomb?)"
        )


def safe_extract_zip(zip_path: PathLike, dest_dir: PathLike, limits: ZipLimits | None = None) -> Path:
    """Extract the images of a zip into `dest_dir/<sha256[:16]>/` and return that folder.

    The whole archive is refused (IngestError) on path traversal, symlinks, encrypted entries, size or
    ratio limits (checked from the central directory before anything is written, and again while
    streaming because headers can lie), an empty archive, or one without images. Only image files are
    written; the same archive uploaded twice reuses the first extraction. `limits` defaults to
    ZipLimits() made at call time, so the HSE_ZIP_* environment variables apply to a running app."""
    limits = limits if limits is not None else ZipLimits()
    zip_path = Path(os.fsdecode(zip_path))
    dest_dir = Path(os.fsdecode(dest_dir))
    if not zip_path.is_file():
        raise IngestError(f"zip file not found: {zip_path}")
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise IngestError(f"not a readable zip archive: {zip_path.name} ({e})") from None
    with zf:
        infos = zf.infolist()
        if not [i for i in infos if not i.is_dir()]:
            raise IngestError(f"the zip archive {zip_path.name} is empty")
        planned: list[tuple[zipfile.ZipInfo, list[str]]] = []
        for info in infos:
            parts = _safe_member_parts(info)  # validates every entry, image or not
            if not info.is_dir() and parts and is_image_name("/".join(parts)):
                planned.append((info, [_fit_name(p) for p in parts]))
        _check_zip_budget(infos, limits)
        if not planned:
            raise IngestError(
                f"the zip archive {zip_path.name} contains no images "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )

        target = dest_dir / _sha256_file(zip_path)[:16]
        if target.is_dir():
            return target
        dest_dir.mkdir(parents=True, exist_ok=True)
        # Extract beside the final folder and rename at the end: a crash or a refusal half-way
        # never leaves a partial folder that a later upload of the same zip would reuse.
        tmp = dest_dir / f".partial-{target.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _stream_members(zf, planned, tmp, limits)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # a concurrent upload of the same zip may have won the race
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _stream_members(
    zf: zipfile.ZipFile, planned: list[tuple[zipfile.ZipInfo, list[str]]], root: Path, limits: ZipLimits
) -> None:
    root_real = os.path.realpath(root)
    written_total = 0
    for info, parts in planned:
        out_path = root.joinpath(*parts)
        # Defence in depth: the name checks above should make this impossible.
        if os.path.commonpath([root_real, os.path.realpath(out_path)]) != root_real:
            raise IngestError(f"refusing the archive: entry {info.filename!r} points outside the archive")
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            raise IngestError(
                f"refusing the archive: entry {info.filename!r} conflicts with a file of the same name"
            ) from None
        entry_limit = min(info.file_size, limits.max_entry_bytes)
        written = 0
        try:
            with zf.open(info) as src, open(out_path, "xb") as dst:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > entry_limit or written_total > limits.max_total_bytes:
                        raise IngestError(
                            f"refusing the archive: entry {info.filename!r} unpacks to more than its "
                            f"header declares (zip bomb?)"
                        )
                    dst.write(chunk)
        except FileExistsError:
            continue  # duplicate entry name: the first copy wins, as with most extractors
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
            raise IngestError(f"refusing the archive: entry {info.filename!r} is corrupt ({e})") from None
        except OSError as e:
            raise IngestError(f"could not extract {info.filename!r}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------ images


def _declared_size_from_header(path: PathLike) -> tuple[int, int] | None:
    """Width and height as written in a PNG/GIF/BMP header, without decoding (for error messages)."""
    try:
        with open(path, "rb") as f:
            head = f.read(32)
    except OSError:
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", head[6:10])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    return None


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _sniff_format(path: PathLike) -> str | None:
    """Format named by the file's magic bytes: tells a damaged image from a file that never was one."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def _bomb_error(width: int, height: int, limit: int) -> IngestError:
    return IngestError(f"image declares {width}×{height} pixels, over the limit of {limit:,}")


def _open_checked(path: PathLike) -> Image.Image:
    """Open an image lazily (header only) and enforce the pixel budget before anything is decoded."""
    limit = image_pixel_limit()
    try:
        if os.path.getsize(path) == 0:
            raise IngestError("empty file (0 bytes)")
    except OSError as e:
        raise IngestError(f"cannot read file: {e.strerror or e}") from None
    try:
        im = Image.open(path)
    except Image.DecompressionBombError:
        # Pillow's own guard fired first (it only does so above twice its limit); report it in the
        # same terms as ours, with whichever limit is actually in force.
        if Image.MAX_IMAGE_PIXELS:
            limit = min(limit, 2 * int(Image.MAX_IMAGE_PIXELS))
        declared = _declared_size_from_header(path)
        if declared:
            raise _bomb_error(*declared, limit) from None
        raise IngestError(f"image declares too many pixels, over the limit of {limit:,}") from None
    except UnidentifiedImageError:
        kind = _sniff_format(path)
        if kind:
            raise IngestError(f"corrupt image ({kind} signature, but the header cannot be parsed)") from None
        raise IngestError("not a recognised image format") from None
    except _DECODE_ERRORS as e:
        raise IngestError(f"corrupt image header ({type(e).__name__}: {e})") from None
    width, height = im.size
    if width <= 0 or height <= 0:
        im.close()
        raise IngestError(f"image declares an empty size {width}×{height}")
    if width * height > limit:
        im.close()
        raise _bomb_error(width, height, limit)
    return im


def probe_image(path: PathLike) -> tuple[str, int, int]:
    """(mode, width, height) from the header only; IngestError when the file is unusable."""
    with _open_checked(path) as im:
        return im.mode, im.size[0], im.size[1]


def choose_channels(modes: Iterable[str]) -> int:
    """1 when every image is grayscale (so colour-less data stays cheap), else 3."""
    modes = list(modes)
    return 1 if modes and all(m in GRAYSCALE_MODES for m in modes) else 3


def _to_float_rgb_or_gray(im: Image.Image) -> np.ndarray:
    """Decode to float32 [H, W, 1|3] in [0, 1], compositing transparency on black."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale (PNG/TIFF); Pillow may present it as I;16 or as 32-bit I.
        arr = np.asarray(im, dtype=np.float64) / 65535.0
        return np.clip(arr, 0.0, 1.0).astype(np.float32)[..., None]
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if np.nanmax(arr, initial=0.0) > 1.0:  # float TIFFs are either [0,1] or [0,255]
            arr = arr / 255.0
        return np.clip(np.nan_to_num(arr), 0.0, 1.0).astype(np.float32)[..., None]
    if mode in ("1", "L"):
        return (np.asarray(im.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.float32) / 255.0
        return (la[..., 0] * la[..., 1])[..., None]
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:4]
    # CMYK, YCbCr, P, RGBX, ... all have a well-defined conversion to RGB in Pillow.
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def _resize_float(arr: np.ndarray, size: int) -> np.ndarray:
    """[H, W, C] float32 -> [C, size, size], stretching to a square (uploads are nearly square)."""
    h, w, c = arr.shape
    if (h, w) == (size, size):
        return np.clip(np.ascontiguousarray(arr.transpose(2, 0, 1)), 0.0, 1.0)
    out = np.empty((c, size, size), dtype=np.float32)
    for ch in range(c):
        # Float ("F") resampling keeps 16-bit precision; Pillow antialiases when shrinking.
        resized = Image.fromarray(np.ascontiguousarray(arr[..., ch]), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR
        )
        out[ch] = np.asarray(resized, dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _match_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    if arr.shape[-1] == channels:
        return arr
    if channels == 3:
        return np.repeat(arr, 3, axis=-1)
    # ITU-R 601-2 luma, the same weights Pillow uses for RGB -> L.
    luma = arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114
    return luma[..., None].astype(np.float32)


def load_image(path: PathLike, size: int, channels: int) -> np.ndarray:
    """One image as float32 [channels, size, size] in [0, 1].

    Any mode and size is accepted (L, RGB, RGBA composited on black, I;16 scaled from 16 bit, P,
    1, LA, CMYK, ...). Raises IngestError with a reason for an empty, corrupt, non-image or
    oversized (decompression bomb) file."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return _resize_float(_match_channels(_decode_float(path, size), channels), size)


def _decode_float(path: PathLike, draft_side: int) -> np.ndarray:
    """Checked open + decode to float [H, W, 1|3]; every decoder failure becomes an IngestError."""
    with _open_checked(path) as im:
        try:
            # JPEG can decode at 1/2..1/8 scale directly, which makes big photos cheap to load.
            im.draft(im.mode, (draft_side, draft_side))
        except (OSError, ValueError, AttributeError):
            pass
        try:
            im.load()
            im = ImageOps.exif_transpose(im) or im
            return _to_float_rgb_or_gray(im)
        except IngestError:
            raise
        except _DECODE_ERRORS as e:
            raise IngestError(f"corrupt image data ({type(e).__name__}: {e})") from None


def load_thumbnail_image(path: PathLike, max_side: int = 128) -> np.ndarray:
    """uint8 [H, W] (grayscale sources) or [H, W, 3], downscaled so the longest side is <= max_side."""
    arr = _decode_float(path, max_side)
    h, w, c = arr.shape
    scale = min(1.0, max_side / max(h, w))
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., i]), mode="F").resize((new_w, new_h)))
        for i in range(c)
    ]
    out = np.clip(np.stack(chans, axis=-1) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out[..., 0] if c == 1 else out


def load_images(
    paths: Sequence[PathLike], size: int, channels: int
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Load many images; returns (images [K, C, S, S], indices of the kept paths, skipped (path, reason))."""
    images = np.empty((len(paths), channels, size, size), dtype=np.float32)
    kept: list[int] = []
    skipped: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        try:
            images[len(kept)] = load_image(p, size, channels)
            kept.append(i)
        except IngestError as e:
            skipped.append((os.fsdecode(p), str(e)))
    return images[: len(kept)], kept, skipped


# ----------------------------------------------------------------------------------------- folders


def list_image_files(root: PathLike, recursive: bool = True) -> list[Path]:
    """Image files under root (sorted, deterministic), ignoring hidden files and archiver junk."""
    root = Path(os.fsdecode(root))
    found: list[Path] = []
    if not recursive:
        return sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p.name))
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _JUNK_DIRS and not d.startswith("."))
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
        p for p in root.iterdir() if p.is_dir() and p.name not in _JUNK_DIRS and not p.name.startswith(".")
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


def probe_files(paths: Sequence[PathLike]) -> tuple[list[int], list[str], list[tuple[str, str]]]:
    """Header-check many files: (indices of usable ones, their modes, skipped (path, reason))."""
    usable: list[int] = []
    modes: list[str] = []
    skipped: list[tuple[str, str]] = []
    for i, p in enumerate(paths):
        try:
            mode, _, _ = probe_image(p)
        except IngestError as e:
            skipped.append((os.fsdecode(p), str(e)))
            continue
        usable.append(i)
        modes.append(mode)
    return usable, modes, skipped
