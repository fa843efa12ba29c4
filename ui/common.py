"""Shared Streamlit helpers for app.py and pages/*.py (``core`` never imports streamlit; this does).

Stable API (other pages import these; keep signatures backwards compatible):

Paths
- ``checkpoints_root() -> Path``: run root (env ``HSE_CHECKPOINTS`` or ``<repo>/checkpoints``), read per call.
- ``data_root() -> Path``: env ``HSE_DATA_ROOT`` or ``<repo>/data``.
- ``uploads_root() -> Path``: ``data_root()/uploads``; every upload lives in ``uploads/<content-hash>/``.
- ``full_mnist_present(root=None) -> bool``: torchvision MNIST files under ``<data root>/MNIST/raw``.

Formatting
- ``one_line(exc) -> str``: the first line of an exception message, for ``st.error``.
- ``fmt_duration(seconds) -> str`` ("1:05", "2:03:04"), ``fmt_time(ts) -> str`` (local "YYYY-MM-DD HH:MM").
- ``STATE_COLORS``, ``state_badge(state)`` (draws ``st.badge``), ``state_label(state) -> str``
  (plain text: emoji fonts are often missing).

Runs
- ``RunInfo`` (run_id, run_dir, status, config, summary, error) and ``read_run_info(status_row, root)``.
- ``list_run_infos(root=None) -> list[RunInfo]``: every run, newest first; a malformed run has ``.error``.
- ``runs_dataframe(infos) -> pandas.DataFrame``: the runs table (name, loss, alpha, dim, data, state,
  accuracy, AUROC, created, run_id) and ``RUNS_COLUMN_CONFIG`` for ``st.dataframe``.
- ``run_picker(label, key, root=None, multiple=False, max_selections=2, help=None) -> list[Path]``:
  select completed runs (``core.runs.list_completed``); malformed runs are listed as ``st.error`` lines.
  Always returns a list (empty when nothing to pick), one element unless ``multiple``.
- ``metrics_figure(rows) -> plotly Figure``: loss and accuracy curves from ``core.runs.metrics``.
- ``log_tail(run_dir, lines=20) -> str``.
- ``draw_run_progress(run, root, key)``: one run's progress bar + ETA, live curves, Cancel button;
  for failed runs the reason and the log tail.
- ``run_monitor(root=None, key="monitor", run_ids=None, interval=2.0, on_idle=None)``: a fragment that
  polls the run files every ``interval`` s while any watched run is queued/running, and stops polling
  (full rerun) when none is. ``run_ids=None`` watches the whole queue.
- ``draw_queue(root=None, key="queue")``: the queue (``core.jobs.queue``) as a table with Cancel buttons.

Images
- ``to_display(img) -> np.ndarray uint8 [H,W] | [H,W,3]`` from float [C,S,S]/[S,S,C] in [0,1] or uint8.
- ``thumbnails_grid(images, captions=None, width=72)``.
- ``source_thumbnail(source, data_root=None) -> np.ndarray | None``: ``core.data.load_thumbnail``;
  never raises.

Uploads (Train page; testable without a browser)
- ``ingest_upload(files: list[(name, bytes)], class_name: str | None, root=None) -> Path``: one zip
  (class folders or MVTec) or several images of one typed-in class, saved under
  ``uploads/<content-hash>/`` via ``core.ingest``; raises ``core.ingest.IngestError`` (one line).
- ``UploadPreview`` and ``preview_folder(root) -> UploadPreview``: layout, class counts, per-class
  sample paths, skipped files with reasons.
- ``draw_upload_preview(preview)``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LIVE_STATES = ("queued", "running")
STATE_COLORS = {
    "queued": "gray",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "orange",
}


# ------------------------------------------------------------------------------------------- paths


def checkpoints_root() -> Path:
    from core.jobs import default_root

    return Path(default_root())


def data_root() -> Path:
    return Path(os.environ.get("HSE_DATA_ROOT") or PROJECT_ROOT / "data")


def uploads_root() -> Path:
    return data_root() / "uploads"


def full_mnist_present(root: str | Path | None = None) -> bool:
    """True when torchvision's MNIST files are under ``<root>/MNIST/raw`` (no download is tried)."""
    raw = Path(root or data_root()) / "MNIST" / "raw"
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    return all((raw / n).is_file() for n in names)


