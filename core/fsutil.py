"""Atomic file writes: a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import fcntl
import io
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def _process_umask() -> int:
    """The umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


_FILE_MODE = 0o666 & ~_process_umask()
TMP_SUFFIX = ".tmp"
STALE_TMP_MIN_AGE_S = 60.0


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a hidden temp file beside `path`, fsync, then os.replace: `path` is always either the
    old or the new complete file. A kill mid-write can only leave a hidden `.NAME.*.tmp` behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        # held until the file is in place, or until this process dies (even by SIGKILL): tells a
        # temp file being written from one a killed writer left behind (`remove_stale_tmp_files`)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # mkstemp makes 0600 files; artefacts get the same mode as any other file of the process
            os.fchmod(f.fileno(), _FILE_MODE)
            os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _is_atomic_tmp_name(name: str) -> bool:
    """`.NAME.XXXXXXXX.tmp`, the temp files `_atomic_write_bytes` makes."""
    return name.startswith(".") and name.endswith(TMP_SUFFIX) and name.count(".") >= 3


def remove_stale_tmp_files(directory: str | Path, min_age_s: float = STALE_TMP_MIN_AGE_S) -> list[Path]:
    """Delete the hidden `.NAME.*.tmp` files a killed writer left in `directory` (not recursive) and
    return them. Never touches NAME itself, so the newest complete file is always kept.

    A temp file is stale when no process holds its write lock (the writer died: the kernel released
    the lock) and it is older than `min_age_s` (covers the instant between creating the file and
    locking it). Call it when a run directory is opened for writing and at app start."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    now = time.time()
    for entry in entries:
        if not _is_atomic_tmp_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:  # gone meanwhile (the writer replaced it), or unreadable: not ours to judge
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age_s:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live writer holds it
                continue
            try:
                same = os.lstat(entry.path)
            except FileNotFoundError:
                continue
            if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        finally:
            os.close(fd)
    return removed


def remove_stale_tmp_files_under(root: str | Path, min_age_s: float = STALE_TMP_MIN_AGE_S) -> list[Path]:
    """`remove_stale_tmp_files` in `root` and in each of its sub-directories (every run directory of
    a checkpoints root): what the app calls at start."""
    root = Path(root)
    removed = remove_stale_tmp_files(root, min_age_s)
    try:
        subdirs = [d for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for d in subdirs:
        removed += remove_stale_tmp_files(d, min_age_s)
    return removed


def write_json(path: Path, obj: Any) -> None:
    _atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    _atomic_write_bytes(path, buf.getvalue())


def write_torch(path: Path, obj: Any) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def append_jsonl(path: Path, obj: Any) -> None:
    # One write() per line in append mode: readers tolerate at most a torn last line.
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj, default=_json_default) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        pass
    return rows


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Exclusive flock on `lock_path` (created if needed) for a read-modify-write shared between
    processes. Not re-entrant: a process must not take the same lock twice."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
