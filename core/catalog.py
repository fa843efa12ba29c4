"""The one listing model of runs for the UI: ``RunEntry`` (what a table row or a picker shows)
and how to list them. Loading a run's arrays stays in ``core.runs`` (``RunEntry.load()``).

- ``checkpoints_root()``: env ``HSE_CHECKPOINTS`` or ``<repo>/checkpoints`` (``core.jobs``), per call.
- ``list_entries(root) -> list[RunEntry]``: every run, newest first; a malformed one has ``.error``.
- ``completed_entries(root) -> (entries, errors)``: completed runs whose files load, newest first,
  and one error line per run that cannot be read.
- ``try_load(entry) -> (Run | None, error | None)``: a run's arrays, or one line naming the run.
- ``health(entry) -> list[HealthWarning]``: ``core.health.check_run`` of a run, cached per version.
- ``default_entry(entries)``: the run to open first (newest non-sweep run with the best health).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from core import jobs
from core.fsutil import read_json
from core.health import HealthWarning, check_run
from core.losses import LOSS_SPECS
from core.rundir import SPLIT_TEST
from core.runs import Run, RunError, list_completed, load_run
from core.sweepfiles import finite_number
from core.uploads import upload_name

LIVE_STATES = ("queued", "running")
SWEEP_PREFIX = "sweep-"


def checkpoints_root() -> Path:
    return Path(jobs.default_root())


number = finite_number  # one rule for "a usable number" (core.sweepfiles)


def read_object(path: Path, what: str) -> dict:
    """A JSON object file; {} when missing, ValueError naming the run and the file when malformed."""
    try:
        obj = read_json(path)
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.parent.name}: {what} is malformed ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path.parent.name}: {what} is not a JSON object")
    return obj


def data_label(data: Any, name: Any = None) -> str:
    """Short name of a run's data as the user knows it: ``name`` when the run recorded its upload's
    original name (config ``data_name``), the bundled set's name, or the folder inside an upload
    (``upload digits``); never the content hash or a server path."""
    if name:
        return str(name)
    data = str(data or "")
    if not data:
        return ""
    p = Path(data)
    if recorded := upload_name(p):  # the name the user uploaded it under (upload.json)
        return recorded
    if p.is_absolute() and "uploads" in p.parts:
        after = p.parts[p.parts.index("uploads") + 1 :]
        inner = "/".join(after[1:])  # after[0] is the content-hash folder
        return f"upload {inner}" if inner else "upload"
    return p.name if p.is_absolute() else data


@dataclass
class RunEntry:
    run_id: str
    run_dir: Path
    status: dict
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def state(self) -> str:
        return str(self.status.get("state") or "unknown")

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_id)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def loss(self) -> str:
        return str(self.summary.get("loss") or self.config.get("loss") or "")

    @property
    def method(self) -> str:
        """How the run scores images: "metric" (a trained embedding), "knn" or "patch"."""
        return str(self.summary.get("method") or self.config.get("method") or "metric")

    @property
    def data_label(self) -> str:
        return data_label(
            self.summary.get("data") or self.config.get("data"),
            self.config.get("data_name") or self.summary.get("data_name"),
        )

    @property
    def alpha_label(self) -> str:
        """The run's α (final value when trained, else as configured); "–" for losses without α."""
        spec = LOSS_SPECS.get(self.loss)
        if spec is None or not spec.has_alpha:
            return "–"
        final = number(self.summary.get("alpha"))
        if final is not None:
            return f"{final:.2f}"
        configured = self.config.get("alpha")
        value = number(configured)
        return f"{value:.2f}" if value is not None else str(configured) if configured is not None else "?"

    def load(self) -> Run:
        return load_run(self.run_dir)


