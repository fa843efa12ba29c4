"""The Anomaly page's charts, as plain figure specs (``RawFigure``: plotly's object model would cost
more than a slider rerun's whole budget): the score histogram with the threshold, ROC and PR curves
with the operating point, and the uploaded images as stars on the map."""

from __future__ import annotations

import numpy as np

from ui.plotly_spec import RawFigure, arr

NORMAL_COLOUR = "#4c78a8"
ANOMALY_COLOUR = "#e45756"
CHART_HEIGHT = 320
LAYOUT = {
    "height": CHART_HEIGHT,
    # Room for the tick labels, the axis titles and the legend below from the first draw: plotly
    # draws a figure twice when its margins have to grow, and a slider move redraws three
    # of them (in place: ui.live_chart).
    "margin": {"l": 76, "r": 18, "t": 40, "b": 125},
    "legend": {"orientation": "h", "y": -0.3},
}
OPERATING_POINT = {
    "mode": "markers",
    "type": "scatter",
    "name": "operating point",
    "marker": {"size": 12, "color": "black", "symbol": "x"},
}


def _axes(title: str, x: str, y: str, **xaxis: object) -> dict:
    return {
        **LAYOUT,
        "title": {"text": title},
        "xaxis": {"title": {"text": x}, **xaxis},
        "yaxis": {"title": {"text": y}},
    }


def _step(x: object, y: np.ndarray, name: str, colour: str) -> dict:
    return {
        "type": "scatter",
        "x": x,
        "y": arr(np.repeat(y, 2)),
        "name": name,
        "mode": "lines",
        "fill": "tozeroy",
        "line": {"color": colour, "width": 1},
    }


def histogram_figure(base: dict, threshold: float) -> RawFigure:
    """Test scores of normal and anomalous samples (log x) and the threshold as a dashed line."""
    step_x = arr(np.repeat(base["bins"], 2)[1:-1])
    ymax = float(max(base["h_normal"].max(initial=0), base["h_anom"].max(initial=0), 1))
    return RawFigure(
        [
            _step(step_x, base["h_normal"], "normal", NORMAL_COLOUR),
            {**_step(step_x, base["h_anom"], "anomalous", ANOMALY_COLOUR), "opacity": 0.7},
            {
                "type": "scatter",
                "x": [threshold, threshold],
                "y": [0, ymax * 1.05],
                "mode": "lines",
                "name": f"t = {threshold:.3g}",
                "line": {"color": "black", "width": 2, "dash": "dash"},
            },
        ],
        _axes("Test scores", "score", "images", type="log"),
    )


def _curve_figure(xy: tuple, name: str, point: tuple[float, float], axes: tuple[str, str, str]) -> RawFigure:
    """A curve (ROC or PR) with the current threshold's operating point on it."""
    curve = {"type": "scatter", "x": arr(xy[0]), "y": arr(xy[1]), "mode": "lines", "name": name}
    marker = {**OPERATING_POINT, "x": [point[0]], "y": [point[1]]}
    return RawFigure([curve, marker], _axes(*axes))


def roc_figure(base: dict, metrics: dict) -> RawFigure:
    return _curve_figure(
        base["roc"],
        f"ROC (AUROC {base['auroc']:.3f})",
        (metrics["fpr"], metrics["recall"]),
        ("ROC", "false positive rate", "true positive rate"),
    )


def pr_figure(base: dict, metrics: dict) -> RawFigure:
    return _curve_figure(
        base["pr"],
        f"PR (AUPR {base['aupr']:.3f})",
        (metrics["recall"], metrics["precision"]),
        ("Precision–recall", "recall", "precision"),
    )


def star_traces(inspected: list[dict]) -> list[dict]:
    """The scored uploads as gold stars (2-D) or diamonds (3-D) where they land on the map."""
    stars = [r for r in inspected if r.get("coords") is not None]
    if not stars:
        return []
    xy = np.stack([r["coords"] for r in stars])
    flat = xy.shape[1] == 2
    star = {
        "type": "scatter" if flat else "scatter3d",
        "mode": "markers+text",
        "name": "uploaded",
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
        "text": [r["file"][:20] for r in stars],
        "hovertext": [f"{r['file']} · {r['score']:.3g} · {r['decision']}" for r in stars],
        "marker": {
            "symbol": "star" if flat else "diamond",
            "size": 18 if flat else 8,
            "color": "gold",
            "line": {"color": "black", "width": 1},
        },
    }
    if not flat:
        star["z"] = xy[:, 2].tolist()
    return [star]
