"""Extracting a user's zip archive safely: the whole archive is refused (IngestError) on zip slip,
symlinks, bombs or an empty archive, all checked from the central directory before a byte is written."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import IngestError, PathLike
from core.images import IMAGE_EXTENSIONS, is_image_name

_CHUNK = 1 << 20
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
        raise IngestError(f"refusing the archive: {len(files)} files, over the limit of {limits.max_files}")
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
