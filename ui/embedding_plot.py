"""The embedding scatter of a run (Explore, Anomaly, Compare): WebGL points coloured by class,
split, anomaly flag, decision or norm, on the circle/sphere of radius alpha with the class-weight
rays, and the Anomaly page's normal-region overlay."""

from __future__ import annotations

from typing import Any

import numpy as np

from core import views
from core.data import REF_PREFIX
from core.runs import Run
from core.views import SPLIT_NAMES, Coords
from ui.plotly_spec import PALETTE, RawFigure, arr

LABEL_ROOM = 1.15  # how far beyond a ray's tip the axes reach, so that its label fits


def _label_position(x: float, y: float) -> str:
    """Text beside a ray's tip, on the side away from the centre (never across the ray)."""
    vertical = "top" if y > abs(x) * 0.3 else ("bottom" if y < -abs(x) * 0.3 else "middle")
    horizontal = "right" if x > abs(y) * 0.3 else ("left" if x < -abs(y) * 0.3 else "center")
    if vertical == "middle" and horizontal == "center":
        return "top center"
    return f"{vertical} {horizontal}"


def _ray_tips(run: Run, length: float) -> list[tuple[str, list[float]]]:
    """(class name, tip coordinates) of every class-weight ray."""
    train_classes = run.summary.get("train_classes") or views.normal_classes(run)
    tips = []
    for i, seg in enumerate(views.class_rays(np.asarray(run.class_weights), length)):
        c = int(train_classes[i]) if i < len(train_classes) else i
        name = run.class_names[c] if 0 <= c < len(run.class_names) else str(c)
        tips.append((str(name), [float(v) for v in seg[1]]))
    return tips


def _tip_coords(tips: list[tuple[str, list[float]]], dim: int) -> dict[str, list[float]]:
    """The tips as plotly's x, y (and z) lists."""
    return {axis: [end[i] for _, end in tips] for i, axis in enumerate("xyz"[:dim])}


def _ray_lines(tips: list[tuple[str, list[float]]], dim: int, name: str, group: str, colour: str) -> dict:
    line: dict[str, list] = {"x": [], "y": [], "z": []}
    for _, end in tips:
        for axis, v in zip("xyz", end):
            line[axis] += [0.0, v, None]
    trace = {"name": name, "hoverinfo": "skip", "legendgroup": group, "mode": "lines"}
    if dim == 2:
        return {
            **trace,
            "type": "scatter",
            "x": line["x"],
            "y": line["y"],
            "line": {"color": colour, "width": 1.5},
        }
    return {**trace, "type": "scatter3d", **line, "line": {"color": colour, "width": 4}}


def _ray_traces(run: Run, length: float, dim: int) -> list[dict]:
    """One line per class-weight direction and a label at every tip (drawn outside the axes' clip,
    so a ray at the edge of the plot keeps its label). The reference classes added to a one-class
    upload get grey rays named on hover only: ten labels crowd the circle and hide the user's own."""
    cw = np.asarray(run.class_weights)
    if cw.size == 0 or cw.ndim != 2 or cw.shape[1] != dim or dim > 3:
        return []
    tips = _ray_tips(run, length)
    own = [t for t in tips if not t[0].startswith(REF_PREFIX)]
    reference = [t for t in tips if t[0].startswith(REF_PREFIX)]
    traces = [_ray_lines(own, dim, "class weights", "rays", "black")] if own else []
    coords = _tip_coords(own, dim)
    text = [f"w[{name}]" for name, _ in own]
    if own and dim == 2:
        # a selection dims every trace's unselected points: the labels stay black
        keep = {"textfont": {"color": "black"}}
        labels = {"name": "class weights", "type": "scatter", "mode": "text", "showlegend": False}
        labels.update(hoverinfo="skip", legendgroup="rays", cliponaxis=False, **coords, text=text)
        labels.update(textfont={"color": "black"}, selected=keep, unselected=keep)
        labels["textposition"] = [_label_position(x, y) for x, y in zip(coords["x"], coords["y"])]
        # invisible points beyond the tips: the axes' autorange leaves room for the labels' text
        room = {"type": "scatter", "mode": "markers", "showlegend": False, "hoverinfo": "skip"}
        room.update(marker={"opacity": 0}, x=[v * LABEL_ROOM for v in coords["x"]])
        room.update(y=[v * LABEL_ROOM for v in coords["y"]], name="class weights")
        traces += [labels, room]
    elif own:
        labels = {"name": "class weights", "type": "scatter3d", "mode": "text", "showlegend": False}
        traces.append({**labels, "hoverinfo": "skip", **coords, "text": text})
    if reference:
        traces += _reference_rays(reference, dim)
    return traces


