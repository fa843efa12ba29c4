"""A run's live progress: progress bar and ETA, loss/accuracy curves, Cancel button, failure details;
and ``run_monitor``, the fragment that polls the run files while any watched run is live."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core import jobs
from core.catalog import LIVE_STATES, checkpoints_root, number, read_object
from core.runs import metrics
from ui.run_table import state_badge
from ui.text import fmt_duration, one_line

MAX_CURVE_POINTS = 2000  # keep the live view light: every n-th step beyond this
FEW_POINTS = 30  # a line through one or two points is invisible: show markers too
LOG_LINES = 20
SUMMARY_FACTS = (
    ("test_accuracy", "test accuracy", ".3f"),
    ("anomaly_auroc", "anomaly AUROC", ".3f"),
    ("alpha", "α", ".2f"),
)
DURATIONS = (("train_seconds", "training took"), ("projection_seconds", "projections (PCA, UMAP) took"))


def metrics_figure(rows: Sequence[dict], height: int = 300) -> go.Figure:
    """Loss (per step) and accuracy (train batch per step, validation per epoch) side by side."""
    steps = [r for r in rows if r.get("event") == "step"]
    epochs = [r for r in rows if r.get("event") == "epoch"]
    if len(steps) > MAX_CURVE_POINTS:
        stride = int(np.ceil(len(steps) / MAX_CURVE_POINTS))
        steps = steps[::stride] + steps[-1:]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08)
    x = [r.get("step") for r in steps]
    mode = "lines+markers" if len(steps) < FEW_POINTS else "lines"
    fig.add_trace(
        go.Scatter(x=x, y=[r.get("loss") for r in steps], mode=mode, name="train loss", line={"width": 1.5}),
        row=1,
        col=1,
    )
    acc = [r.get("accuracy") for r in steps]
    if any(a is not None for a in acc):
        fig.add_trace(
            go.Scatter(x=x, y=acc, mode=mode, name="train batch acc", line={"width": 1}, opacity=0.6),
            row=1,
            col=2,
        )
    if epochs:
        fig.add_trace(
            go.Scatter(
                x=[r.get("step") for r in epochs],
                y=[r.get("val_accuracy") for r in epochs],
                mode="lines+markers",
                name="val acc (epoch)",
                marker={"size": 8},
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(
        height=height,
        margin={"l": 40, "r": 10, "t": 30, "b": 70},
        legend={"orientation": "h", "y": -0.38, "x": 0.0},
    )
    return fig


def progress_text(run: dict) -> str:
    state = run.get("state")
    if state == "queued":
        pos = f" (#{run['position']} in the queue)" if run.get("position") else ""
        return f"queued{pos}, waiting for a free slot"
    p = float(run.get("progress") or 0.0)
    phase = run.get("phase") or state
    eta = run.get("eta_s")
    parts = [str(phase), f"{p:.0%}"]
    if run.get("epoch"):
        parts.append(f"epoch {run['epoch']}")
    if state == "running" and phase == "training" and eta is not None:
        parts.append(f"ETA {fmt_duration(eta)}")
    return " · ".join(parts)


def _cancel_button(run_id: str, root: Path, key: str) -> None:
    if st.button("Cancel", key=f"{key}-cancel-{run_id}", help="Stop this run (SIGTERM)"):
        try:
            jobs.cancel(run_id, root)
        except (KeyError, ValueError, OSError) as e:
            st.error(one_line(e))
        st.rerun()


def _summary_facts(root: Path, run_id: str) -> None:
    try:
        summ = read_object(root / run_id / "summary.json", "summary.json")
    except ValueError as e:
        st.error(one_line(e))
        return
    if facts := summary_facts(summ):
        st.caption(" · ".join(facts))


def summary_facts(summary: dict) -> list[str]:
    """A finished run's headline figures and where its time went (training, then the projections the
    job computes for Explore: the long part of a full-MNIST run)."""
    facts = [
        f"{label} {number(summary.get(k)):{fmt}}"
        for k, label, fmt in SUMMARY_FACTS
        if number(summary.get(k)) is not None
    ]
    for key, label in DURATIONS:
        if (seconds := number(summary.get(key))) is not None:
            facts.append(f"{label} {fmt_duration(seconds)}")
    return facts


def _outcome(run: dict, root: Path) -> None:
    state, run_id = run.get("state"), run["run_id"]
    if state == "failed":
        st.error(f"failed: {one_line(run.get('reason') or 'unknown reason')}")
        with st.expander("last lines of log.txt", expanded=True):
            st.code(jobs.log_tail(run_id, root, LOG_LINES) or "(log.txt is empty)", language="text")
    elif state == "cancelled":
        st.warning(one_line(run.get("reason") or "cancelled"))
    elif state == "completed":
        _summary_facts(root, run_id)


def draw_run_progress(
    run: dict, root: str | Path | None = None, key: str = "run", curves: bool = True
) -> None:
    """One run (a row of ``core.jobs.list_runs`` / ``queue``): progress, curves, Cancel; failure details."""
    root = Path(root or checkpoints_root())
    run_id, state = run["run_id"], run.get("state")
    with st.container(border=True):
        head, btn = st.columns([6, 1], vertical_alignment="center")
        name = run.get("name") or run_id
        head.markdown(f"**{name}** &nbsp; `{run_id}`" if name != run_id else f"`{run_id}`")
        with btn:
            _cancel_button(run_id, root, key) if state in LIVE_STATES else state_badge(state)
        progress = min(max(float(run.get("progress") or 0.0), 0.0), 1.0)
        if state in LIVE_STATES or state == "completed":
            st.progress(1.0 if state == "completed" else progress, text=progress_text(run))
        _outcome(run, root)
        if curves and state != "queued":
            rows = metrics(root / run_id)
            if rows:
                st.plotly_chart(
                    metrics_figure(rows, height=260),
                    key=f"{key}-curves-{run_id}",
                    config={"displayModeBar": False},
                )


def _with_names(rows: list[dict], root: Path) -> list[dict]:
    out = []
    for r in rows:
        try:
            cfg = read_object(root / r["run_id"] / "config.json", "config.json")
        except ValueError:
            cfg = {}  # the runs table reports the broken file; here the run id is name enough
        out.append({**r, "name": cfg.get("name") or r["run_id"]})
    return out


def _watched(root: Path, run_ids: Sequence[str] | None) -> list[dict]:
    if run_ids is None:
        rows = [{**r, "position": i} for i, r in enumerate(jobs.queue(root), 1)]
    else:
        rows = []
        for rid in run_ids:
            try:
                rows.append(jobs.status(rid, root))
            except (KeyError, ValueError):
                continue  # deleted meanwhile
    return _with_names(rows, root)


def run_monitor(
    root: str | Path | None = None,
    key: str = "monitor",
    run_ids: Sequence[str] | None = None,
    interval: float = 2.0,
    on_idle: Callable[[list[dict]], None] | None = None,
    curves: bool = True,
) -> list[dict]:
    """Draw the watched runs and poll their files while any of them is queued or running.

    ``run_ids=None`` watches the live queue; otherwise exactly those runs (finished ones included).
    ``on_idle(rows)`` is called inside the fragment once none of the watched runs is live. Returns the
    rows drawn by the first (full-page) pass."""
    root = Path(root or checkpoints_root())
    first = _watched(root, run_ids)
    live_at_start = any(r.get("state") in LIVE_STATES for r in first)

    @st.fragment(run_every=interval if live_at_start else None)
    def _panel() -> None:
        rows = _watched(root, run_ids)
        for r in rows:
            draw_run_progress(r, root, key=key, curves=curves)
        live = any(r.get("state") in LIVE_STATES for r in rows)
        if live_at_start and not live:
            st.rerun()  # full rerun: redraw once more without run_every, i.e. stop polling
        if not live and on_idle is not None:
            on_idle(rows)

    _panel()
    return first
