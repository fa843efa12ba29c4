"""Explore: a run's embedding on the hypersphere (dim 2/3), or its UMAP/PCA projection (dim > 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from core import catalog, views
from core.methods import TRAINING_FREE_METHODS
from core.runs import Run
from core.views import SPLIT_NAMES, draw_raw
from ui.embedding_plot import scatter_figure, selected_rows
from ui.gallery import sample_gallery
from ui.health import draw_health
from ui.norm_plot import norm_histogram
from ui.plotly_spec import GL_CONFIG
from ui.run_choice import pick_run
from ui.sample_story import selection_details
from ui.shell import run_inside_app
from ui.text import run_title

run_inside_app()  # first, before anything is drawn (see ui/shell.py)


MAX_POINTS_DEFAULT = 10_000
MAX_POINTS_OPTIONS = [1000, 2000, 5000, 10_000, 20_000, 50_000]
EXTREMES = 16  # lowest / highest norm samples shown
COORD_CAPTIONS = {
    "raw": "Raw feature plane: the distance from the origin is the feature norm ‖f‖.",
    "umap": "UMAP of the unit-normalised {dim}-D embeddings.",
    "pca": "PCA of the unit-normalised {dim}-D embeddings.",
    "umap_sphere": "UMAP of the unit-normalised {dim}-D embeddings, laid out on a sphere (haversine).",
}


@dataclass
class ViewOptions:
    colour_by: str
    projection: str
    raw: bool
    max_points: int
    splits: list[str]
    k_nn: int


def view_options() -> ViewOptions:
    """The sidebar's view options. Drawn from inside the `run_views` fragment, so a change reruns only
    the runs' views, not the whole page."""
    with st.sidebar:
        colour_by = st.radio(
            "Colour by",
            ["class", "split", "anomaly", "norm"],
            key="explore_colour",
            format_func=lambda c: {"norm": "feature norm", "anomaly": "anomaly flag"}.get(c, c),
        )
        projection = st.radio(
            "Projection for dim > 3",
            ["umap", "umap_sphere", "pca"],
            key="explore_projection",
            format_func=lambda p: {"umap_sphere": "UMAP on a sphere (3-D)"}.get(p, p.upper()),
            help="Stored by the training job (never computed in the page). 'UMAP on a sphere' draws "
            "a dim > 3 run on the unit sphere.",
        )
        raw = st.toggle(
            "Raw features (dim 2/3)",
            value=False,
            key="explore_raw",
            help="Draw pre-normalisation features instead of the hypersphere (always on for softmax).",
        )
        max_points = st.select_slider(
            "Max points drawn", options=MAX_POINTS_OPTIONS, value=MAX_POINTS_DEFAULT, key="explore_max_points"
        )
        names = list(SPLIT_NAMES.values())
        splits = st.multiselect("Splits", names, default=names, key="explore_splits")
        k_nn = st.slider("Neighbours listed for a clicked sample", 1, 20, 8, key="explore_knn")
    return ViewOptions(colour_by, projection, raw, max_points, splits, k_nn)


def run_metrics(run: Run) -> None:
    s = run.summary
    st.subheader(run_title(run))
    m = st.columns(4)
    m[0].metric("test accuracy", f"{s.get('test_accuracy') or 0:.3f}")
    m[1].metric("AUROC", "—" if s.get("anomaly_auroc") is None else f"{s['anomaly_auroc']:.3f}")
    m[2].metric("mean ‖f‖", f"{s.get('mean_feature_norm') or float(np.mean(run.norm)):.2f}")
    m[3].metric("α", "—" if not s.get("alpha") else f"{s['alpha']:.2f}")


def rows_to_draw(run: Run, opts: ViewOptions, keep: list[int]) -> np.ndarray:
    """A stratified sample of the chosen splits, plus the rows selected on the previous rerun."""
    codes = [code for code, name in SPLIT_NAMES.items() if name in opts.splits] or list(SPLIT_NAMES)
    candidates = np.flatnonzero(np.isin(run.split, codes))
    idx = views.downsample_indices(len(candidates), opts.max_points, seed=0, strata=run.label[candidates])
    rows = np.union1d(candidates[idx], np.intersect1d(keep, candidates)).astype(np.int64)
    if len(rows) < len(candidates):
        st.info(
            f"Showing {len(rows):,} of {len(candidates):,} points (stratified by class; raise "
            "'Max points drawn' in the sidebar to see more)."
        )
    return rows


