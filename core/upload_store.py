"""Extracted uploads under `<data root>/uploads/<content-hash>/`: what they weigh, which runs use them,
deleting the unused ones, and the disk quota a new upload must fit in (`HSE_UPLOADS_MAX_GB`).

A run uses an upload when its config.json `data` (or `reference`) path lies inside the upload's
folder (a run may point at a sub-folder, e.g. one MVTec category). Hidden entries (`.incoming`,
`.partial-*`) are work in progress of the upload code and are neither listed nor counted as uploads."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.fsutil import read_json

DEFAULT_MAX_GB = 20.0


class UploadStoreError(ValueError):
    """One-line, user-facing refusal (quota exceeded, upload in use, not an upload)."""


@dataclass
class UploadInfo:
    name: str  # the folder name (content hash)
    path: Path
    size_bytes: int
    used_by: list[str] = field(default_factory=list)  # run ids whose data lies inside this upload

    @property
    def in_use(self) -> bool:
        return bool(self.used_by)


def uploads_dir(data_root: str | Path) -> Path:
    return Path(data_root) / "uploads"


def folder_size(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks are not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # removed while we walk
                continue
            total += st.st_size
    return total


def _run_data_paths(checkpoints_root: Path) -> list[tuple[str, Path]]:
    """(run id, resolved path) for every filesystem path a run's config.json trains on."""
    out = []
    if not checkpoints_root.is_dir():
        return out
    for run_dir in sorted(checkpoints_root.iterdir()):
        if run_dir.name.startswith(".") or not run_dir.is_dir():
            continue
        try:
            cfg = read_json(run_dir / "config.json")
        except (OSError, ValueError):
            continue  # a run without a readable config cannot be attributed to an upload
        if not isinstance(cfg, dict):
            continue
        for key in ("data", "reference"):
            value = cfg.get(key)
            if isinstance(value, str) and value and ("/" in value or os.sep in value):
                out.append((run_dir.name, Path(value).resolve()))
    return out


def list_uploads(data_root: str | Path, checkpoints_root: str | Path) -> list[UploadInfo]:
    """Every extracted upload, largest first, with its size and the runs that use it."""
    root = uploads_dir(data_root)
    if not root.is_dir():
        return []
    used = _run_data_paths(Path(checkpoints_root))
    out = []
    for d in root.iterdir():
        if d.name.startswith(".") or not d.is_dir() or d.is_symlink():
            continue
        real = d.resolve()
        users = sorted({run for run, p in used if p == real or p.is_relative_to(real)})
        out.append(UploadInfo(name=d.name, path=d, size_bytes=folder_size(d), used_by=users))
    return sorted(out, key=lambda u: (-u.size_bytes, u.name))


def delete_upload(name: str, data_root: str | Path, checkpoints_root: str | Path) -> None:
    """Remove one upload folder; refuses (UploadStoreError) one that a run uses or that is not an
    upload folder directly under `<data root>/uploads`."""
    root = uploads_dir(data_root)
    if not name or name.startswith(".") or Path(name).name != name:
        raise UploadStoreError(f"not an upload name: {name!r}")
    target = root / name
    if target.is_symlink() or not target.is_dir():
        raise UploadStoreError(f"no upload '{name}' in {root}")
    (info,) = [u for u in list_uploads(data_root, checkpoints_root) if u.name == name]
    if info.in_use:
        runs = ", ".join(info.used_by[:3]) + (" ..." if len(info.used_by) > 3 else "")
        raise UploadStoreError(
            f"upload '{name}' is used by {len(info.used_by)} run(s) ({runs}): delete those runs first"
        )
    shutil.rmtree(target)


def max_upload_bytes() -> int:
    """The quota from `HSE_UPLOADS_MAX_GB` (default 20; decimal GB), read at call time."""
    raw = os.environ.get("HSE_UPLOADS_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        raise UploadStoreError(f"HSE_UPLOADS_MAX_GB must be a number of GB, not {raw!r}") from None
    if gb < 0:
        raise UploadStoreError(f"HSE_UPLOADS_MAX_GB must not be negative ({raw})")
    return int(gb * 1e9)


def _fmt_gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_upload_quota(incoming_bytes: int, data_root: str | Path) -> None:
    """Refuse (UploadStoreError, one line) an upload that would take `<data root>/uploads` past the
    quota. `incoming_bytes`: what the upload will add on disk (the extracted size of a zip)."""
    limit = max_upload_bytes()
    root = uploads_dir(data_root)
    used = folder_size(root) if root.is_dir() else 0
    if used + int(incoming_bytes) > limit:
        raise UploadStoreError(
            f"upload refused: it needs {_fmt_gb(int(incoming_bytes))} but the uploads already take "
            f"{_fmt_gb(used)} of its {_fmt_gb(limit)} quota (HSE_UPLOADS_MAX_GB); delete unused uploads "
            "on the Home page"
        )
