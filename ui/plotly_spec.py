"""Plotly figures as plain JSON-able specs (``RawFigure``) and numeric arrays as plotly.js typed
arrays (``arr``): building plotly's validated object model costs 5-30 ms per figure, which a slider
rerun cannot afford. ``RawFigure.validated()`` checks a spec with plotly (tests use it)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import plotly.graph_objects as go

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
]

# st.plotly_chart config of the WebGL figures (scattergl). Streamlit remounts a chart whenever its spec
# changes, so plotly creates its WebGL contexts anew on every widget change; at plotly's default GL
# pixel ratio of 2 they hold four times the pixels of the canvas, which software rendering (no GPU,
# headless Chromium) pays for on every rerun. One GL pixel per CSS pixel halves a redraw there.
GL_CONFIG = {"plotGlPixelRatio": 1}


class RawFigure(go.Figure):
    """A plotly figure given as a plain JSON-able spec, handed to st.plotly_chart as is.

    Plotly's Python object model validates every property on construction and on update_layout
    (5-30 ms per figure); a threshold-slider rerun draws four figures, so the pages build plain
    dicts instead (numeric arrays as plotly.js typed arrays, see `arr`). st.plotly_chart accepts a
    BaseFigure and only calls `to_dict()` on it; tests validate these specs with `validated()`."""

    def __init__(self, data: list[dict], layout: dict | None = None) -> None:  # noqa: D107 - no super()
        self._spec = {"data": data, "layout": layout or {}}

    def to_dict(self) -> dict:
        return self._spec

    def validated(self) -> go.Figure:
        """The same figure through plotly's validation (raises on an invalid property)."""
        return go.Figure(expand(self._spec))


def arr(a: Any, dtype: str = "f4") -> Any:
    """A numeric array as a plotly.js typed array ({dtype, bdata}); lists pass through."""
    if isinstance(a, list):
        return a
    a = np.asarray(a)
    if a.dtype.kind in "iub" and dtype == "f4":
        dtype = "i4"
    a = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "bdata": base64.b64encode(a.tobytes()).decode("ascii")}


def arr2(a: Any, dtype: str = "f4") -> dict:
    """A 2-D numeric array [N, M] as a plotly.js typed array with its shape (e.g. customdata rows)."""
    a = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    spec = {"dtype": dtype, "bdata": base64.b64encode(a.tobytes()).decode("ascii")}
    return {**spec, "shape": f"{a.shape[0]},{a.shape[1]}"}


def expand(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) in ({"dtype", "bdata"}, {"dtype", "bdata", "shape"}):
            flat = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]).newbyteorder("<"))
            if "shape" in v:
                return flat.reshape([int(n) for n in str(v["shape"]).split(",")])
            return flat
        return {k: expand(x) for k, x in v.items()}
    if isinstance(v, list):
        return [expand(x) for x in v]
    return v
