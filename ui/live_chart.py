"""Plotly charts that redraw in place: for figures that a slider changes on every move.

st.plotly_chart hashes the figure into the element's identity, so every changed figure is a new
element: the browser unmounts the old chart and builds a new one (Plotly.newPlot), and a WebGL
scatter creates its GL contexts again, which dominates a threshold move under software rendering.
These charts live in a Streamlit component whose identity is its key alone: a changed figure reaches
the same iframe, which redraws it with Plotly.react and keeps its GL contexts, zoom and selection.
Several charts share one component, because each iframe parses plotly.js (4.8 MB) once when it opens.

The component page (ui/live_chart_frontend/index.html) loads the plotly.js that ships inside the
plotly package: both are copied into a private temporary folder once per process, because a
component serves only files inside its own folder (symlinks out of it are refused)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from dataclasses import dataclass
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


@dataclass
class LiveFigure:
    """One chart of a `live_charts` group: a plotly figure (or RawFigure) `height` px tall and `width`
    wide (CSS, e.g. "33.3%": charts wrap into rows); with `selectable`, its clicks and box/lasso
    selections are returned."""

    name: str
    figure: Any
    height: int
    width: str = "100%"
    config: dict | None = None
    selectable: bool = False


def live_charts(charts: list[LiveFigure], key: str) -> dict | None:
    """Draw `charts` in one component (plotly.js is parsed once per group, not per chart); a chart
    whose figure did not change since the last run is left as drawn, a changed one is redrawn in place.
    Returns the last click or selection on a selectable chart in st.plotly_chart's event shape
    ({"chart": name, "selection": {"points": [{"customdata": ...}, ...]}}), else None. The key is the
    group's identity: give each run its own, so that a selection made on one run is not read against
    another."""
    args = [
        {
            "name": c.name,
            "spec": plotly.io.to_json(c.figure, validate=False),
            "height": int(c.height),
            "width": c.width,
            "config": c.config or {},
            "selectable": c.selectable,
        }
        for c in charts
    ]
    return _component()(charts=args, key=key, default=None)


def chart_specs(element: Any) -> dict[str, dict]:
    """The figures a live-charts element carries, by chart name (for tests reading AppTest's protos)."""
    return {c["name"]: json.loads(c["spec"]) for c in json.loads(element.proto.json_args)["charts"]}
