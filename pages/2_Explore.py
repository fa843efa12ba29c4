"""Explore: a run's embedding on the hypersphere (dim 2/3), or its UMAP/PCA projection (dim > 3)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import views
from ui import explore_helpers as h
from ui.password_gate import require_password

st.set_page_config(page_title="Explore · Hypersphere Explorer", layout="wide")
require_password()  # HSE_PASSWORD: nothing below is shown until it is given
st.title("Explore embeddings")
st.caption(
    "L2-softmax puts every feature on a hypersphere of radius α; plain softmax lets easy samples grow "
    "large norms and hard ones stay small. Compare both here."
)

runs, errors = h.list_runs()
for err in errors:
    st.error(f"Run skipped: {err}")
if not runs:
    st.info(
        f"No completed run in `{h.checkpoints_root()}` yet. Train one on the Train page (or the Quick demo)."
    )
    st.stop()

names = [r.name for r in runs]
by_name = dict(zip(names, runs))

with st.sidebar:
    st.header("View")
    compare = st.toggle("Compare two runs side by side", value=False, key="explore_compare")
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
        format_func=lambda p: {"umap_sphere": "UMAP on a sphere"}.get(p, p.upper()),
        help="Computed by the training job; never in the page.",
    )
    raw = st.toggle(
        "Raw features (dim 2/3)",
        value=False,
        key="explore_raw",
        help="Draw pre-normalisation features instead of the hypersphere (always on for softmax).",
    )
    max_points = st.select_slider(
        "Max points drawn",
        options=[1000, 2000, 5000, 10_000, 20_000, 50_000],
        value=h.MAX_POINTS_DEFAULT,
        key="explore_max_points",
    )
    splits = st.multiselect("Splits", h.SPLIT_NAMES, default=h.SPLIT_NAMES, key="explore_splits")
    k_nn = st.slider("Neighbours listed for a clicked sample", 1, 20, 8, key="explore_knn")

default_a = names[0]
pick_cols = st.columns(2 if compare else 1)
picked = [pick_cols[0].selectbox("Run", names, index=names.index(default_a), key="explore_run_a")]
if compare:
    rest = [n for n in names if n != picked[0]] or names
    picked.append(pick_cols[1].selectbox("Compare with", rest, key="explore_run_b"))


def show_run(name: str, slot: str) -> None:
    run, err = h.try_load(by_name[name])
    if run is None:
        st.error(err)
        return
    s = run.summary
    st.subheader(h.run_label(run))
    m = st.columns(4)
    m[0].metric("test accuracy", f"{s.get('test_accuracy') or 0:.3f}")
    m[1].metric("AUROC", "—" if s.get("anomaly_auroc") is None else f"{s['anomaly_auroc']:.3f}")
    m[2].metric("mean ‖f‖", f"{s.get('mean_feature_norm') or float(np.mean(run.norm)):.2f}")
    m[3].metric("α", "—" if not s.get("alpha") else f"{s['alpha']:.2f}")

    loss = str(s.get("loss"))
    dim = int(run.emb.shape[1])
    coords = h.run_coords(run, projection, raw=True if (raw or loss == "softmax") else None)
    if coords.note:
        (st.warning if coords.xy is None else st.caption)(coords.note)
    if coords.xy is None:
        with st.spinner("Waiting for the projection…"):
            pass
        return

    split_ids = [h.SPLIT_NAMES.index(x) for x in splits] or [0, 1, 2]
    candidates = np.flatnonzero(np.isin(run.split, split_ids))
    sel_key = f"explore_sel_{slot}_{run.name}"
    keep = st.session_state.get(f"{sel_key}_rows", [])
    idx = views.downsample_indices(len(candidates), max_points, seed=0, strata=run.label[candidates])
    rows = np.union1d(candidates[idx], np.intersect1d(keep, candidates)).astype(np.int64)
    if len(rows) < len(candidates):
        st.info(
            f"Showing {len(rows):,} of {len(candidates):,} points (stratified by class; raise "
            "'Max points drawn' in the sidebar to see more)."
        )
    if dim == 2 and coords.kind == "sphere":
        st.caption(
            f"Points at α·f/‖f‖ on the circle of radius {coords.radius:.3g}; "
            "rays are class weight directions."
        )
    elif dim == 2 and coords.kind == "raw":
        st.caption("Raw feature plane: the distance from the origin is the feature norm ‖f‖.")
    elif coords.kind in ("umap", "pca"):
        st.caption(f"{coords.kind.upper()} of the unit-normalised {dim}-D embeddings.")
    elif coords.kind == "umap_sphere":
        st.caption(f"UMAP of the unit-normalised {dim}-D embeddings, laid out on a sphere (haversine).")

    fig = h.scatter_figure(run, coords, rows, colour_by)
    if coords.xy.shape[1] == 3:
        st.plotly_chart(fig, key=f"explore_fig_{slot}", width="stretch")
        st.caption("Drag to rotate. Box/lasso selection works on 2-D views.")
        selection: list[int] = []
    else:
        event = st.plotly_chart(
            fig,
            key=f"explore_fig_{slot}",
            on_select="rerun",
            selection_mode=("points", "box", "lasso"),
            width="stretch",
        )
        selection = h.selected_rows(event)
    st.session_state[f"{sel_key}_rows"] = selection

    if len(selection) == 1:
        r = selection[0]
        st.markdown(
            f"**Sample {r}** · class `{h.class_name(run, r)}` · split {h.SPLIT_NAMES[int(run.split[r])]} · "
            f"‖f‖ = {float(run.norm[r]):.3f} · score {float(run.score[r]):.3g}"
        )
        nn, dist = views.nearest_neighbours(run.emb, run.emb[r], k=k_nn, exclude=r)
        st.image([h.thumbnail(str(run.source[r]))], caption=["selected"], width=96, clamp=True)
        st.markdown(f"{len(nn)} nearest neighbours (cosine distance):")
        h.show_gallery(run, nn, [f"{h.class_name(run, j)} · {d:.2g}" for j, d in zip(nn, dist)], width=72)
        st.dataframe(
            {
                "row": nn,
                "class": [h.class_name(run, j) for j in nn],
                "cosine distance": [float(f"{d:.3g}") for d in dist],
                "source": [str(run.source[j]) for j in nn],
            },
            hide_index=True,
        )
    elif len(selection) > 1:
        st.markdown(
            f"**{len(selection)} selected samples**" + (" (first 48 shown)" if len(selection) > 48 else "")
        )
        h.show_gallery(run, selection)
    if selection:
        csv = views.selection_csv(
            selection,
            run.source,
            run.label,
            run.class_names,
            run.split,
            run.anomaly,
            run.norm,
            run.score,
            coords.xy,
        )
        st.download_button(
            "Download selection as CSV",
            csv,
            file_name=f"{run.name}_selection.csv",
            mime="text/csv",
            key=f"explore_dl_{slot}",
        )
    else:
        st.caption("Click a point for its nearest neighbours; box/lasso select for a gallery and a CSV.")

    with st.expander("Feature norms: easy samples grow large norms under softmax", expanded=(slot == "a")):
        norm_view(run, slot)


def norm_view(run, slot: str) -> None:
    train_like = np.ones(len(run.norm), dtype=bool)
    bins = np.linspace(0.0, float(np.nanmax(run.norm)) * 1.02 + 1e-9, 61)
    centres = (bins[:-1] + bins[1:]) / 2
    traces = []
    for i, c in enumerate(np.unique(run.label)):
        counts = views.histogram(run.norm[run.label == c], bins)
        name = run.class_names[c] if c < len(run.class_names) else str(c)
        traces.append(
            {
                "type": "bar",
                "x": h.arr(centres),
                "y": h.arr(counts),
                "name": name,
                "opacity": 0.6,
                "marker": {"color": h.PALETTE[i % len(h.PALETTE)]},
            }
        )
    fig = h.RawFigure(
        traces,
        {
            "barmode": "overlay",
            "bargap": 0,
            "height": 300,
            "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
            "xaxis": {"title": {"text": "pre-normalisation feature norm ‖f‖"}},
            "yaxis": {"title": {"text": "samples"}},
        },
    )
    st.plotly_chart(fig, key=f"explore_norm_{slot}", width="stretch")
    low, high = views.norm_extremes(run.norm, 16, mask=train_like)
    c1, c2 = st.columns(2)
    with c1:
        st.markdown("**16 lowest norms** (hard / ambiguous)")
        h.show_gallery(run, low, [f"{h.class_name(run, r)} · {run.norm[r]:.2f}" for r in low], width=56)
    with c2:
        st.markdown("**16 highest norms** (easy)")
        h.show_gallery(run, high, [f"{h.class_name(run, r)} · {run.norm[r]:.2f}" for r in high], width=56)


cols = st.columns(len(picked))
for col, name, slot in zip(cols, picked, ["a", "b"]):
    with col:
        show_run(name, slot)
