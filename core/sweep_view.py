"""What the Compare page shows of a sweep, without drawing: the sweep read back (``load_sweep``),
its context (data, holdout, classes), aggregates split into alpha groups and alpha-free references,
the per-run progress rows, the launch form's parsing and command line, and default picks.

Sweeps are directories holding a ``sweep.json`` written by ``core.sweep`` (see its docstring for the
layout); the app launches its own into ``<checkpoints root>/.sweeps/<name>`` and also lists any other
sweep under the checkpoints root (the shipped ``checkpoints/demo-sweep``)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import sweep
from core.catalog import number
from core.fsutil import read_json
from core.losses import LOSS_SPECS, alpha_lower_bound

DEFAULT_ALPHAS = "1,2,4,8,16,32,64"
MAX_GRID = 60


def has_alpha(loss: Any) -> bool:
    spec = LOSS_SPECS.get(str(loss))
    return spec is not None and spec.has_alpha


def is_baseline(loss: Any) -> bool:
    spec = LOSS_SPECS.get(str(loss))
    return spec is not None and spec.is_baseline


@dataclass
class SweepData:
    out: Path
    manifest: dict
    state: dict  # core.sweep.sweep_state (empty when the runs cannot be found)
    rows: list[dict]  # one per run, results.csv columns
    root: Path  # where the runs are
    from_csv: bool = False  # rows read from results.csv because the runs are not here
    context: dict = field(default_factory=dict)  # data, holdout, dim, num_classes, epochs

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.out.name)

    @property
    def live(self) -> bool:
        return self.state.get("state") == "running"

    @property
    def completed(self) -> list[dict]:
        return [r for r in self.rows if r.get("state") == "completed"]


def read_results_csv(out: Path) -> list[dict]:
    try:
        with open(Path(out) / "results.csv", newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def load_sweep(out: str | Path) -> SweepData:
    """Everything the page shows about one sweep. Rows come from the runs themselves (live states and
    metrics); when none of the runs can be found (a results.csv copied without its runs) from
    results.csv. Raises ValueError / OSError for a missing or malformed sweep.json."""
    out = Path(out)
    state = sweep.sweep_state(out)
    root = Path(state["root_resolved"])
    rows = sweep.collect(out, root)
    from_csv = False
    if rows and all(r["state"] == "missing" for r in rows):
        csv_rows = read_results_csv(out)
        if csv_rows:
            rows, from_csv = csv_rows, True
    data = SweepData(out=out, manifest=state, state=state, rows=rows, root=root, from_csv=from_csv)
    data.context = sweep_context(data)
    return data


def _summary(root: Path, run_id: str) -> dict:
    try:
        s = read_json(root / run_id / "summary.json")
        return s if isinstance(s, dict) else {}
    except (OSError, ValueError):
        return {}


def _config(root: Path, run_id: str) -> dict:
    try:
        c = read_json(root / run_id / "config.json")
        return c if isinstance(c, dict) else {}
    except (OSError, ValueError):
        return {}


def sweep_context(data: SweepData) -> dict:
    """Data set, holdout, dim, epochs and number of training classes of a sweep (from its first
    readable run; the holdout and class count fall back to the manifest for digit data)."""
    ctx: dict = {}
    for r in data.rows:
        s = _summary(data.root, r["run_id"])
        if s:
            ctx = {
                "data": s.get("data"),
                "dim": s.get("dim"),
                "epochs": s.get("epochs"),
                "holdout": list(s.get("holdout_classes") or []),
                "num_classes": len(s.get("train_classes") or s.get("normal_classes") or []) or None,
            }
            break
    if not ctx and data.rows:
        c = _config(data.root, data.rows[0]["run_id"])
        ctx = {
            "data": c.get("data"),
            "dim": c.get("dim"),
            "epochs": c.get("epochs"),
            "holdout": list(c.get("holdout_classes") or []),
            "num_classes": None,
        }
    holdouts = {str(r.get("holdout", "")) for r in data.rows}
    if len(holdouts) > 1:  # open-set splits: several holdouts, always 6 known digits
        ctx["holdout"] = None
        ctx["num_classes"] = ctx.get("num_classes") or 6
    elif not ctx.get("num_classes") and ctx.get("data") in ("mnist-5k", "mnist"):
        held = [h for h in next(iter(holdouts), "").split(",") if h]
        ctx["num_classes"] = 10 - len(held)
    return ctx


def alpha_low(num_classes: int | None, p: float = 0.9) -> float | None:
    """The paper's bound for C training classes (None when C is unknown; C <= 2 uses C = 3, as 'auto'
    does in core.train)."""
    if not num_classes:
        return None
    return alpha_lower_bound(max(int(num_classes), 3), p)


def sweep_label(out: Path, checkpoints: Path) -> str:
    """A stable label (it must not change while the sweep runs: the selectbox keys on it): the sweep's
    folder relative to the checkpoints root, without the app's ".sweeps/" prefix."""
    try:
        where = str(Path(out).relative_to(checkpoints))
    except ValueError:
        where = str(out)
    return where.removeprefix(f"{sweep.SWEEPS_DIR}/")


