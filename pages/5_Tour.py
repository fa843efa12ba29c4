"""Tour: five steps for non-engineers, each one picture and two plain sentences, on the shipped demo runs.

No formulas here; the other pages carry the details. The pictures are drawn from the demo runs in
``checkpoints/demo-*`` (made by ``scripts/make_demo_checkpoints.sh``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.runs import Run, RunError, load_run
from ui.plotly_spec import PALETTE
from ui.shell import run_inside_app

run_inside_app()  # first, before anything is drawn (see ui/shell.py)


STEP_KEY = "tour_step"
NORMAL_COLOUR, ANOMALY_COLOUR, FLAGGED_COLOUR = "#2ca02c", "#7f7f7f", "#d62728"
MAX_POINTS = 600  # enough to see the shape; the pictures stay light

STEPS = (
    (
        "1 · What an embedding is",
        "A network turns every image into a point, called its embedding. "
        "Images of the same kind land close to each other, so distance means likeness.",
    ),
    (
        "2 · Softmax spreads, L2-softmax puts everything on a circle",
        "With plain softmax, easy images are pushed far out and hard ones stay near the middle. "
        "L2-softmax puts every point on one circle, so only the direction of a point matters.",
    ),
    (
        "3 · A threshold decides: normal or anomaly",
        "Each image gets a score: how far it is from the normal images it was trained on. "
        "Move the slider: images farther than the threshold are flagged as anomalies.",
    ),
    (
        "4 · What α changes",
        "α sets the size of the circle. Too small and the classes crowd together, so the model "
        "names many digits wrongly; a larger circle gives them room. Compare how many each one gets right.",
    ),
    (
        "5 · Try your own photos",
        "Upload a ZIP of photos of good parts (and, if you have them, of defects) on the Train page. "
        "The app learns what normal looks like and shows you which new photos are far from it.",
    ),
)


def _checkpoints() -> Path:
    return Path(os.environ.get("HSE_CHECKPOINTS", Path(__file__).resolve().parent.parent / "checkpoints"))


@st.cache_resource(show_spinner=False)
def _demo(name: str, root: str) -> Run | None:
    try:
        return load_run(Path(root) / name)
    except (RunError, OSError):
        return None


def _sweep_runs(root: Path) -> list[Run]:
    runs = [
        _demo(str(d.relative_to(root)), str(root)) for d in sorted((root / "demo-sweep" / "runs").glob("*"))
    ]
    with_alpha = [r for r in runs if r is not None and r.summary.get("alpha")]
    return sorted(with_alpha, key=lambda r: float(r.summary["alpha"]))


def _points(run: Run, split: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(run.split == split)
    if len(rows) > MAX_POINTS:  # evenly spaced, so every class and the unseen digits stay in the picture
        rows = rows[np.linspace(0, len(rows) - 1, MAX_POINTS).astype(int)]
    return rows, run.emb[rows]


def _scatter(run: Run, scale_to: float | None, title: str) -> go.Figure:
    """Test points coloured by class; ``scale_to`` puts them on a circle of that radius."""
    rows, xy = _points(run)
    if scale_to is not None:
        xy = scale_to * xy / np.maximum(np.linalg.norm(xy, axis=1, keepdims=True), 1e-12)
    fig = go.Figure()
    for c in np.unique(run.label[rows]):
        m = run.label[rows] == c
        fig.add_scatter(
            x=xy[m, 0],
            y=xy[m, 1],
            mode="markers",
            name=f"digit {run.class_names[c]}",
            marker={"size": 5, "color": PALETTE[int(c) % len(PALETTE)]},
        )
    fig.update_layout(title=title, height=360, margin={"l": 10, "r": 10, "t": 40, "b": 10}, showlegend=False)
    fig.update_yaxes(scaleanchor="x", scaleratio=1, showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    return fig


def _step_embedding(root: Path) -> None:
    run = _demo("demo-l2softmax-2d", str(root))
    if run is None:
        st.info("The demo runs are missing: press “Train the quick demo” on Home first.")
        return
    st.plotly_chart(
        _scatter(run, 1.0, "Each dot is one handwritten digit; colour = which digit"), key="tour_embedding"
    )


def _step_circle(root: Path) -> None:
    soft, l2 = _demo("demo-softmax-2d", str(root)), _demo("demo-l2softmax-2d", str(root))
    if soft is None or l2 is None:
        st.info("The demo runs are missing: press “Train the quick demo” on Home first.")
        return
    left, right = st.columns(2)
    left.plotly_chart(_scatter(soft, None, "Softmax: points at every distance"), key="tour_softmax")
    right.plotly_chart(_scatter(l2, float(l2.alpha or 1.0), "L2-softmax: all on one circle"), key="tour_l2")


def _step_threshold(root: Path) -> None:
    run = _demo("demo-l2softmax-2d", str(root))
    if run is None:
        st.info("The demo runs are missing: press “Train the quick demo” on Home first.")
        return
    rows, xy = _points(run)
    xy = xy / np.maximum(np.linalg.norm(xy, axis=1, keepdims=True), 1e-12)
    scores, unknown = run.score[rows], run.anomaly[rows]
    # The slider moves through the ranks of the scores, so every position changes something.
    share = st.slider(
        "How many images to flag",
        1,
        50,
        10,
        format="%d %%",
        key="tour_share",
        help="The threshold, as the share of test images with the largest scores.",
    )
    threshold = float(np.quantile(scores, 1 - share / 100))
    flagged = scores > threshold
    colours = np.where(flagged, FLAGGED_COLOUR, np.where(unknown, ANOMALY_COLOUR, NORMAL_COLOUR))
    fig = go.Figure(
        go.Scatter(
            x=xy[:, 0],
            y=xy[:, 1],
            mode="markers",
            marker={"size": 6, "color": colours, "symbol": np.where(unknown, "x", "circle")},
        )
    )
    fig.update_layout(
        height=380,
        margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title="red = flagged · green = normal digit passed · grey × = unseen digit missed",
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1, showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    st.plotly_chart(fig, key="tour_threshold")
    caught, false_alarms = int((flagged & unknown).sum()), int((flagged & ~unknown).sum())
    st.markdown(
        f"**{caught} of {int(unknown.sum())}** digits the model never saw are caught; "
        f"**{false_alarms} of {int((~unknown).sum())}** normal digits are flagged by mistake."
    )


def _step_alpha(root: Path) -> None:
    runs = _sweep_runs(root)
    if not runs:
        st.info("The demo α sweep is missing (checkpoints/demo-sweep).")
        return
    columns = st.columns(len(runs))
    for col, run in zip(columns, runs):
        alpha = float(run.summary["alpha"])
        acc = run.summary.get("test_accuracy") or 0.0
        col.plotly_chart(_scatter(run, alpha, f"α = {alpha:.3g}<br>{acc:.0%} right"), key=f"tour_a{alpha}")


def _step_own_photos() -> None:
    st.markdown(
        "Open **Train** in the sidebar, choose *Upload (ZIP or images)*, and drop your ZIP. "
        "Folders named after classes work, and so does the MVTec layout (train/good, test/good, "
        "test/<defect>)."
    )


def render() -> None:
    """The Tour page: Back / Next through ``STEPS``."""
    st.title("A five-minute tour")
    step = int(st.session_state.get(STEP_KEY, 0))
    title, text = STEPS[step]
    st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}")
    st.subheader(title)
    st.write(text)
    root = _checkpoints()
    pictures = (_step_embedding, _step_circle, _step_threshold, _step_alpha)
    if step < len(pictures):
        pictures[step](root)
    else:
        _step_own_photos()
    back, _, forward = st.columns([1, 4, 1])
    if back.button("← Back", disabled=step == 0, key="tour_back", width="stretch"):
        st.session_state[STEP_KEY] = step - 1
        st.rerun()
    if forward.button("Next →", disabled=step == len(STEPS) - 1, key="tour_next", width="stretch"):
        st.session_state[STEP_KEY] = step + 1
        st.rerun()


render()
