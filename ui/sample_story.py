"""What is selected on an embedding plot (Explore and Anomaly): one clicked sample's story (its image,
class, split, score and decision at a threshold, and its nearest neighbours as thumbnails and a
table), or a gallery of a box/lasso selection, and the selection as CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from core import views
from core.runs import Run
from core.views import SPLIT_NAMES, class_name
from ui.gallery import show_gallery


def file_name(source: str) -> str:
    """A sample's own file name (an uploaded file), or its bundled id (mnist-5k#12)."""
    return Path(source).name if "/" in source or "\\" in source else source


def one_sample(run: Run, r: int, k_nn: int, threshold: float | None = None) -> None:
    """Row ``r``'s story; its decision at ``threshold`` (default: the run's saved threshold)."""
    score = float(run.score[r])
    threshold = run.threshold if threshold is None else float(threshold)
    decision = "anomaly" if score > threshold else "normal"
    truth = "a held-out class: a true anomaly" if run.anomaly[r] else "a normal class"
    c1, c2 = st.columns([1, 5], vertical_alignment="center")
    with c1:  # an inline image, as in the galleries: no media file that a fragment rerun could drop
        show_gallery(run, [r], [""], width=112)
    c2.markdown(
        f"**{file_name(str(run.source[r]))}** · class **{class_name(run, r)}** ({truth}) · "
        f"{SPLIT_NAMES[int(run.split[r])]} split  \n"
        f"score **{score:.4g}** against the threshold {threshold:.4g} → called **{decision}** · "
        f"‖f‖ = {float(run.norm[r]):.3g}"
    )
    nn, dist = views.nearest_neighbours(run.emb, run.emb[r], k=k_nn, exclude=r)
    st.markdown(f"**Its {len(nn)} nearest neighbours** (cosine distance, nearest first):")
    captions = [
        f"{class_name(run, j)} · {SPLIT_NAMES[int(run.split[j])]} · {d:.3g}" for j, d in zip(nn, dist)
    ]
    show_gallery(run, nn, captions, width=88)
    st.dataframe(
        {
            "class": [class_name(run, j) for j in nn],
            "split": [SPLIT_NAMES[int(run.split[j])] for j in nn],
            "cosine distance": [float(d) for d in dist],
            "score": [float(run.score[j]) for j in nn],
            "file": [file_name(str(run.source[j])) for j in nn],
        },
        hide_index=True,
        column_config={
            "cosine distance": st.column_config.NumberColumn(format="%.4g"),
            "score": st.column_config.NumberColumn(format="%.4g"),
        },
    )


def selection_details(
    run: Run,
    xy: np.ndarray,
    selection: list[int],
    k_nn: int,
    download_key: str,
    threshold: float | None = None,
) -> None:
    """The selected rows of a plot drawn at coordinates ``xy``: one row's story, or a gallery of many,
    and a CSV of them (or, with nothing selected, how to select)."""
    if len(selection) == 1:
        one_sample(run, selection[0], k_nn, threshold)
    elif len(selection) > 1:
        more = " (first 48 shown)" if len(selection) > 48 else ""
        st.markdown(f"**{len(selection)} selected samples**{more}")
        show_gallery(run, selection)
    if not selection:
        st.caption(
            "Click a point for its story and its nearest neighbours; choose the lasso or box in the "
            "plot's toolbar to select many for a gallery and a CSV."
        )
        return
    csv = views.selection_csv(
        selection, run.source, run.label, run.class_names, run.split, run.anomaly, run.norm, run.score, xy
    )
    st.download_button(
        "Download selection as CSV",
        csv,
        file_name=f"{run.name}_selection.csv",
        mime="text/csv",
        key=download_key,
    )
