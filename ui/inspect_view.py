"""The Inspect-images panel's drawings: one card per uploaded image (verdict, score, an
out-of-distribution notice, the defect map of patch runs, the nearest normal neighbours) and the
defect map overlays (``defect_map_figure``; the galleries blend theirs with ``ui.gallery.overlay_rgb``)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import streamlit as st
from PIL import Image
from plotly.colors import get_colorscale

from core import views
from core.runs import Run
from ui.gallery import show_gallery, to_display
from ui.plotly_spec import RawFigure

# plotly.js knows no "Inferno" by name (Python plotly does, and would accept it): send the stops
MAP_COLOURSCALE = get_colorscale("Inferno")
MAX_MAP_CELLS = 112  # a finer map only costs bytes: the overlay is ~300 px wide
UPLOAD_PATH = re.compile(r"\S*uploads/[0-9a-f]{16,64}/")  # a stored upload's server folder
OOD_NOTICE = (
    "**Unlike anything this model was trained on:** its score ({score:.4g}) is above that of every "
    "normal training image (at most {top:.4g}). The model has not seen images like this one, so "
    "its neighbours and its verdict say little about it."
)


def user_error(row: dict) -> str:
    """A scoring error as the user should read it: server paths replaced by the upload's own name."""
    text = str(row.get("error") or "cannot be read")
    if row.get("path"):
        text = text.replace(str(row["path"]), row["file"])
    return UPLOAD_PATH.sub("", text)


def mark_out_of_distribution(rows: list[dict], max_train_score: float) -> None:
    """Flag rows scored farther from the normal set than any normal training image."""
    for row in rows:
        score = row.get("score")
        row["out_of_distribution"] = bool(score is not None and score > max_train_score)


def _png_uri(img: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(to_display(img)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def defect_map_figure(image: np.ndarray, heatmap: np.ndarray, size: int = 320) -> RawFigure:
    """The image with its defect map (threshold units: 1 = the threshold) over it and a colour bar."""
    img = to_display(image)
    h, w = img.shape[:2]
    step = max(1, int(np.ceil(max(heatmap.shape) / MAX_MAP_CELLS)))
    cells = np.asarray(heatmap, dtype=np.float64)[::step, ::step]
    mh, mw = cells.shape
    heat = {
        "type": "heatmap",
        "z": np.round(cells[::-1], 4).tolist(),  # image rows run top to bottom, the y axis upwards
        "x0": w / mw / 2,
        "dx": w / mw,
        "y0": h / mh / 2,
        "dy": h / mh,
        "zmin": 0.0,
        "zmax": max(2.0, float(np.nanmax(heatmap))),
        "colorscale": MAP_COLOURSCALE,
        "opacity": 0.55,
        "colorbar": {"title": {"text": "× threshold"}, "thickness": 12},
        "hovertemplate": "%{z:.3g} × threshold<extra></extra>",
    }
    layout = {
        "title": {"text": "Defect map"},
        "height": size,
        "width": size + 90,
        "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
        "xaxis": {"visible": False, "range": [0, w], "constrain": "domain"},
        "yaxis": {"visible": False, "range": [0, h], "scaleanchor": "x"},
        "images": [
            {
                "source": _png_uri(img),
                "xref": "x",
                "yref": "y",
                "x": 0,
                "y": h,
                "sizex": w,
                "sizey": h,
                "sizing": "stretch",
                "layer": "below",
            }
        ],
    }
    return RawFigure([heat], layout)


def _verdict(row: dict, threshold: float) -> str:
    verdict = ":red[**anomaly**]" if row["decision"] == "anomaly" else ":green[**normal**]"
    return f"{verdict} · score **{row['score']:.4g}** (threshold {threshold:.4g})"


def inspected_card(run: Run, row: dict, threshold: float, data: str) -> None:
    """One scored upload: image, verdict, an OOD notice, the defect map, the nearest neighbours."""
    with st.container(border=True):
        a, b = st.columns([1, 5])
        a.image(row["image"], caption=row["file"][:40], width=96, clamp=True)
        b.markdown(_verdict(row, threshold))
        if row.get("out_of_distribution"):
            b.warning(
                OOD_NOTICE.format(score=row["score"], top=row["max_train_score"]), icon=":material/help:"
            )
        heatmap = row.get("heatmap")
        if heatmap is not None:  # in the score's units; the figure draws it in the threshold's
            in_thresholds = np.asarray(heatmap) / threshold if threshold > 0 else np.asarray(heatmap)
            b.plotly_chart(
                defect_map_figure(row["image"], in_thresholds),
                key=f"defect_map::{row.get('sha256', '')}::{row['file']}",
                width="content",
            )
        with b:
            captions = [
                f"{views.class_name(run, r)} · {d:.2g}" for r, d in zip(row["nn_rows"], row["nn_dist"])
            ]
            st.caption("Nearest normal training images (class · distance)")
            show_gallery(run, row["nn_rows"], captions, width=56)
