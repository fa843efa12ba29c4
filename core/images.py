"""Decoding user images safely: a pixel budget checked before decoding, every mode (L, RGB, RGBA,
I;16, P, ...) brought to float32 [C, S, S] in [0, 1], and unreadable files skipped with a reason."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import IngestError, PathLike

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
JUNK_DIRS = frozenset({"__MACOSX", "__pycache__", ".git", ".svn"})

# What Pillow and its codecs raise on broken files; any of these means "skip this file".
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    struct.error,
    EOFError,
    zlib.error,
)


def image_pixel_limit() -> int:
    """The pixel budget per image; read at call time so the env var can be changed by a running app."""
    return _env_pixel_limit(MAX_IMAGE_PIXELS)


def is_image_name(name: str | os.PathLike) -> bool:
    """True for a visible file with an image extension outside archiver junk folders."""
    p = Path(name)
    if p.name.startswith(".") or any(part in JUNK_DIRS for part in p.parts):
        return False
    return p.suffix.lower() in IMAGE_EXTENSIONS


def _file_head(path: PathLike, n: int) -> bytes | None:
    """The first ``n`` bytes of a file; None when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None


def _declared_size_from_header(path: PathLike) -> tuple[int, int] | None:
    """Width and height as written in a PNG/GIF/BMP header, without decoding (for error messages)."""
    head = _file_head(path, 32)
    if head is None:
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
    head = _file_head(path, 16)
    if head is None:
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
