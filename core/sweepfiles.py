"""The files of a sweep directory OUT: the manifest OUT/sweep.json (read-modify-write under a lock),
OUT/results.csv and OUT/summary.csv, and where the app keeps its sweeps. See core/sweep.py for the
layout; this module reads and writes it, core.sweep runs sweeps."""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from core import jobs
from core.fsutil import locked, read_json, write_json

METRICS = [
    "test_accuracy",
    "precision_at_1",
    "map_at_r",
    "anomaly_auroc",
    "anomaly_aupr",
    "train_seconds",
    "mean_feature_norm",
]
RESULT_FIELDS = ["run_id", "state", "loss", "alpha", "alpha_final", "seed", "split", "holdout", *METRICS]
SWEEPS_DIR = ".sweeps"

# ------------------------------------------------------------------------------------- manifest


_lock_depth = 0
_deferred: list[Callable[[], None]] = []


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Exclusive lock on OUT/.sweep.lock for a read-modify-write of the manifest (the sweep process
    and a page's Cancel may write it at the same time). The sweep's SIGTERM handler defers itself
    (`_defer_if_locked`) while this process holds the lock: flock is not re-entrant. (Signals are not
    blocked instead: the training jobs submitted meanwhile would inherit the blocked mask.)"""
    global _lock_depth
    _lock_depth += 1
    try:
        with locked(Path(out) / ".sweep.lock"):
            yield
    finally:
        _lock_depth -= 1
        if _lock_depth == 0 and _deferred:
            _deferred.pop()()


def _defer_if_locked(fn: Callable[[], None]) -> bool:
    if _lock_depth:
        _deferred[:] = [fn]
        return True
    return False


def read_manifest(out: Path) -> dict:
    m = read_json(Path(out) / "sweep.json")
    if not isinstance(m, dict) or not isinstance(m.get("runs", []), list):
        raise ValueError(f"{out}/sweep.json is not a sweep manifest")
    m.setdefault("runs", [])
    return m


def update_manifest(out: Path, fn: Callable[[dict], None]) -> dict:
    out = Path(out)
    with _locked(out):
        try:
            m = read_manifest(out)
        except FileNotFoundError:
            m = {"runs": []}
        fn(m)
        write_json(out / "sweep.json", m)
    return m


def _root_fields(out: Path, root: Path) -> dict:
    """The runs' root, relative to the sweep dir (portable) and absolute (informative)."""
    root_abs = Path(root).resolve()
    try:
        rel = os.path.relpath(root_abs, Path(out).resolve())
    except ValueError:
        rel = str(root_abs)
    return {"root": rel, "root_abs": str(root_abs)}


def runs_root(out: Path, manifest: dict | None = None) -> Path:
    """Where a sweep's runs are. In order: the manifest's "root" (relative to OUT, or absolute as written
    by older versions), "root_abs", then - for a sweep dir copied from another machine, e.g. a shipped
    demo - OUT/runs, OUT itself, OUT's parent and the app's checkpoints root. The first candidate that
    holds the sweep's first run wins; with no run to look for, the first that exists."""
    out = Path(out)
    m = manifest if manifest is not None else read_manifest(out)
    cands: list[Path] = []
    for key in ("root", "root_abs"):
        r = m.get(key)
        if r:
            p = Path(r)
            cands.append(p if p.is_absolute() else out / p)
    cands += [out / "runs", out, out.parent, jobs.default_root()]
    probe = next((r.get("run_id") for r in m["runs"] if r.get("run_id")), None)
    for c in cands:
        if probe and (c / probe).is_dir():
            return c.resolve()
    for c in cands[:2] if not probe else []:
        if c.is_dir():
            return c.resolve()
    return cands[0].resolve() if cands else out.resolve()


# ------------------------------------------------------------------------------------- results


def run_status(run_id: str, root: Path) -> dict:
    try:
        return jobs.status(run_id, root)
    except (KeyError, ValueError):
        return {"run_id": run_id, "state": "missing", "reason": "run directory not found"}


def collect(out: Path, root: Path | None = None) -> list[dict]:
    """Rows for results.csv from the sweep manifest and each run's summary."""
    out = Path(out)
    manifest = read_manifest(out)
    root = Path(root) if root is not None else runs_root(out, manifest)
    rows = []
    for cell in manifest["runs"]:
        st = run_status(cell["run_id"], root)
        row = {
            **{k: cell.get(k, "") for k in ("run_id", "loss", "alpha", "seed", "split", "holdout")},
            "state": st["state"],
        }
        summary_path = root / cell["run_id"] / "summary.json"
        if st["state"] == "completed" and summary_path.exists():
            try:
                s = read_json(summary_path)
            except (OSError, ValueError):
                s = {}
            row.update({k: s.get(k) for k in METRICS})
            row["alpha_final"] = s.get("alpha")
        rows.append(row)
    return rows


def finite_number(v: object) -> float | None:
    """v as a finite float, or None (missing, empty, text, NaN or infinite): CSV cells and summaries."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run) over seeds and splits, per
    (loss, alpha). `alpha_value` is the mean numeric alpha the runs ended with ("auto" resolved)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["state"] == "completed":
            groups.setdefault((r["loss"], str(r["alpha"] if r["alpha"] is not None else "")), []).append(r)
    out = []
    for (loss, alpha), rs in groups.items():
        finals = [v for v in (finite_number(r.get("alpha_final")) for r in rs) if v is not None]
        agg = {
            "loss": loss,
            "alpha": alpha,
            "alpha_value": sum(finals) / len(finals) if finals else finite_number(alpha),
            "n": len(rs),
        }
        for m in METRICS:
            vals = [v for v in (finite_number(r.get(m)) for r in rs) if v is not None]
            mean = sum(vals) / len(vals) if vals else float("nan")
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            agg[f"{m}_mean"], agg[f"{m}_std"] = mean, std
        out.append(agg)
    return sorted(out, key=lambda a: (a["loss"], _alpha_sort_key(a["alpha"])))


def _alpha_sort_key(a: str) -> float:
    try:
        return float(a)
    except ValueError:
        return -1.0 if a == "auto" else math.inf


def summary_fields() -> list[str]:
    return ["loss", "alpha", "alpha_value", "n"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else [])
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_results(out: Path, root: Path | None = None) -> list[dict]:
    out = Path(out)
    rows = collect(out, root)
    write_csv(out / "results.csv", rows, RESULT_FIELDS)
    write_csv(out / "summary.csv", aggregate(rows), summary_fields())
    return rows


# ------------------------------------------------------------------------------------- the app's sweeps


def sweeps_root(checkpoints: Path | None = None) -> Path:
    """Where the app launches its sweeps: <checkpoints root>/.sweeps."""
    return Path(checkpoints or jobs.default_root()) / SWEEPS_DIR


def new_sweep_dir(label: str, checkpoints: Path | None = None) -> Path:
    """A fresh, unique OUT under sweeps_root (created exclusively)."""
    base = sweeps_root(checkpoints)
    base.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-")[:40] or "sweep"
    while True:
        out = base / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}-{os.urandom(2).hex()}"
        try:
            out.mkdir()
            return out
        except FileExistsError:
            continue


def list_sweeps(checkpoints: Path | None = None, max_depth: int = 3) -> list[Path]:
    """Every directory holding a sweep.json under the checkpoints root (the app's .sweeps/*, shipped
    demo-sweep/, ...), newest first. Run directories (with status.json) are not descended into."""
    root = Path(checkpoints or jobs.default_root())
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            entries = [e for e in os.scandir(d) if e.is_dir(follow_symlinks=False)]
        except OSError:
            return
        for e in entries:
            p = Path(e.path)
            if (p / "sweep.json").is_file():
                found.append(p)
            elif depth < max_depth and not (p / "status.json").exists():
                walk(p, depth + 1)

    walk(root, 1)

    def created(p: Path) -> float:
        try:
            return float(read_json(p / "sweep.json").get("created") or 0)
        except (OSError, ValueError, AttributeError):
            return 0.0

    return sorted(found, key=created, reverse=True)
