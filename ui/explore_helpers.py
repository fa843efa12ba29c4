"""Helpers of the Explore and Anomaly pages: cached per-run derivations, plotly figures, thumbnails
and the Inspect-images pipeline (`inspect_uploads`: bytes + file name in, rows out; testable
without a browser). Geometry lives in core/views.py (pure numpy)."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import views
from core.runs import Run, RunError, load_run
from ui import common

MAX_POINTS_DEFAULT = 10_000
SPLIT_NAMES = ["train", "val", "test"]
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


# --------------------------------------------------------------------------- runs


def checkpoints_root() -> Path:
    return common.checkpoints_root()


def uploads_root() -> Path:
    """<data root>/uploads (HSE_DATA_ROOT, as the Train page's uploads)."""
    return common.uploads_root()


def run_mtime(run_dir: str | Path) -> int:
    """Newest mtime of the run's files: the cache key that changes when a file is rewritten."""
    try:
        return max((p.stat().st_mtime_ns for p in Path(run_dir).iterdir() if p.is_file()), default=0)
    except OSError:
        return 0


def list_runs(root: Path | None = None) -> tuple[list[Path], list[str]]:
    """Completed, readable run dirs (newest first) and one error line per unreadable run."""
    from core.runs import list_completed

    return list_completed(root or checkpoints_root())


def try_load(run_dir: str | Path) -> tuple[Run | None, str | None]:
    try:
        return load_run(run_dir), None
    except RunError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - any unreadable run is one line, never a traceback
        return None, f"{Path(run_dir).name}: cannot be read ({e.__class__.__name__})"


def run_label(run: Run) -> str:
    s = run.summary
    alpha = f", α={s['alpha']:.3g}" if s.get("alpha") else ""
    return f"{run.name} — {s.get('loss')}{alpha}, dim {s.get('dim')}, {s.get('data', '')}"


def normal_classes(run: Run) -> list[int]:
    return [int(c) for c in run.summary.get("normal_classes", [])]


# --------------------------------------------------------------------------- thumbnails

_PLACEHOLDER = np.full((28, 28), 128, dtype=np.uint8)


def thumbnail_array(source: str) -> np.ndarray:
    """Display image of a sample (core.data.load_thumbnail); a grey square when it cannot be read."""
    try:
        img = common.source_thumbnail(str(source))
        if img is None or np.asarray(img).size == 0:
            return _PLACEHOLDER
        return common.to_display(np.asarray(img))
    except Exception:  # noqa: BLE001 - a missing file must not break a gallery
        return _PLACEHOLDER


@lru_cache(maxsize=16384)
def thumbnail(source: str) -> bytes:
    """PNG bytes of a sample's thumbnail, encoded once per process (galleries re-render on every
    slider move; re-encoding arrays each time would cost ~1 ms per image)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(thumbnail_array(source)).save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=16384)
def _thumb_uri(source: str) -> str:
    return "data:image/png;base64," + base64.b64encode(thumbnail(source)).decode("ascii")


def gallery_html(uris: list[str], captions: list[str], width: int = 64) -> str:
    cells = "".join(
        f'<figure style="margin:0;width:{width + 8}px;text-align:center">'
        f'<img src="{u}" width="{width}" height="{width}" alt="{html.escape(c)}" '
        'style="image-rendering:pixelated;object-fit:contain;background:#000"/>'
        '<figcaption style="font-size:11px;line-height:1.2;overflow-wrap:anywhere">'
        f"{html.escape(c)}</figcaption>"
        "</figure>"
        for u, c in zip(uris, captions)
    )
    return f'<div style="display:flex;flex-wrap:wrap;gap:6px">{cells}</div>'


def show_gallery(
    run: Run, rows: Any, captions: list[str] | None = None, width: int = 64, max_images: int = 48
) -> None:
    """Thumbnails with captions as one HTML element: PNGs are encoded once per source and cached,
    so a gallery costs well under a millisecond per rerun (st.image re-encodes every image)."""
    rows = [int(r) for r in list(rows)[:max_images]]
    if not rows:
        st.caption("(none)")
        return
    if captions is None:
        captions = [class_name(run, r) for r in rows]
    st.html(gallery_html([_thumb_uri(str(run.source[r])) for r in rows], list(captions[: len(rows)]), width))


def class_name(run: Run, row: int) -> str:
    lab = int(run.label[row])
    return run.class_names[lab] if 0 <= lab < len(run.class_names) else str(lab)


# --------------------------------------------------------------------------- coordinates


@dataclass
class Coords:
    xy: np.ndarray | None  # [N, 2|3] or None when the projection is not available
    radius: float | None  # sphere radius drawn (None: raw plane / projection)
    kind: str  # "sphere", "raw", "pca", "umap", "missing"
    note: str = ""


def run_coords(run: Run, projection: str = "umap", raw: bool | None = None) -> Coords:
    """What the Explore page draws for a run. Never computes UMAP here (numba compile = 40-50 s)."""
    dim = int(run.emb.shape[1])
    if dim <= 3:
        xy, radius = views.display_coords(run.emb, str(run.summary.get("loss")), run.alpha, raw)
        return Coords(xy, radius, "raw" if radius is None else "sphere")
    proj = run.projection
    if projection == "umap_sphere" and projection in proj:
        return Coords(proj[projection], 1.0, projection, "UMAP laid out on the unit sphere (haversine).")
    if projection in proj:
        return Coords(proj[projection], None, projection)
    for other in ("umap", "pca"):
        if other in proj:
            return Coords(
                proj[other], None, other, f"'{projection}' is not available; showing {other.upper()}"
            )
    state = run.status.get("state")
    phase = run.status.get("phase")
    if state == "running" or phase == "projecting":
        return Coords(None, None, "missing", "The projection is being computed by the training job…")
    return Coords(
        None, None, "missing", "No projection is available for this run (trained with projection 'none'?)."
    )


# --------------------------------------------------------------------------- figures


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
        return go.Figure(_expand(self._spec))


_DTYPES = {
    np.dtype("float32"): "f4",
    np.dtype("float64"): "f8",
    np.dtype("int32"): "i4",
    np.dtype("int16"): "i2",
    np.dtype("uint8"): "u1",
    np.dtype("int8"): "i1",
    np.dtype("uint16"): "u2",
    np.dtype("uint32"): "u4",
}


def arr(a: Any, dtype: str = "f4") -> Any:
    """A numeric array as a plotly.js typed array ({dtype, bdata}); lists pass through."""
    if isinstance(a, list):
        return a
    a = np.asarray(a)
    if a.dtype.kind in "iub" and dtype == "f4":
        dtype = "i4"
    a = np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "bdata": base64.b64encode(a.tobytes()).decode("ascii")}


def _expand(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"dtype", "bdata"}:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]).newbyteorder("<"))
        return {k: _expand(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_expand(x) for x in v]
    return v


def _ray_traces(run: Run, length: float, dim: int) -> list[dict]:
    cw = np.asarray(run.class_weights)
    if cw.size == 0 or cw.ndim != 2 or cw.shape[1] != dim or dim > 3:
        return []
    train_classes = run.summary.get("train_classes") or normal_classes(run)
    segs = views.class_rays(cw, length)
    xs: list = []
    ys: list = []
    zs: list = []
    texts: list = []
    for i, seg in enumerate(segs):
        c = int(train_classes[i]) if i < len(train_classes) else i
        name = run.class_names[c] if 0 <= c < len(run.class_names) else str(c)
        xs += [0.0, float(seg[1, 0]), None]
        ys += [0.0, float(seg[1, 1]), None]
        if dim == 3:
            zs += [0.0, float(seg[1, 2]), None]
        texts += ["", f"w[{name}]", ""]
    trace = {
        "x": xs,
        "y": ys,
        "mode": "lines+text",
        "text": texts,
        "name": "class weights",
        "hoverinfo": "skip",
    }
    if dim == 2:
        return [
            {
                **trace,
                "type": "scatter",
                "textposition": "top center",
                "line": {"color": "black", "width": 1.5},
            }
        ]
    return [{**trace, "type": "scatter3d", "z": zs, "line": {"color": "black", "width": 4}}]


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
        return [(name, rows[run.split[rows] == i]) for i, name in enumerate(SPLIT_NAMES)]
    if colour_by == "anomaly":
        return [("normal", rows[~run.anomaly[rows]]), ("anomaly (held out)", rows[run.anomaly[rows]])]
    if colour_by == "decision" and pred is not None:
        return [("called normal", rows[~pred[rows]]), ("called anomaly", rows[pred[rows]])]
    labels = run.label[rows]
    return [
        (run.class_names[c] if c < len(run.class_names) else str(c), rows[labels == c])
        for c in np.unique(labels)
    ]


HOVER = "row %{customdata}<extra>%{fullData.name}</extra>"


def _points(xy: np.ndarray, rows: np.ndarray, name: str, marker: dict) -> dict:
    dim = xy.shape[1]
    t = {
        "type": "scattergl" if dim == 2 else "scatter3d",
        "mode": "markers",
        "name": name,
        "x": arr(xy[rows, 0]),
        "y": arr(xy[rows, 1]),
        "customdata": arr(rows, "i4"),
        "marker": marker,
        "hovertemplate": HOVER,
    }
    if dim == 3:
        t["z"] = arr(xy[rows, 2])
    return t


def scatter_figure(
    run: Run,
    coords: Coords,
    rows: np.ndarray,
    colour_by: str = "class",
    pred: np.ndarray | None = None,
    height: int = 560,
    extra: list | None = None,
) -> RawFigure:
    """WebGL scatter of `rows` (customdata = row index, so selections survive downsampling)."""
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
        traces.append(_points(xy, rows, "samples", marker))
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
            traces.append(_points(xy, r, name, marker))
    if coords.kind in ("sphere", "raw"):
        if coords.radius:
            length = coords.radius * 1.15
        else:
            length = float(np.percentile(np.linalg.norm(xy[rows], axis=1), 95)) * 1.1 if len(rows) else 1.0
        traces += _ray_traces(run, length, dim)
    traces += extra or []
    layout: dict = {
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
        "legend": {"itemsizing": "constant"},
        "uirevision": run.name,
    }
    if dim == 2:
        layout["dragmode"] = "lasso"
        layout["yaxis"] = {"scaleanchor": "x", "scaleratio": 1}
        layout["xaxis"] = {}
        if coords.kind in ("pca", "umap"):
            layout["xaxis"]["title"] = {"text": f"{coords.kind.upper()} 1"}
            layout["yaxis"]["title"] = {"text": f"{coords.kind.upper()} 2"}
    else:
        layout["scene"] = {"aspectmode": "data"}
    return RawFigure(traces, layout)


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


# --------------------------------------------------------------------------- Inspect images


def safe_upload_name(name: str) -> str:
    """A harmless file name: basename only, [A-Za-z0-9._-], at most 100 characters, never empty/dots."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    if len(base) > 100:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[:90] + "." + suffix[:9]) if dot and len(suffix) < 10 else base[:100]
    return base or "upload"


def save_upload(data: bytes, name: str, root: Path | None = None) -> tuple[Path, str]:
    """Write an upload under <root>/<sha256>/<safe name>; never outside root. Returns (path, sha256)."""
    root = Path(root or uploads_root()).resolve()
    sha = hashlib.sha256(data).hexdigest()
    folder = (root / sha).resolve()
    path = (folder / safe_upload_name(name)).resolve()
    if folder.parent != root or path.parent != folder:
        raise ValueError("refused upload path")
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = folder / f".{path.name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path, sha


def inspect_uploads(
    run: Run, files: list[tuple[str, bytes]], threshold: float, root: Path | None = None, k: int | None = None
) -> list[dict]:
    """Score uploaded images against a run. One row per file, in order:
    {file, sha256, path, score, decision, threshold, nn_rows, nn_dist, nn_source, embedding, image,
    coords, error}.
    A file that cannot be used gets score None, decision "error" and a one-line `error`."""
    from core.runs import embed_images, score_embeddings

    size = int(run.summary.get("image_size") or run.config.get("image_size") or 28)
    channels = int(run.summary.get("channels") or 1)
    rows: list[dict] = []
    good: list[int] = []
    images = []
    for name, data in files:
        row: dict = {
            "file": str(name),
            "sha256": "",
            "score": None,
            "decision": "error",
            "threshold": threshold,
            "error": None,
        }
        rows.append(row)
        try:
            if not data:
                raise ValueError("empty file (0 bytes)")
            path, sha = save_upload(data, name, root)
            row.update(path=str(path), sha256=sha)
            from core.ingest import load_image

            img = load_image(path, size, channels)
        except Exception as e:  # noqa: BLE001 - IngestError and anything else: one line, no traceback
            row["error"] = _one_line(e)
            continue
        images.append(img)
        good.append(len(rows) - 1)
    if not images:
        return rows
    try:
        emb = embed_images(run.run_dir, np.stack(images))
        scores, nn_rows, nn_dist = score_embeddings(run, emb, k)
    except Exception as e:  # noqa: BLE001 - e.g. model.pt missing or unreadable
        msg = f"cannot score with run {run.name}: {_one_line(e)}"
        for i in good:
            rows[i]["error"] = msg
        return rows
    coords = star_coords(run, emb)
    for j, i in enumerate(good):
        img = images[j]
        rows[i].update(
            score=float(scores[j]),
            decision="anomaly" if scores[j] > threshold else "normal",
            nn_rows=[int(r) for r in nn_rows[j]],
            nn_dist=[float(d) for d in nn_dist[j]],
            nn_source=[str(run.source[r]) for r in nn_rows[j]],
            embedding=emb[j],
            image=(np.clip(img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0], 0, 1) * 255).astype(
                np.uint8
            ),
            coords=None if coords is None else coords[j],
        )
    return rows