def _reference_rays(tips: list[tuple[str, list[float]]], dim: int) -> list[dict]:
    """Grey rays of the reference classes, and a marker at each tip that names it on hover."""
    name = "reference classes (hover a tip)"
    coords = _tip_coords(tips, dim)
    marks = {"name": name, "legendgroup": "reference rays", "showlegend": False, "mode": "markers", **coords}
    marks.update(type="scatter" if dim == 2 else "scatter3d", hoverinfo="text")
    marks.update(text=[f"w[{n}]" for n, _ in tips], marker={"color": "#999999", "size": 5})
    return [_ray_lines(tips, dim, name, "reference rays", "#aaaaaa"), marks]


def circle_trace(radius: float) -> dict:
    t = np.linspace(0, 2 * np.pi, 361)
    return {
        "type": "scatter",
        "x": arr(radius * np.cos(t)),
        "y": arr(radius * np.sin(t)),
        "mode": "lines",
        "name": f"circle r={radius:.3g}",
        "line": {"color": "grey", "width": 1, "dash": "dot"},
        "hoverinfo": "skip",
    }


def sphere_surface(radius: float, n: int = 40) -> dict:
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, n), np.linspace(0, np.pi, n // 2))
    return {
        "type": "surface",
        "x": (radius * np.cos(u) * np.sin(v)).round(4).tolist(),
        "y": (radius * np.sin(u) * np.sin(v)).round(4).tolist(),
        "z": (radius * np.cos(v)).round(4).tolist(),
        "opacity": 0.15,
        "showscale": False,
        "colorscale": [[0, "#9ecae1"], [1, "#9ecae1"]],
        "hoverinfo": "skip",
        "name": "sphere",
    }


def colour_groups(
    run: Run, colour_by: str, rows: np.ndarray, pred: np.ndarray | None = None
) -> list[tuple[str, np.ndarray]]:
    """(legend name, rows) per discrete colour group."""
    if colour_by == "split":
        return [(name, rows[run.split[rows] == code]) for code, name in SPLIT_NAMES.items()]
    if colour_by == "anomaly":
        return [("normal", rows[~run.anomaly[rows]]), ("anomaly (held out)", rows[run.anomaly[rows]])]
    if colour_by == "decision" and pred is not None:
        return [("called normal", rows[~pred[rows]]), ("called anomaly", rows[pred[rows]])]
    labels = run.label[rows]
    return [
        (run.class_names[c] if c < len(run.class_names) else str(c), rows[labels == c])
        for c in np.unique(labels)
    ]


HOVER = "%{text}<extra></extra>"


def hover_texts(run: Run, rows: np.ndarray) -> list[str]:
    """ "class 3 · test · score 0.0123" for each row (the continuous-colour view's hover)."""
    names = list(run.class_names)
    splits = [SPLIT_NAMES.get(sp, str(sp)) for sp in run.split[rows].tolist()]
    scores = run.score[rows].tolist()
    out = []
    for lab, sp, sc in zip(run.label[rows].tolist(), splits, scores):
        cls = names[lab] if 0 <= lab < len(names) else str(lab)
        out.append(f"class {cls} · {sp} · score {sc:.3g}")
    return out


def _points(xy: np.ndarray, rows: np.ndarray, name: str, marker: dict, run: Run | None = None) -> dict:
    dim = xy.shape[1]
    t = {
        "type": "scattergl" if dim == 2 else "scatter3d",
        "mode": "markers",
        "name": name,
        "x": arr(xy[rows, 0]),
        "y": arr(xy[rows, 1]),
        "customdata": arr(rows, "i4"),
        "marker": marker,
    }
    if run is not None:
        t["text"] = hover_texts(run, rows)
        t["hovertemplate"] = HOVER
    if dim == 3:
        t["z"] = arr(xy[rows, 2])
    return t


def _hover_split_points(run: Run, xy: np.ndarray, rows: np.ndarray, name: str, marker: dict) -> list[dict]:
    """One colour group drawn as one trace per (class, split), all under the group's legend entry:
    each trace's hover template names its class and split, and each point carries only its score
    as text (customdata stays the row index, which selections read): half the bytes of a full
    per-point hover text, which the browser parses on every rerun."""
    traces = []
    names = list(run.class_names)
    for lab in np.unique(run.label[rows]).tolist():
        for code, split in SPLIT_NAMES.items():
            r = rows[(run.label[rows] == lab) & (run.split[rows] == code)]
            if len(r) == 0:
                continue
            t = _points(xy, r, name, marker)
            t["text"] = [f"{v:.3g}" for v in run.score[r].tolist()]
            cls = names[lab] if 0 <= lab < len(names) else str(lab)
            t["hovertemplate"] = f"class {cls} · {split} · score %{{text}}<extra></extra>"
            t.update(legendgroup=name, showlegend=not traces)
            traces.append(t)
    return traces


def scatter_figure(
    run: Run,
    coords: Coords,
    rows: np.ndarray,
    colour_by: str = "class",
    pred: np.ndarray | None = None,
    height: int = 560,
    extra: list | None = None,
    dragmode: str | None = "lasso",
) -> RawFigure:
    """WebGL scatter of `rows` (customdata = row index, so selections survive downsampling).

    ``dragmode=None`` leaves dragging to Streamlit (pan), which makes a click select a point: with
    "lasso" or "select" Streamlit sets plotly's clickmode to "event" and a click selects nothing."""
    xy = coords.xy
    dim = xy.shape[1]
    rows = np.asarray(rows, dtype=np.int64)
    traces: list[dict] = []
    size = 4 if dim == 2 else 2.5
    if coords.radius:
        traces.append(sphere_surface(coords.radius) if dim == 3 else circle_trace(coords.radius))
    if colour_by == "norm":
        marker = {
            "size": size,
            "color": arr(run.norm[rows]),
            "colorscale": "Viridis",
            "showscale": True,
            "colorbar": {"title": {"text": "‖f‖"}},
        }
        traces.append(_points(xy, rows, "samples", marker, run))
    else:
        for i, (name, r) in enumerate(colour_groups(run, colour_by, rows, pred)):
            if len(r) == 0:
                continue
            colour = (
                ["#4c78a8", "#e45756"][i]
                if colour_by in ("anomaly", "decision")
                else PALETTE[i % len(PALETTE)]
            )
            marker = {"size": size, "color": colour}
            if dim == 2:
                marker["opacity"] = 0.8
            traces += _hover_split_points(run, xy, r, name, marker)
    if coords.kind in ("sphere", "raw"):
        if coords.radius:
            length = coords.radius * 1.15
        else:
            length = float(np.percentile(np.linalg.norm(xy[rows], axis=1), 95)) * 1.1 if len(rows) else 1.0
        traces += _ray_traces(run, length, dim)
    traces += extra or []
    layout: dict = {
        "height": height,
        "margin": first_draw_margins(traces, titled=coords.kind in ("pca", "umap")),
        "legend": {"itemsizing": "constant"},
        "uirevision": run.name,
    }
    if dim == 2:
        if dragmode:
            layout["dragmode"] = dragmode
        layout["yaxis"] = {"scaleanchor": "x", "scaleratio": 1}
        layout["xaxis"] = {}
        if coords.kind in ("pca", "umap"):
            layout["xaxis"]["title"] = {"text": f"{coords.kind.upper()} 1"}
            layout["yaxis"]["title"] = {"text": f"{coords.kind.upper()} 2"}
    else:
        layout["scene"] = {"aspectmode": "data"}
    return RawFigure(traces, layout)


def first_draw_margins(traces: list[dict], titled: bool) -> dict:
    """Margins that already hold the legend (at the right) and the tick labels. Plotly grows a
    margin that something pushes past, and then draws the whole figure a second time, which a
    redraw of 10,000 WebGL points cannot afford; a legend name longer than this guess still fits
    (at that cost)."""
    names = [str(t.get("name", "")) for t in traces if t.get("showlegend", True) and t.get("name")]
    right = 70 + 5 * max((len(n) for n in names), default=0)
    if any(t.get("marker", {}).get("showscale") for t in traces):
        right += 80  # the colour bar stands between the plot and the legend
    low = 60 if titled else 40
    return {"l": low, "r": right, "t": 30, "b": low}


def selected_rows(event: Any) -> list[int]:
    """Row indices from a st.plotly_chart selection event (customdata carries the row)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError, AttributeError):
        return []
    rows = []
    for p in points or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is None:
            continue
        try:
            rows.append(int(cd))
        except (TypeError, ValueError):
            continue
    return sorted(set(rows))


def decision_region_traces(base: dict, threshold: float) -> list[dict]:
    """Normal region at `threshold` on the 2-D circle (exact on a 0.5° grid) or the 3-D sphere
    (caps around normal class mean directions: approximate, see core/views.py)."""
    coords = base["coords"]
    radius = coords.radius or 1.0
    xs: list = []
    ys: list = []
    if base["dim"] == 2 and "grid" in base:
        angles, gs = base["grid"]
        for a0, a1 in views.region_intervals(angles, gs, threshold):
            t = np.linspace(a0, a1, max(2, int((a1 - a0) / 0.01)))
            xs += (radius * 1.04 * np.cos(t)).round(5).tolist() + [None]
            ys += (radius * 1.04 * np.sin(t)).round(5).tolist() + [None]
        return [
            {
                "type": "scatter",
                "x": xs or [None],
                "y": ys or [None],
                "mode": "lines",
                "name": "normal region (score ≤ t)",
                "line": {"color": "#2ca02c", "width": 6},
                "hoverinfo": "skip",
            }
        ]
    if base["dim"] == 3:
        angle = views.cap_angle(threshold)
        zs: list = []
        for d in base["directions"].values():
            ring = views.cap_circle_3d(d, angle, radius * 1.01, n=72).round(5)
            xs += ring[:, 0].tolist() + [None]
            ys += ring[:, 1].tolist() + [None]
            zs += ring[:, 2].tolist() + [None]
        return [
            {
                "type": "scatter3d",
                "x": xs or [None],
                "y": ys or [None],
                "z": zs or [None],
                "mode": "lines",
                "name": "normal caps (approx.)",
                "line": {"color": "#2ca02c", "width": 5},
                "hoverinfo": "skip",
            }
        ]
    return []


def embedding_figure(
    run: Run, title: str, max_points: int = 1500, height: int = 330
) -> tuple[RawFigure | None, str]:
    """A small embedding figure for the grid: the circle of radius alpha (2-D L2-softmax), the raw plane
    (softmax), the sphere (3-D), or the run's stored UMAP/PCA (dim > 3; never computed here). The same
    seed picks the same stratified sample in every run. Returns (figure | None, note)."""
    coords = views.run_coords(run, "umap")
    if coords.xy is None:
        return None, coords.note or "no 2-D view stored for this run"
    rows = views.downsample_indices(len(run.label), max_points, seed=0, strata=run.label)
    fig = scatter_figure(run, coords, rows, colour_by="class", height=height)
    layout = fig.to_dict()["layout"]
    layout.update(
        showlegend=False,
        dragmode="pan",
        title={"text": title, "x": 0.02, "font": {"size": 13}},
        margin={"l": 10, "r": 10, "t": 35, "b": 10},
    )
    dim = coords.xy.shape[1]
    if coords.kind == "sphere":
        shape = "circle" if dim == 2 else "sphere"
        note = f"{shape} of radius {coords.radius:.3g}" if coords.radius else shape
    else:
        note = {
            "raw": "raw features (no normalisation)" + ("" if dim == 2 else ", 3-D"),
            "pca": "PCA of the directions",
            "umap": "UMAP of the directions (seed shared by all runs)",
        }.get(coords.kind, coords.kind)
    if coords.kind == "pca" and "umap" in coords.note.lower():
        return fig, note + " (no UMAP stored for this run)"
    return fig, (note + (f" · {coords.note}" if coords.note else ""))


def class_legend(run: Run) -> list[tuple[str, str]]:
    """(class name, colour) in the order the small multiples colour them."""
    labels = np.unique(run.label)
    return [
        (run.class_names[c] if c < len(run.class_names) else str(c), PALETTE[i % len(PALETTE)])
        for i, c in enumerate(labels)
    ]