# --------------------------------------------------------------------------- aggregation


def aggregate(rows: list[dict]) -> list[dict]:
    return sweep.aggregate([{**r, "alpha": r.get("alpha") or ""} for r in rows])


def alpha_groups(agg: list[dict]) -> list[dict]:
    """The L2-softmax groups with a usable numeric alpha, in alpha order."""
    out = [a for a in agg if has_alpha(a["loss"]) and number(a.get("alpha_value")) and a["alpha_value"] > 0]
    return sorted(out, key=lambda a: a["alpha_value"])


def reference_lines(agg: list[dict]) -> list[dict]:
    """Losses without alpha (softmax, triplet, ...) of this sweep: horizontal references."""
    return [a for a in agg if not has_alpha(a["loss"])]


def external_softmax(checkpoints: Path, ctx: dict, exclude: set[str]) -> dict | None:
    """Mean/std of completed baseline (softmax) runs in the checkpoints root on the same data and
    holdout (any dim; the same dim preferred), as an aggregate row with `source`. None when there is none."""
    if ctx.get("holdout") is None or not ctx.get("data"):
        return None
    try:  # summaries only (cheap): no embeddings are loaded for this
        dirs = [d for d in Path(checkpoints).iterdir() if d.is_dir() and not d.name.startswith(".")]
    except OSError:
        return None
    found = []
    for d in dirs:
        if d.name in exclude or not (d / "summary.json").is_file():
            continue
        s = _summary(d.parent, d.name)
        if (
            is_baseline(s.get("loss"))
            and s.get("data") == ctx["data"]
            and sorted(s.get("holdout_classes") or []) == sorted(ctx["holdout"])
        ):
            found.append({**s, "run_id": d.name, "state": "completed", "alpha": ""})
    if not found:
        return None
    same_dim = [s for s in found if s.get("dim") == ctx.get("dim")]
    rows = same_dim or found
    agg = sweep.aggregate(rows)[0]
    dims = sorted({s.get("dim") for s in rows})
    agg["source"] = f"{len(rows)} other softmax run(s), dim {', '.join(map(str, dims))}"
    return agg


# --------------------------------------------------------------------------- progress


def progress_rows(state: dict) -> list[dict]:
    """One row per run of a sweep for the progress table (loss, alpha, seed, split, state, progress,
    phase / reason, ETA)."""
    out = []
    for r in state.get("runs_status", []):
        st = r.get("state")
        p = 1.0 if st == "completed" else min(max(float(r.get("progress") or 0.0), 0.0), 1.0)
        detail = r.get("reason") if st in ("failed", "cancelled", "missing") else r.get("phase") or ""
        eta = r.get("eta_s") if st == "running" else None
        out.append(
            {
                "loss": r.get("loss"),
                "alpha": r.get("alpha") or "–",
                "seed": r.get("seed"),
                "split": r.get("split"),
                "state": st,
                "progress": p,
                "detail": str(detail or ""),
                "ETA": "" if eta is None else f"{int(eta) // 60}:{int(eta) % 60:02d}",
                "run_id": r.get("run_id"),
            }
        )
    return out


# --------------------------------------------------------------------------- launching