def star_coords(run: Run, emb: np.ndarray, projection: str = "umap") -> np.ndarray | None:
    """Where new embeddings land on the run's view (the Anomaly page's map): direct on the hypersphere
    for dim <= 3, kNN-weighted placement on the 2-D projection otherwise (approximate)."""
    if run.emb.shape[1] <= 3:
        xy, _ = views.display_coords(emb, str(run.summary.get("loss")), run.alpha, raw=False)
        return xy
    c = run_coords(run, projection)
    if c.xy is None:
        return None
    return views.place_in_projection(emb, run.emb, c.xy)


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return msg[:300]


# --------------------------------------------------------------------------- Anomaly page base


@lru_cache(maxsize=8)  # not st.cache_resource: its lookup alone costs ms per rerun
def anomaly_base(run_dir: str, mtime: int, max_points: int = 4000) -> dict:  # noqa: ARG001 - mtime is the key
    """Everything on the Anomaly page that does not depend on the threshold, computed once per run
    version: test scores/labels, histogram bins, thinned ROC/PR curves, suggestions, score-sorted
    FP/FN candidates and the hypersphere geometry. Shared (not copied) between reruns: read only."""
    from core import anomaly

    run = load_run(run_dir)
    test = np.flatnonzero(run.split == 2)
    s_test = run.score[test].astype(np.float64)
    finite = np.isfinite(s_test)
    test, s_test = test[finite], s_test[finite]
    y_test = run.anomaly[test].astype(bool)
    normal_cls = normal_classes(run)
    val_normal = (run.split == 1) & np.isin(run.label, normal_cls) & np.isfinite(run.score)
    ref_scores = run.score[val_normal] if val_normal.any() else run.score[run.normal_train_mask]
    ref_scores = ref_scores[np.isfinite(ref_scores)]
    # kNN cosine scores span decades (1e-6 for a dense 2-D circle, 0.5 for a far anomaly): the
    # threshold slider and the histogram work on log10(score)
    pooled = np.concatenate([s_test, ref_scores, [run.threshold]])
    pos = pooled[pooled > 0]
    lo = float(np.floor(np.log10(max(float(pos.min()) if len(pos) else 1e-6, 1e-7)) * 10) / 10)
    hi = float(np.ceil(np.log10(min(max(float(pooled.max()), 1e-6), 2.0)) * 10) / 10)
    hi = max(hi, lo + 0.1)
    bins = np.logspace(lo, hi, 61)
    curves = anomaly.roc_pr(s_test, y_test)
    base: dict = {
        "test": test,
        "s_test": s_test,
        "y_test": y_test,
        "bins": bins,
        "log_lo": lo,
        "log_hi": hi,
        "h_normal": views.histogram(np.clip(s_test[~y_test], bins[0], bins[-1]), bins),
        "h_anom": views.histogram(np.clip(s_test[y_test], bins[0], bins[-1]), bins),
        "has_labels": bool(curves),
        "suggest": anomaly.suggest_thresholds(ref_scores if len(ref_scores) else s_test, s_test, y_test)
        if len(s_test)
        else {},
    }
    if curves:
        base["auroc"], base["aupr"] = curves["auroc"], curves["aupr"]
        base["roc"] = views.thin_curve(curves["fpr"], curves["tpr"])
        base["pr"] = views.thin_curve(curves["recall"], curves["precision"])
    # false positives: normal test rows, highest score first; false negatives: anomalies, lowest first
    nrm, anm = test[~y_test], test[y_test]
    base["fp_order"] = nrm[np.argsort(-run.score[nrm], kind="stable")]
    base["fn_order"] = anm[np.argsort(run.score[anm], kind="stable")]
    dim = int(run.emb.shape[1])
    base["dim"] = dim
    if dim <= 3:
        xy, radius = views.display_coords(run.emb, str(run.summary.get("loss")), run.alpha, raw=False)
        base["coords"] = Coords(xy, radius, "sphere")
        ref = run.emb[run.normal_train_mask]
        base["directions"] = views.class_mean_directions(ref, run.label[run.normal_train_mask], normal_cls)
        if dim == 2 and len(ref):
            base["grid"] = views.circle_grid_scores(ref, k=int(run.summary.get("k", 5)))
    else:
        base["coords"] = run_coords(run)
    base["map_rows"] = test[views.downsample_indices(len(test), max_points, seed=0, strata=run.label[test])]
    return base


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