# -------------------------------------------------------------------------------------- formatting


def one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not np.isfinite(seconds) or seconds < 0:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(float(ts)))


def state_label(state: str | None) -> str:
    return str(state or "unknown")


def state_badge(state: str | None) -> None:
    state = state or "unknown"
    st.badge(state, icon=None, color=STATE_COLORS.get(state, "gray"))


# -------------------------------------------------------------------------------------------- runs


@dataclass
class RunInfo:
    run_id: str
    run_dir: Path
    status: dict
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def state(self) -> str:
        return str(self.status.get("state") or "unknown")

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_id)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def _read_obj(path: Path, what: str) -> dict:
    from core.fsutil import read_json

    try:
        obj = read_json(path)
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path.parent.name}: {what} is malformed ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path.parent.name}: {what} is not a JSON object")
    return obj


def read_run_info(status_row: dict, root: str | Path | None = None) -> RunInfo:
    """Config and summary of one run (a row of ``core.jobs.list_runs``); errors land in ``.error``."""
    root = Path(root or checkpoints_root())
    run_id = str(status_row["run_id"])
    info = RunInfo(run_id=run_id, run_dir=root / run_id, status=dict(status_row))
    errors = []
    for attr, fname in (("config", "config.json"), ("summary", "summary.json")):
        try:
            setattr(info, attr, _read_obj(info.run_dir / fname, fname))
        except ValueError as e:
            errors.append(one_line(e))
    if info.state == "completed" and not info.summary and not errors:
        errors.append(f"{run_id}: summary.json is missing")
    if str(status_row.get("reason", "")).startswith("status.json is malformed"):
        errors.append(f"{run_id}: {status_row['reason']}")
    info.error = "; ".join(errors) or None
    return info


def list_run_infos(root: str | Path | None = None) -> list[RunInfo]:
    from core import jobs

    root = Path(root or checkpoints_root())
    return [read_run_info(row, root) for row in jobs.list_runs(root)]


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _data_label(data: Any) -> str:
    data = str(data or "")
    if not data:
        return ""
    p = Path(data)
    if p.is_absolute() and "uploads" in p.parts:
        return f"upload {p.name[:8]}"
    return p.name if p.is_absolute() else data


def _alpha_label(info: RunInfo) -> str:
    loss = info.summary.get("loss") or info.config.get("loss")
    if loss != "l2softmax":
        return "–"
    a = _num(info.summary.get("alpha"))
    if a is not None:
        return f"{a:.2f}"
    cfg = info.config.get("alpha")
    num = _num(cfg)
    return f"{num:.2f}" if num is not None else str(cfg) if cfg is not None else "?"