def parse_alphas(text: str) -> list[str]:
    """'1,2, auto,4' -> ['1', '2', 'auto', '4']; ValueError (one line) on anything else."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        p = part.strip().lower()
        if not p:
            continue
        if p != "auto":
            try:
                v = float(p)
            except ValueError:
                raise ValueError(f"α must be a positive number or 'auto', got '{part.strip()}'") from None
            if not v > 0 or not math.isfinite(v):
                raise ValueError(f"α must be positive, got '{part.strip()}'")
            p = f"{v:g}"
        if p not in out:
            out.append(p)
    if not out:
        raise ValueError("type at least one α (e.g. 1,2,4,8,16,32,64 or auto)")
    return out


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).replace(";", ",").split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"seeds must be whole numbers separated by commas, got '{text}'") from None
    if not seeds:
        raise ValueError("type at least one seed (e.g. 0,1,2)")
    return list(dict.fromkeys(seeds))


def grid_size(losses: list[str], alphas: list[str], seeds: list[int], splits: int = 0) -> int:
    per = sum(len(alphas) if has_alpha(loss) else 1 for loss in losses)
    return per * len(seeds) * max(1, splits)


def build_argv(
    losses: list[str],
    alphas: list[str],
    seeds: list[int],
    dim: int,
    epochs: int,
    data: str = "mnist-5k",
    data_root: str = "data",
    holdout: str = "",
    openset_splits: int = 0,
    max_train_samples: int = 0,
    projection: str = "pca",
    alpha_trainable: bool = False,
) -> list[str]:
    """The `python -m core.sweep` arguments for the launch form (without --out / --root)."""
    if not losses:
        raise ValueError("choose at least one loss")
    argv = [
        "--data",
        data,
        "--data-root",
        str(data_root),
        "--loss",
        ",".join(losses),
        "--alphas",
        ",".join(alphas),
        "--seeds",
        ",".join(map(str, seeds)),
        "--dim",
        str(int(dim)),
        "--epochs",
        str(int(epochs)),
        "--projection",
        projection if int(dim) > 3 else "none",
    ]
    if openset_splits:
        argv += ["--openset-splits", str(int(openset_splits))]
    elif holdout.strip():
        argv += ["--holdout-classes", ",".join(h.strip() for h in holdout.split(",") if h.strip())]
    if max_train_samples:
        argv += ["--max-train-samples", str(int(max_train_samples))]
    if alpha_trainable:
        argv += ["--alpha-trainable"]
    return argv


def default_embedding_runs(rows: list[dict], k: int = 4) -> list[str]:
    """Run ids to show side by side by default: one softmax run and L2-softmax at the smallest, a
    middle and the largest alpha (first seed / split), so the radial-vs-angular contrast shows."""
    done = [r for r in rows if r.get("state") == "completed"]
    first = sorted(done, key=lambda r: (str(r.get("seed")), str(r.get("split"))))
    picked: list[str] = []
    soft = next((r for r in first if is_baseline(r.get("loss"))), None)
    if soft:
        picked.append(soft["run_id"])
    l2: dict[float, dict] = {}
    for r in first:
        a = number(r.get("alpha_final"))
        if has_alpha(r.get("loss")) and a and a not in l2:
            l2[a] = r
    alphas = sorted(l2)
    if alphas:
        want = [alphas[0], alphas[len(alphas) // 2], alphas[-1]]
        for a in dict.fromkeys(want):
            picked.append(l2[a]["run_id"])
    for r in first:
        if len(picked) >= k:
            break
        if r["run_id"] not in picked and not (is_baseline(r.get("loss")) or has_alpha(r.get("loss"))):
            picked.append(r["run_id"])
    return picked[:k]


def default_fallback_runs(run_dirs: list[Path], k: int = 3) -> list[str]:
    """With no sweep: the runs to show side by side by default. Shipped demo runs (demo-*) of dim 2/3
    (2-D first), else the newest 2/3-D runs, else the newest runs."""

    def info(d: Path) -> tuple[int, str]:
        s = _summary(d.parent, d.name)
        return int(s.get("dim") or 99), str(s.get("loss") or "")

    low = [d for d in run_dirs if info(d)[0] <= 3]
    demo = sorted(
        (d for d in low if d.name.startswith("demo-")), key=lambda d: (info(d)[0], info(d)[1], d.name)
    )
    picked = demo or low or list(run_dirs)
    return [d.name for d in picked[:k]]


def run_caption(row: dict) -> str:
    a = number(row.get("alpha_final"))
    alpha = f"α = {row.get('alpha')}" + (f" → {a:.2f}" if a and row.get("alpha") == "auto" else "")
    return (
        f"{row.get('loss')}"
        + (f", {alpha}" if has_alpha(row.get("loss")) else "")
        + f", seed {row.get('seed')}"
    )
