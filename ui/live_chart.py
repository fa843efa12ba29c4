"""A plotly chart that redraws in place: for figures that a slider changes on every move.

st.plotly_chart hashes the figure into the element's identity, so every changed figure is a new
element: the browser unmounts the old chart and builds a new one (Plotly.newPlot), and a WebGL
scatter creates its GL contexts again, which dominates a threshold move under software rendering.
This chart is a Streamlit component whose identity is its key alone: a changed figure reaches the
same iframe, which redraws it with Plotly.react and keeps its GL contexts, zoom and selection.

The component page (ui/live_chart_frontend/index.html) loads the plotly.js that ships inside the
plotly package: both are copied into a private temporary folder once per process, because a
component serves only files inside its own folder (symlinks out of it are refused)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import plotly
import plotly.io
import streamlit.components.v1 as components

FRONTEND = Path(__file__).with_name("live_chart_frontend") / "index.html"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
NAME = "live_chart"
IFRAME_SELECTOR = 'iframe[title="ui.live_chart.live_chart"]'  # for browser tests and screenshots


@cache
def _component() -> Any:
    # mkdtemp: a folder only this user can write, so nobody can swap the script the browser runs
    folder = Path(tempfile.mkdtemp(prefix="hse-live-chart-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    shutil.copyfile(FRONTEND, folder / "index.html")
    shutil.copyfile(PLOTLY_JS, folder / "plotly.min.js")
    return components.declare_component(NAME, path=str(folder))


def live_chart(
    figure: Any,
    key: str,
    height: int,
    config: dict | None = None,
    selectable: bool = False,
) -> dict | None:
    """Draw `figure` (a plotly figure or RawFigure) `height` px tall; with `selectable`, return the
    last click or box/lasso selection as st.plotly_chart's event does ({"selection": {"points":
    [{"customdata": ...}, ...]}}), else None. The key is the chart's identity: give each run its own
    key, so that a selection made on one run is not read against another."""
    spec = plotly.io.to_json(figure, validate=False)
    return _component()(
        spec=spec,
        height=int(height),
        config=config or {},
        selectable=selectable,
        key=key,
        default=None,
    )


def chart_spec(element: Any) -> dict:
    """The figure a live chart element carries (for tests reading AppTest's element protos)."""
    return json.loads(json.loads(element.proto.json_args)["spec"])