RUNS_COLUMN_CONFIG = {
    "accuracy": st.column_config.NumberColumn("accuracy", format="%.3f"),
    "AUROC": st.column_config.NumberColumn("AUROC", format="%.3f"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm"),
}


def runs_dataframe(infos: Sequence[RunInfo]):
    import pandas as pd

    rows = []
    for i in infos:
        created = i.status.get("created") or i.status.get("started")
        rows.append(
            {
                "name": i.name,
                "loss": i.summary.get("loss") or i.config.get("loss") or "",
                "alpha": _alpha_label(i),
                "dim": i.summary.get("dim") or i.config.get("dim"),
                "data": _data_label(i.summary.get("data") or i.config.get("data")),
                "state": state_label(
                    i.state if not i.error else "failed" if i.state == "completed" else i.state
                ),
                "accuracy": _num(i.summary.get("test_accuracy")),
                "AUROC": _num(i.summary.get("anomaly_auroc")),
                "created": (
                    pd.to_datetime(created, unit="s", utc=True).tz_convert(None) if _num(created) else None
                ),
                "run_id": i.run_id,
            }
        )
    cols = ["name", "loss", "alpha", "dim", "data", "state", "accuracy", "AUROC", "created", "run_id"]
    df = pd.DataFrame(rows, columns=cols)
    df["dim"] = df["dim"].astype("Int64") if len(df) else df["dim"]
    return df


def run_picker(
    label: str,
    key: str,
    root: str | Path | None = None,
    multiple: bool = False,
    max_selections: int = 2,
    help: str | None = None,  # noqa: A002 - mirrors Streamlit's parameter name
) -> list[Path]:
    """Pick completed run(s). Malformed runs show one ``st.error`` line each; returns [] if none."""
    from core.runs import list_completed

    root = Path(root or checkpoints_root())
    dirs, errors = list_completed(root)
    for err in errors:
        st.error(one_line(err))
    if not dirs:
        st.info("No completed run yet: train one on the Train page, or press Quick demo on Home.")
        return []
    by_name = {d.name: d for d in dirs}
    names = list(by_name)
    if multiple:
        chosen = st.multiselect(
            label, names, default=names[:1], key=key, max_selections=max_selections, help=help
        )
        return [by_name[n] for n in chosen]
    chosen = st.selectbox(label, names, key=key, help=help)
    return [by_name[chosen]] if chosen else []


def metrics_figure(rows: Sequence[dict], height: int = 300):
    """Loss (per step) and accuracy (train batch per step, validation per epoch) side by side."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = [r for r in rows if r.get("event") == "step"]
    epochs = [r for r in rows if r.get("event") == "epoch"]
    if len(steps) > 2000:  # keep the live view light: every n-th step
        stride = int(np.ceil(len(steps) / 2000))
        steps = steps[::stride] + steps[-1:]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08)
    x = [r.get("step") for r in steps]
    few = len(steps) < 30  # a line through one or two points is invisible: show markers too
    mode = "lines+markers" if few else "lines"
    fig.add_trace(
        go.Scatter(x=x, y=[r.get("loss") for r in steps], mode=mode, name="train loss", line={"width": 1.5}),
        row=1,
        col=1,
    )
    acc = [r.get("accuracy") for r in steps]
    if any(a is not None for a in acc):
        fig.add_trace(
            go.Scatter(x=x, y=acc, mode=mode, name="train batch acc", line={"width": 1}, opacity=0.6),
            row=1,
            col=2,
        )
    if epochs:
        fig.add_trace(
            go.Scatter(
                x=[r.get("step") for r in epochs],
                y=[r.get("val_accuracy") for r in epochs],
                mode="lines+markers",
                name="val acc (epoch)",
                marker={"size": 8},
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(range=[0, 1.02], row=1, col=2)
    fig.update_layout(
        height=height,
        margin={"l": 40, "r": 10, "t": 30, "b": 70},
        legend={"orientation": "h", "y": -0.38, "x": 0.0},
    )
    return fig


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    path = Path(run_dir) / "log.txt"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64_000))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log.txt)"
    return "\n".join(data.splitlines()[-lines:]) or "(log.txt is empty)"


def _progress_text(run: dict) -> str:
    state = run.get("state")
    if state == "queued":
        pos = f" (#{run['position']} in the queue)" if run.get("position") else ""
        return f"queued{pos}, waiting for a free slot"
    p = float(run.get("progress") or 0.0)
    phase = run.get("phase") or state
    eta = run.get("eta_s")
    parts = [str(phase), f"{p:.0%}"]
    if run.get("epoch"):
        parts.append(f"epoch {run['epoch']}")
    if state == "running" and phase == "training" and eta is not None:
        parts.append(f"ETA {fmt_duration(eta)}")
    return " · ".join(parts)


def draw_run_progress(
    run: dict, root: str | Path | None = None, key: str = "run", curves: bool = True
) -> None:
    """One run (a row of ``core.jobs.list_runs`` / ``queue``): progress, curves, Cancel; failure details."""
    from core import jobs
    from core.runs import metrics

    root = Path(root or checkpoints_root())
    run_id = run["run_id"]
    state = run.get("state")
    with st.container(border=True):
        head, btn = st.columns([6, 1], vertical_alignment="center")
        with head:
            name = run.get("name") or run_id
            st.markdown(f"**{name}** &nbsp; `{run_id}`" if name != run_id else f"`{run_id}`")
        if state in LIVE_STATES:
            with btn:
                if st.button("Cancel", key=f"{key}-cancel-{run_id}", help="Stop this run (SIGTERM)"):
                    try:
                        jobs.cancel(run_id, root)
                    except (KeyError, ValueError, OSError) as e:
                        st.error(one_line(e))
                    st.rerun()
        else:
            with btn:
                state_badge(state)
        progress = min(max(float(run.get("progress") or 0.0), 0.0), 1.0)
        if state in LIVE_STATES or state == "completed":
            st.progress(1.0 if state == "completed" else progress, text=_progress_text(run))
        if state == "failed":
            st.error(f"failed: {one_line(run.get('reason') or 'unknown reason')}")
            with st.expander("last lines of log.txt", expanded=True):
                st.code(log_tail(root / run_id), language="text")
        elif state == "cancelled":
            st.warning(one_line(run.get("reason") or "cancelled"))
        elif state == "completed":
            try:
                summ = _read_obj(root / run_id / "summary.json", "summary.json")
            except ValueError as e:
                st.error(one_line(e))
                summ = {}
            facts = [
                f"{label} {_num(summ.get(k)):{fmt}}"
                for k, label, fmt in (
                    ("test_accuracy", "test accuracy", ".3f"),
                    ("anomaly_auroc", "anomaly AUROC", ".3f"),
                    ("alpha", "α", ".2f"),
                )
                if _num(summ.get(k)) is not None
            ]
            if facts:
                st.caption(" · ".join(facts))
        if curves and state != "queued":
            rows = metrics(root / run_id)
            if rows:
                st.plotly_chart(
                    metrics_figure(rows, height=260),
                    key=f"{key}-curves-{run_id}",
                    config={"displayModeBar": False},
                )


def _with_names(rows: list[dict], root: Path) -> list[dict]:
    out = []
    for r in rows:
        try:
            cfg = _read_obj(root / r["run_id"] / "config.json", "config.json")
        except ValueError:
            cfg = {}
        out.append({**r, "name": cfg.get("name") or r["run_id"]})
    return out


def run_monitor(
    root: str | Path | None = None,
    key: str = "monitor",
    run_ids: Sequence[str] | None = None,
    interval: float = 2.0,
    on_idle: Callable[[list[dict]], None] | None = None,
    curves: bool = True,
) -> list[dict]:
    """Draw the watched runs and poll their files while any of them is queued or running.

    ``run_ids=None`` watches the live queue; otherwise exactly those runs (finished ones included).
    ``on_idle(rows)`` is called inside the fragment once none of the watched runs is live. Returns the
    rows drawn by the first (full-page) pass."""
    from core import jobs

    root = Path(root or checkpoints_root())

    def watched() -> list[dict]:
        if run_ids is None:
            rows = [{**r, "position": i} for i, r in enumerate(jobs.queue(root), 1)]
        else:
            rows = []
            for rid in run_ids:
                try:
                    rows.append(jobs.status(rid, root))
                except (KeyError, ValueError):
                    continue
        return _with_names(rows, root)

    first = watched()
    live_at_start = any(r.get("state") in LIVE_STATES for r in first)

    @st.fragment(run_every=interval if live_at_start else None)
    def _panel() -> None:
        rows = watched()
        for r in rows:
            draw_run_progress(r, root, key=key, curves=curves)
        live = any(r.get("state") in LIVE_STATES for r in rows)
        if live_at_start and not live:
            st.rerun()  # full rerun: redraw once more without run_every, i.e. stop polling
        if not live and on_idle is not None:
            on_idle(rows)

    _panel()
    return first


def draw_queue(root: str | Path | None = None, key: str = "queue") -> list[dict]:
    """The live queue in training order, with a Cancel button per run."""
    from core import jobs

    root = Path(root or checkpoints_root())
    rows = _with_names(jobs.queue(root), root)
    if not rows:
        st.caption("The queue is empty.")
        return rows
    for pos, r in enumerate(rows, 1):
        c1, c2, c3, c4 = st.columns([0.5, 5, 2, 1], vertical_alignment="center")
        c1.write(f"#{pos}")
        c2.markdown(f"**{r['name']}** `{r['run_id']}`")
        c3.write(state_label(r.get("state")))
        if c4.button("Cancel", key=f"{key}-cancel-{r['run_id']}"):
            try:
                jobs.cancel(r["run_id"], root)
            except (KeyError, ValueError, OSError) as e:
                st.error(one_line(e))
            st.rerun()
    return rows


# ------------------------------------------------------------------------------------------ images


def to_display(img: np.ndarray) -> np.ndarray:
    """uint8 [H,W] or [H,W,3] from float [C,S,S] / [S,S,C] / [S,S] in [0,1], or uint8."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.transpose(a, (1, 2, 0))
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return a


def thumbnails_grid(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, width: int = 72
) -> None:
    if len(images) == 0:
        st.caption("(no images)")
        return
    st.image(
        [to_display(i) for i in images],
        caption=list(captions) if captions is not None else None,
        width=width,
        clamp=True,
    )


def source_thumbnail(source: str, data_root_: str | Path | None = None) -> np.ndarray | None:
    try:
        from core.data import load_thumbnail

        return load_thumbnail(str(source), data_root=str(data_root_ or data_root()))
    except Exception:  # noqa: BLE001 - a missing thumbnail must not break a page
        return None


# ----------------------------------------------------------------------------------------- uploads

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")


def _safe_component(name: str, what: str) -> str:
    base = Path(name.replace("\\", "/")).name
    clean = _SAFE_NAME.sub("_", base).strip(" .")[:120]
    if not clean:
        from core.ingest import IngestError

        raise IngestError(f"unusable {what}: {name!r}")
    return clean


def ingest_upload(
    files: Sequence[tuple[str, bytes]], class_name: str | None = None, root: str | Path | None = None
) -> Path:
    """Store an upload under ``<root>/<content-hash>/`` (root: ``uploads_root()``) and return the folder.

    One ``.zip`` (class folders or MVTec layout) goes through ``core.ingest.safe_extract_zip``;
    several images are written to ``<hash>/<class_name>/``. Raises ``IngestError`` (one line)."""
    from core.ingest import IngestError, is_image_name, safe_extract_zip

    root = Path(root or uploads_root())
    files = [(str(n), bytes(b)) for n, b in files]
    if not files:
        raise IngestError("nothing uploaded")
    zips = [f for f in files if f[0].lower().endswith(".zip")]
    if zips:
        if len(files) != 1:
            raise IngestError("upload one .zip at a time, or images without a zip")
        name, data = zips[0]
        if not data:
            raise IngestError(f"{_safe_component(name, 'file name')} is empty (0 bytes)")
        digest = hashlib.sha256(data).hexdigest()[:16]
        if (root / digest).is_dir():
            return root / digest
        incoming = root / ".incoming"
        incoming.mkdir(parents=True, exist_ok=True)
        tmp = incoming / f"{digest}-{uuid.uuid4().hex[:8]}.zip"
        try:
            tmp.write_bytes(data)
            return safe_extract_zip(tmp, root)
        finally:
            tmp.unlink(missing_ok=True)
    bad = [n for n, _ in files if not is_image_name(Path(n.replace("\\", "/")).name)]
    if bad:
        raise IngestError(f"not an image or zip: {bad[0]!r} (upload .png/.jpg/... images or one .zip)")
    if not class_name or not class_name.strip():
        raise IngestError("type a class name for the uploaded images")
    cls = _safe_component(class_name.strip(), "class name")
    h = hashlib.sha256(cls.encode())
    for n, b in sorted(files):
        h.update(n.encode("utf-8", "surrogateescape") + b"\0" + hashlib.sha256(b).digest())
    target = root / h.hexdigest()[:16]
    if target.is_dir():
        return target
    tmp = root / f".partial-{target.name}-{uuid.uuid4().hex[:8]}"
    (tmp / cls).mkdir(parents=True)
    try:
        used: set[str] = set()
        for n, b in files:
            fname = _safe_component(n, "file name")
            stem, ext = os.path.splitext(fname)
            i = 1
            while fname in used:
                fname, i = f"{stem}-{i}{ext}", i + 1
            used.add(fname)
            (tmp / cls / fname).write_bytes(b)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


@dataclass
class UploadPreview:
    root: Path  # the folder to train on (``TrainConfig.data``)
    layout: str  # "imagefolder" | "mvtec"
    counts: dict[str, int]  # group ("<class>" or "train/good", "test/<defect>") -> usable images
    samples: dict[str, list[str]]  # group -> a few image paths
    skipped: list[tuple[str, str]]  # (path relative to root, reason)
    class_names: list[str]  # classes a holdout can be chosen from (imagefolder), [] for mvtec


def _data_folder(root: Path) -> Path:
    """Descend through a single wrapping folder (``myset/<class>/...`` zipped with its parent)."""
    from core.ingest import detect_layout, list_image_files, list_subdirs

    cur = root
    for _ in range(3):
        if detect_layout(cur) == "mvtec":
            return cur
        subs = list_subdirs(cur)
        if len(subs) == 1 and not list_image_files(cur, recursive=False) and list_subdirs(subs[0]):
            cur = subs[0]
            continue
        return cur
    return cur


def preview_folder(root: str | Path, per_class: int = 8) -> UploadPreview:
    """Scan an uploaded folder (header checks and decoding at a small size) for the preview."""
    from core.ingest import detect_layout, mvtec_categories, scan_image_folder

    root = _data_folder(Path(root))
    counts: dict[str, int] = {}
    samples: dict[str, list[str]] = {}
    skipped: list[tuple[str, str]] = []

    def add(scan: Any, prefix: str) -> None:
        for path, label in zip(scan.paths, scan.labels):
            group = f"{prefix}{label}"
            counts[group] = counts.get(group, 0) + 1
            if len(samples.setdefault(group, [])) < per_class:
                samples[group].append(path)
        skipped.extend(scan.skipped)

    layout = detect_layout(root)
    if layout == "mvtec":
        cats = mvtec_categories(root)
        for cat in cats:
            prefix = f"{cat.name}/" if len(cats) > 1 or cat != root else ""
            add(scan_image_folder(cat / "train", size=16), f"{prefix}train/")
            if (cat / "test").is_dir():
                add(scan_image_folder(cat / "test", size=16), f"{prefix}test/")
        class_names: list[str] = []
    else:
        scan = scan_image_folder(root, size=16)
        add(scan, "")
        class_names = list(scan.class_names)

    def rel(p: str) -> str:
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return Path(p).name

    return UploadPreview(
        root=root,
        layout=layout,
        counts=counts,
        samples=samples,
        skipped=[(rel(p), r) for p, r in skipped],
        class_names=class_names,
    )


def draw_upload_preview(preview: UploadPreview) -> None:
    import pandas as pd

    kind = (
        "MVTec-AD layout (train/good = normal, test/<defect> = anomalies)"
        if preview.layout == "mvtec"
        else "one folder per class"
    )
    st.markdown(f"**{sum(preview.counts.values())} images**, {kind}.")
    st.dataframe(
        pd.DataFrame({"class": list(preview.counts), "images": list(preview.counts.values())}),
        hide_index=True,
        width="content",
    )
    from core.ingest import IngestError, load_thumbnail_image

    for group, paths in preview.samples.items():
        thumbs, caps = [], []
        for p in paths:
            try:
                thumbs.append(load_thumbnail_image(p, max_side=96))
                caps.append(Path(p).name[:16])
            except IngestError:
                continue
        st.caption(f"{group} ({preview.counts.get(group, 0)})")
        thumbnails_grid(thumbs, caps, width=72)
    if preview.skipped:
        with st.expander(f"{len(preview.skipped)} file(s) skipped", expanded=len(preview.skipped) <= 20):
            st.dataframe(pd.DataFrame(preview.skipped, columns=["file", "reason"]), hide_index=True)
