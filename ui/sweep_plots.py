"""The Compare page's plots of a sweep: one metric against alpha (log x) with mean ± std per alpha,
single runs, alpha-free losses as horizontal reference lines and the paper's alpha_low; and the
per-run progress table."""

from __future__ import annotations

import math

import plotly.graph_objects as go
import streamlit as st

from core.catalog import number
from core.losses import loss_spec
from core.sweep_view import alpha_groups, is_baseline, progress_rows, reference_lines

METRIC_LABELS = {
    "test_accuracy": "test accuracy",
    "precision_at_1": "P@1",
    "map_at_r": "MAP@R",
    "anomaly_auroc": "anomaly AUROC",
    "anomaly_aupr": "anomaly AUPR",
    "mean_feature_norm": "mean feature norm ‖f‖",
}
ALPHA_LOW_COLOUR = "#ff7f0e"
UNKNOWN_LOSS_COLOUR = "#555"
X_PAD = 1.6  # the log x axis reaches this factor beyond the smallest and largest alpha
TICK_MIN_GAP = 0.35  # natural-log distance under which two tick labels would overlap


def _colour(loss: str) -> str:
    try:
        return loss_spec(loss).colour
    except ValueError:
        return UNKNOWN_LOSS_COLOUR


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _thin_ticks(values: list[float], min_gap: float = TICK_MIN_GAP) -> list[float]:
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


def _alpha_traces(
    fig: go.Figure, groups: list[dict], rows: list[dict], metric: str, label: str
) -> list[float]:
    """Mean ± std per alpha and the single runs as faint dots; returns the y values drawn."""
    colour = _colour(groups[0]["loss"])
    means = [a[f"{metric}_mean"] for a in groups]
    stds = [a[f"{metric}_std"] for a in groups]
    names = [
        f"{a['alpha']} (= {a['alpha_value']:.2f})" if a["alpha"] == "auto" else a["alpha"] for a in groups
    ]
    fig.add_trace(
        go.Scatter(
            x=[a["alpha_value"] for a in groups],
            y=means,
            mode="lines+markers",
            name="L2-softmax (mean ± std)",
            error_y={"type": "data", "array": stds, "visible": True, "thickness": 1.5, "width": 5},
            line={"color": colour, "width": 2},
            marker={"size": 8},
            customdata=[[n, a["n"]] for n, a in zip(names, groups)],
            hovertemplate="α %{customdata[0]}<br>" + label + " %{y:.4f} ± %{error_y.array:.4f}"
            "<br>%{customdata[1]} run(s)<extra></extra>",
        )
    )
    ys = [m - s for m, s in zip(means, stds)] + [m + s for m, s in zip(means, stds)]
    pts = [
        (number(r.get("alpha_final")), number(r.get(metric)))
        for r in rows
        if r.get("loss") == groups[0]["loss"] and r.get("state") == "completed"
    ]
    pts = [(x, y) for x, y in pts if x and y is not None]
    if pts:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                name="single runs",
                marker={"size": 5, "color": _rgba(colour, 0.35)},
                hoverinfo="skip",
            )
        )
    return ys + [p[1] for p in pts]


def _reference_traces(fig: go.Figure, refs: list[dict], metric: str, lo_x: float, hi_x: float) -> list[float]:
    """One dashed horizontal line (with a ±std band) per alpha-free loss; returns the y values drawn."""
    ys: list[float] = []
    for ref in refs:
        mean, std = number(ref.get(f"{metric}_mean")), number(ref.get(f"{metric}_std")) or 0.0
        if mean is None:
            continue
        colour = _colour(ref["loss"])
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
        ys += [mean - std, mean + std]
    return ys


def _y_range(ys: list[float], metric: str) -> tuple[float, float]:
    finite = [y for y in ys if y is not None and math.isfinite(y)]
    y0, y1 = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = max((y1 - y0) * 0.08, 1e-3 if metric != "mean_feature_norm" else 0.05)
    return y0 - pad, y1 + pad


def metric_figure(
    agg: list[dict],
    rows: list[dict],
    metric: str,
    a_low: float | None,
    extra_refs: list[dict] | None = None,
    height: int = 330,
) -> go.Figure:
    """One metric against alpha (log x): mean ± std over seeds/splits for the alpha loss, each run as a
    faint dot, the paper's alpha_low as a vertical line and every alpha-free loss (the baseline first)
    as a horizontal line with a ±std band."""
    label = METRIC_LABELS.get(metric, metric)
    groups = alpha_groups(agg)
    refs = sorted(reference_lines(agg) + (extra_refs or []), key=lambda a: not is_baseline(a["loss"]))
    fig = go.Figure()
    xs = [a["alpha_value"] for a in groups]
    ys = _alpha_traces(fig, groups, rows, metric, label) if groups else []
    lo_x = min(xs + ([a_low] if a_low else []), default=1.0) / X_PAD
    hi_x = max(xs + ([a_low] if a_low else []), default=64.0) * X_PAD
    ys += _reference_traces(fig, refs, metric, lo_x, hi_x)
    y0, y1 = _y_range(ys, metric)
    if a_low:
        fig.add_trace(
            go.Scatter(
                x=[a_low, a_low],
                y=[y0, y1],
                mode="lines",
                name=f"α_low = {a_low:.2f} (paper's bound)",
                line={"color": ALPHA_LOW_COLOUR, "dash": "dot", "width": 2},
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


def draw_progress_table(state: dict, key: str) -> None:
    """How many runs of a sweep finished, and one row per run with its progress."""
    rows = progress_rows(state)
    counts = state.get("counts", {})
    waiting = "submitting the runs…" if state.get("state") == "running" else "no run was submitted"
    facts = ", ".join(f"{v} {k}" for k, v in counts.items()) or waiting
    st.markdown(f"**{state.get('done', 0)} / {state.get('total', 0)} runs finished** · {facts}")
    if rows:
        st.dataframe(
            rows,
            hide_index=True,
            key=key,
            height=min(36 * len(rows) + 38, 320),
            column_config={
                "progress": st.column_config.ProgressColumn(
                    "progress", min_value=0.0, max_value=1.0, format="percent"
                ),
                "run_id": st.column_config.TextColumn("run id", width="medium"),
            },
        )
