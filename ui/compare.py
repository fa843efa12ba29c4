"""Helpers of the Compare page (pages/4_Compare.py): reading sweeps, the metric-vs-alpha figures, the
per-run progress table, the embedding small multiples and the launch form's command line.

Sweeps are directories holding a ``sweep.json`` written by ``core.sweep`` (see its docstring for the
layout); the app launches its own into ``<checkpoints root>/.sweeps/<name>`` and also lists any other
sweep under the checkpoints root (the shipped ``checkpoints/demo-sweep``)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from core import sweep, views
from core.fsutil import read_json
from core.losses import alpha_lower_bound

METRIC_LABELS = {
    "test_accuracy": "test accuracy",
    "precision_at_1": "P@1",
    "map_at_r": "MAP@R",
    "anomaly_auroc": "anomaly AUROC",
    "anomaly_aupr": "anomaly AUPR",
    "mean_feature_norm": "mean feature norm ‖f‖",
}
LOSS_COLOURS = {
    "l2softmax": "#1f77b4",
    "softmax": "#d62728",
    "triplet": "#2ca02c",
    "arcface": "#9467bd",
    "cosface": "#8c564b",
    "normface": "#e377c2",
    "npair": "#7f7f7f",
}
DEFAULT_ALPHAS = "1,2,4,8,16,32,64"
MAX_GRID = 60


# --------------------------------------------------------------------------- reading sweeps


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


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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
    out = [a for a in agg if a["loss"] == "l2softmax" and _num(a.get("alpha_value")) and a["alpha_value"] > 0]
    return sorted(out, key=lambda a: a["alpha_value"])


def reference_lines(agg: list[dict]) -> list[dict]:
    """Losses without alpha (softmax, triplet, ...) of this sweep: horizontal references."""
    return [a for a in agg if a["loss"] != "l2softmax"]


def external_softmax(checkpoints: Path, ctx: dict, exclude: set[str]) -> dict | None:
    """Mean/std of completed softmax runs in the checkpoints root on the same data and holdout (any dim;
    the same dim preferred), as an aggregate row with `source`. None when there is none."""
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
            s.get("loss") == "softmax"
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


# --------------------------------------------------------------------------- figures


def metric_figure(
    agg: list[dict],
    rows: list[dict],
    metric: str,
    a_low: float | None,
    extra_refs: list[dict] | None = None,
    height: int = 330,
) -> go.Figure:
    """One metric against alpha (log x): mean ± std over seeds/splits for L2-softmax, each run as a
    faint dot, the paper's alpha_low as a vertical line and every alpha-free loss (softmax first) as a
    horizontal line with a ±std band."""
    label = METRIC_LABELS.get(metric, metric)
    groups = alpha_groups(agg)
    refs = sorted(reference_lines(agg) + (extra_refs or []), key=lambda a: a["loss"] != "softmax")
    fig = go.Figure()
    xs = [a["alpha_value"] for a in groups]
    ys_all: list[float] = []
    if groups:
        means = [a[f"{metric}_mean"] for a in groups]
        stds = [a[f"{metric}_std"] for a in groups]
        names = [
            f"{a['alpha']} (= {a['alpha_value']:.2f})" if a["alpha"] == "auto" else a["alpha"] for a in groups
        ]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=means,
                mode="lines+markers",
                name="L2-softmax (mean ± std)",
                error_y={"type": "data", "array": stds, "visible": True, "thickness": 1.5, "width": 5},
                line={"color": LOSS_COLOURS["l2softmax"], "width": 2},
                marker={"size": 8},
                customdata=[[n, a["n"]] for n, a in zip(names, groups)],
                hovertemplate="α %{customdata[0]}<br>" + label + " %{y:.4f} ± %{error_y.array:.4f}"
                "<br>%{customdata[1]} run(s)<extra></extra>",
            )
        )
        ys_all += [m - s for m, s in zip(means, stds)] + [m + s for m, s in zip(means, stds)]
        pts = [
            (_num(r.get("alpha_final")), _num(r.get(metric)))
            for r in rows
            if r.get("loss") == "l2softmax" and r.get("state") == "completed"
        ]
        pts = [(x, y) for x, y in pts if x and y is not None]
        if pts:
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="markers",
                    name="single runs",
                    marker={"size": 5, "color": "rgba(31,119,180,0.35)"},
                    hoverinfo="skip",
                )
            )
            ys_all += [p[1] for p in pts]
    lo_x = min(xs + ([a_low] if a_low else []), default=1.0) / 1.6
    hi_x = max(xs + ([a_low] if a_low else []), default=64.0) * 1.6
    for ref in refs:
        mean, std = _num(ref.get(f"{metric}_mean")), _num(ref.get(f"{metric}_std")) or 0.0
        if mean is None:
            continue
        colour = LOSS_COLOURS.get(ref["loss"], "#555")
        name = f"{ref['loss']} (no α)" + (f": {ref['source']}" if ref.get("source") else "")
        if std > 0:
            fig.add_trace(
                go.Scatter(
                    x=[lo_x, hi_x, hi_x, lo_x],
                    y=[mean - std, mean - std, mean + std, mean + std],
                    fill="toself",
                    mode="lines",
                    fillcolor=_rgba(colour, 0.12),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    name=f"{ref['loss']} ± std",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=[lo_x, hi_x],
                y=[mean, mean],
                mode="lines",
                name=name,
                line={"color": colour, "dash": "dash", "width": 2},
                hovertemplate=f"{ref['loss']}: %{{y:.4f}} ± {std:.4f}<extra></extra>",
            )
        )
        ys_all += [mean - std, mean + std]
    finite = [y for y in ys_all if y is not None and math.isfinite(y)]
    y0, y1 = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = max((y1 - y0) * 0.08, 1e-3 if metric != "mean_feature_norm" else 0.05)
    y0, y1 = y0 - pad, y1 + pad
    if a_low:
        fig.add_trace(
            go.Scatter(
                x=[a_low, a_low],
                y=[y0, y1],
                mode="lines",
                name=f"α_low = {a_low:.2f} (paper's bound)",
                line={"color": "#ff7f0e", "dash": "dot", "width": 2},
                hovertemplate=f"α_low = {a_low:.2f}: below it, p = 0.9 is out of reach<extra></extra>",
            )
        )
    ticks = _thin_ticks([*xs, *([a_low] if a_low else [])])
    fig.update_layout(
        title={"text": label, "x": 0.02, "font": {"size": 15}},
        height=height,
        margin={"l": 50, "r": 10, "t": 40, "b": 40},
        xaxis={
            "type": "log",
            "title": {"text": "α (log scale)"},
            "range": [math.log10(lo_x), math.log10(hi_x)],
            "tickvals": ticks or None,
            "tickangle": 0,
            "ticktext": [f"{t:g}" for t in ticks] or None,
        },
        yaxis={"range": [y0, y1], "title": {"text": label}},
        legend={"orientation": "h", "y": -0.3, "x": 0, "font": {"size": 10}},
        showlegend=False,
        meta={"metric": metric, "alpha_low": a_low},
    )
    return fig


def _thin_ticks(values: list[float], min_gap: float = 0.35) -> list[float]:
    """Tick positions for a log axis without overlapping labels: of two values closer than `min_gap`
    (natural log), the rounder one is kept (4 rather than 3.58 = 'auto')."""
    kept: list[float] = []
    for v in sorted({round(float(x), 2) for x in values if x and x > 0}):
        if kept and math.log(v / kept[-1]) < min_gap:
            if float(v).is_integer() and not float(kept[-1]).is_integer():
                kept[-1] = v
            continue
        kept.append(v)
    return kept


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


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
    per = sum(len(alphas) if loss == "l2softmax" else 1 for loss in losses)
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


# --------------------------------------------------------------------------- embeddings


def default_embedding_runs(rows: list[dict], k: int = 4) -> list[str]:
    """Run ids to show side by side by default: one softmax run and L2-softmax at the smallest, a
    middle and the largest alpha (first seed / split), so the radial-vs-angular contrast shows."""
    done = [r for r in rows if r.get("state") == "completed"]
    first = sorted(done, key=lambda r: (str(r.get("seed")), str(r.get("split"))))
    picked: list[str] = []
    soft = next((r for r in first if r.get("loss") == "softmax"), None)
    if soft:
        picked.append(soft["run_id"])
    l2: dict[float, dict] = {}
    for r in first:
        a = _num(r.get("alpha_final"))
        if r.get("loss") == "l2softmax" and a and a not in l2:
            l2[a] = r
    alphas = sorted(l2)
    if alphas:
        want = [alphas[0], alphas[len(alphas) // 2], alphas[-1]]
        for a in dict.fromkeys(want):
            picked.append(l2[a]["run_id"])
    for r in first:
        if len(picked) >= k:
            break
        if r["run_id"] not in picked and r.get("loss") not in ("softmax", "l2softmax"):
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
    a = _num(row.get("alpha_final"))
    alpha = f"α = {row.get('alpha')}" + (f" → {a:.2f}" if a and row.get("alpha") == "auto" else "")
    return (
        f"{row.get('loss')}"
        + (f", {alpha}" if row.get("loss") == "l2softmax" else "")
        + f", seed {row.get('seed')}"
    )


def embedding_figure(run, title: str, max_points: int = 1500, height: int = 330):  # noqa: ANN001 - core.runs.Run
    """A small embedding figure for the grid: the circle of radius alpha (2-D L2-softmax), the raw plane
    (softmax), the sphere (3-D), or the run's stored UMAP/PCA (dim > 3; never computed here). The same
    seed picks the same stratified sample in every run. Returns (figure | None, note)."""
    from ui import explore_helpers as h

    coords = h.run_coords(run, "umap")
    if coords.xy is None:
        return None, coords.note or "no 2-D view stored for this run"
    rows = views.downsample_indices(len(run.label), max_points, seed=0, strata=run.label)
    fig = h.scatter_figure(run, coords, rows, colour_by="class", height=height)
    layout = fig.to_dict()["layout"]
    layout.update(
        showlegend=False,
        dragmode="pan",
        title={"text": title, "x": 0.02, "font": {"size": 13}},
        margin={"l": 10, "r": 10, "t": 35, "b": 10},
    )
    dim = coords.xy.shape[1]
    if coords.kind == "sphere":
        shape = "circle" if dim == 2 else "sphere"
        note = f"{shape} of radius {coords.radius:.3g}" if coords.radius else shape
    else:
        note = {
            "raw": "raw features (no normalisation)" + ("" if dim == 2 else ", 3-D"),
            "pca": "PCA of the directions",
            "umap": "UMAP of the directions (seed shared by all runs)",
        }.get(coords.kind, coords.kind)
    if coords.kind == "pca" and "umap" in coords.note.lower():
        return fig, note + " (no UMAP stored for this run)"
    return fig, (note + (f" · {coords.note}" if coords.note else ""))


def class_legend(run) -> list[tuple[str, str]]:  # noqa: ANN001 - core.runs.Run
    """(class name, colour) in the order the small multiples colour them."""
    from ui import explore_helpers as h

    labels = np.unique(run.label)
    return [
        (run.class_names[c] if c < len(run.class_names) else str(c), h.PALETTE[i % len(h.PALETTE)])
        for i, c in enumerate(labels)
    ]