def read_entry(status_row: dict, root: str | Path | None = None) -> RunEntry:
    """Config and summary of one run (a row of ``core.jobs.list_runs``); errors land in ``.error``."""
    root = Path(root or checkpoints_root())
    run_id = str(status_row["run_id"])
    entry = RunEntry(run_id=run_id, run_dir=root / run_id, status=dict(status_row))
    errors = []
    for attr, fname in (("config", "config.json"), ("summary", "summary.json")):
        try:
            setattr(entry, attr, read_object(entry.run_dir / fname, fname))
        except ValueError as e:
            errors.append(str(e).splitlines()[0])
    if entry.state == "completed" and not entry.summary and not errors:
        errors.append(f"{run_id}: summary.json is missing")
    if str(status_row.get("reason", "")).startswith("status.json is malformed"):
        errors.append(f"{run_id}: {status_row['reason']}")
    entry.error = "; ".join(errors) or None
    return entry


def list_entries(root: str | Path | None = None) -> list[RunEntry]:
    root = Path(root or checkpoints_root())
    return [read_entry(row, root) for row in jobs.list_runs(root)]


def completed_entries(root: str | Path | None = None) -> tuple[list[RunEntry], list[str]]:
    """Completed runs whose files load (newest first) and one error line per unreadable run."""
    root = Path(root or checkpoints_root())
    dirs, errors = list_completed(root)
    entries = []
    for d in dirs:
        try:
            status = read_object(d / "status.json", "status.json")
        except ValueError:
            status = {}  # load_run accepted the run: its summary says it completed
        entries.append(read_entry({**status, "state": "completed", "run_id": d.name}, root))
    return entries, errors


def try_load(entry: RunEntry | str | Path) -> tuple[Run | None, str | None]:
    """A run's arrays, or (None, one line naming the run) when its files cannot be read."""
    run_dir = entry.run_dir if isinstance(entry, RunEntry) else Path(entry)
    try:
        return load_run(run_dir), None
    except RunError as e:
        return None, str(e)
    except (OSError, ValueError, KeyError) as e:
        return None, f"{run_dir.name}: cannot be read ({e.__class__.__name__})"


def run_mtime(run_dir: str | Path) -> int:
    """Newest mtime of the run's files: the cache key that changes when a file is rewritten."""
    try:
        return max((p.stat().st_mtime_ns for p in Path(run_dir).iterdir() if p.is_file()), default=0)
    except OSError:
        return 0


# ------------------------------------------------------------------------------------------ health


def is_sweep_run(entry: RunEntry) -> bool:
    """A run started by a sweep (core.sweep names them ``sweep-...``)."""
    return entry.name.startswith(SWEEP_PREFIX)


@lru_cache(maxsize=256)
def _health(run_dir: str, mtime: int) -> tuple[HealthWarning, ...]:  # noqa: ARG001 - mtime is the cache key
    summary = read_object(Path(run_dir) / "summary.json", "summary.json")
    with np.load(
        Path(run_dir) / "embeddings.npz", allow_pickle=False
    ) as z:  # two columns, not the embeddings
        scores = np.asarray(z["score"])[np.asarray(z["split"]) == SPLIT_TEST]
    return tuple(check_run(summary, scores))


def health(entry: RunEntry | str | Path) -> list[HealthWarning]:
    """``core.health.check_run`` of a completed run (its summary and its test rows' scores), cached per
    run version; [] for a run without its files (its error is reported elsewhere)."""
    run_dir = entry.run_dir if isinstance(entry, RunEntry) else Path(entry)
    try:
        return list(_health(str(run_dir), run_mtime(run_dir)))
    except (OSError, ValueError, KeyError):
        return []


def default_entry(entries: list[RunEntry], prefer: Callable[[RunEntry], bool] | None = None) -> RunEntry:
    """The run to open when the user has chosen none: the newest non-sweep run with the fewest health
    warnings (entries are newest first), among those ``prefer`` accepts if any, else the newest run."""
    own = [e for e in entries if not is_sweep_run(e) and e.state == "completed"] or list(entries)
    if prefer is not None:
        own = [e for e in own if prefer(e)] or own
    return min(own, key=lambda e: len(health(e)))  # min keeps the first (newest) of equal ones