def coords_caption(coords: views.Coords, dim: int) -> None:
    if dim == 2 and coords.kind == "sphere":
        st.caption(
            f"Points at α·f/‖f‖ on the circle of radius {coords.radius:.3g}; "
            "rays are class weight directions."
        )
    elif (dim == 2 and coords.kind == "raw") or coords.kind in ("umap", "pca", "umap_sphere"):
        st.caption(COORD_CAPTIONS[coords.kind].format(dim=dim))


def scatter(run: Run, coords: views.Coords, rows: np.ndarray, opts: ViewOptions, slot: str) -> list[int]:
    """The embedding plot; returns the selected rows (a clicked point, or a box/lasso on 2-D views)."""
    fig = scatter_figure(run, coords, rows, opts.colour_by, dragmode=None)
    event = st.plotly_chart(
        fig,
        key=f"explore_fig_{slot}",
        on_select="rerun",
        selection_mode=("points", "box", "lasso") if coords.xy.shape[1] == 2 else ("points",),
        width="stretch",
        config=GL_CONFIG,
    )
    return selected_rows(event)


def norm_view(run: Run, slot: str) -> None:
    st.plotly_chart(norm_histogram(run), key=f"explore_norm_{slot}", width="stretch")
    low, high = views.norm_extremes(run.norm, EXTREMES, mask=np.ones(len(run.norm), dtype=bool))
    c1, c2 = st.columns(2)
    with c1:
        st.markdown(f"**{EXTREMES} lowest norms** (hard / ambiguous)")
        sample_gallery(run, low, run.norm, ".2f", width=56)
    with c2:
        st.markdown(f"**{EXTREMES} highest norms** (easy)")
        sample_gallery(run, high, run.norm, ".2f", width=56)


def show_run(entry: catalog.RunEntry, opts: ViewOptions, slot: str) -> None:
    run, err = catalog.try_load(entry)
    if run is None:
        st.error(err)
        return
    run_metrics(run)
    draw_health(run)
    if run.projection_error:
        st.warning(run.projection_error)
    run_view(run, opts, slot)
    with st.expander("Feature norms: easy samples grow large norms under softmax", expanded=(slot == "a")):
        norm_view(run, slot)


@st.fragment
def run_view(run: Run, opts: ViewOptions, slot: str) -> None:
    """The plot and what is selected on it: a click reruns only this part of the page."""
    raw = True if (opts.raw or draw_raw(str(run.summary.get("loss")))) else None
    coords = views.run_coords(run, opts.projection, raw=raw)
    if coords.note:
        (st.warning if coords.xy is None else st.caption)(coords.note)
    if coords.xy is None:
        return
    sel_key = f"explore_sel_{slot}_{run.name}"
    rows = rows_to_draw(run, opts, st.session_state.get(f"{sel_key}_rows", []))
    coords_caption(coords, int(run.emb.shape[1]))
    selection = scatter(run, coords, rows, opts, slot)
    st.session_state[f"{sel_key}_rows"] = selection
    selection_details(run, coords.xy, selection, opts.k_nn, download_key=f"explore_dl_{slot}")


def has_trained_embedding(entry: catalog.RunEntry) -> bool:
    """The runs this page opens on by default: a training-free run's features are not an embedding
    trained with a loss, so they show nothing of what the loss and α do."""
    return entry.method not in TRAINING_FREE_METHODS


def render() -> None:
    st.title("Explore embeddings")
    st.caption(
        "L2-softmax puts every feature on a hypersphere of radius α; plain softmax lets easy samples grow "
        "large norms and hard ones stay small. Compare both here."
    )
    entries, errors = catalog.completed_entries()
    for err in errors:
        st.error(f"Run skipped: {err}")
    if not entries:
        st.info(
            f"No completed run in `{catalog.checkpoints_root()}` yet. Train one on the Train page "
            "(or the Quick demo)."
        )
        return
    by_name = {e.run_id: e for e in entries}  # run ids: two runs may share a name
    names = list(by_name)
    with st.sidebar:
        st.header("View")
        compare = st.toggle("Compare two runs side by side", value=False, key="explore_compare")
    pick_cols = st.columns(2 if compare else 1)
    with pick_cols[0]:
        picked = [pick_run(entries, key="explore_run_a", prefer=has_trained_embedding).run_id]
    if compare:
        rest = [n for n in names if n != picked[0]] or names
        picked.append(pick_cols[1].selectbox("Compare with", rest, key="explore_run_b"))
    run_views([by_name[name] for name in picked])


@st.fragment
def run_views(entries: list[catalog.RunEntry]) -> None:
    """The view options and the chosen runs drawn with them: an option's change reruns only this."""
    opts = view_options()
    for col, entry, slot in zip(st.columns(len(entries)), entries, ["a", "b"]):
        with col:
            show_run(entry, opts, slot)


render()
