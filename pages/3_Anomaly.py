"""Anomaly: kNN cosine scores of the test split, a threshold, and what it gets right and wrong.

Moving the threshold never recomputes an embedding: everything comes from the run's stored `score`
array, and what does not depend on the threshold is cached per run version (ui.explore_helpers)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import anomaly, views
from core.runs import save_threshold
from ui import explore_helpers as h
from ui.password_gate import require_password

st.set_page_config(page_title="Anomaly · Hypersphere Explorer", layout="wide")
require_password()  # HSE_PASSWORD: nothing below is shown until it is given
st.title("Anomaly detection")
st.caption(
    "Score = mean cosine distance to the k nearest normal training embeddings; a score above the "
    "threshold is called an anomaly. Normal = training classes; anomalies = held-out classes or defects."
)

runs, errors = h.list_runs()
for err in errors:
    st.error(f"Run skipped: {err}")
if not runs:
    st.info(f"No completed run in `{h.checkpoints_root()}` yet. Train one on the Train page.")
    st.stop()

names = [r.name for r in runs]
name = st.selectbox("Run", names, key="anomaly_run")
run_dir = dict(zip(names, runs))[name]
run, err = h.try_load(run_dir)
if run is None:
    st.error(err)
    st.stop()
try:
    base = h.anomaly_base(str(run.run_dir.resolve()), h.run_mtime(run.run_dir))
except Exception as e:  # noqa: BLE001 - a run that loads but cannot be scored is one line
    st.error(f"{run.name}: cannot show anomaly scores ({h._one_line(e)})")
    st.stop()
if len(base["s_test"]) == 0:
    st.warning(f"{run.name}: the test split has no scored samples.")
    st.stop()

st.markdown(f"**{h.run_label(run)}**")
top = st.columns(4)
top[0].metric("AUROC", f"{base['auroc']:.3f}" if base["has_labels"] else "—")
top[1].metric("AUPR", f"{base['aupr']:.3f}" if base["has_labels"] else "—")
top[2].metric("normal test samples", f"{int((~base['y_test']).sum()):,}")
top[3].metric("anomalous test samples", f"{int(base['y_test'].sum()):,}")
if not base["has_labels"]:
    st.info(
        "This run has no labelled anomalies in its test split: ROC/PR need both; the p95/p99 "
        "suggestions still work."
    )

# ---------------------------------------------------------------- threshold
thr_key = f"anomaly_thr::{run.name}"  # holds log10(threshold): scores span decades
lo, hi = base["log_lo"], base["log_hi"]


def _to_log(t: float) -> float:
    return float(np.clip(round(float(np.log10(max(t, 1e-12))), 3), lo, hi))


if thr_key not in st.session_state:
    st.session_state[thr_key] = _to_log(run.threshold)


def _set_threshold(value: float) -> None:
    st.session_state[thr_key] = _to_log(value)


log_t = st.slider(
    "Threshold, log₁₀ scale (score > threshold ⇒ anomaly)",
    min_value=lo,
    max_value=hi,
    step=0.001,
    format="%.3f",
    key=thr_key,
)
threshold = float(10.0**log_t)
st.markdown(f"Threshold **t = {threshold:.4g}**")
labels = {
    "p95": "p95 of normal val",
    "p99": "p99 of normal val",
    "best_f1": "best F1",
    "youden": "Youden's J",
}
bcols = st.columns(len(labels) + 1)
for col, (key, label) in zip(bcols, labels.items()):
    value = base["suggest"].get(key)
    col.button(
        f"{label}" + ("" if value is None else f" = {value:.3g}"),
        key=f"anomaly_suggest_{key}",
        disabled=value is None,
        on_click=_set_threshold,
        args=(value or 0.0,),
        width="stretch",
    )
if bcols[-1].button("Save threshold with run", key="anomaly_save", width="stretch"):
    try:
        save_threshold(run.run_dir, threshold, source="anomaly page")
        st.success(f"Saved threshold {threshold:.4g} to {run.name}/threshold.json; `core.score` now uses it.")
    except OSError as e:
        st.error(f"Could not save the threshold: {h._one_line(e)}")
saved = run.threshold
st.caption(f"Threshold used by `core.score` for this run: {saved:.4g}")

# ---------------------------------------------------------------- metrics at the threshold
m = anomaly.decision_metrics(base["s_test"], base["y_test"], threshold)
c = st.columns(8)
c[0].metric("TP", m["tp"], help="anomalies called anomalous")
c[1].metric("FP", m["fp"], help="false alarms: normal samples called anomalous")
c[2].metric("TN", m["tn"], help="normal samples called normal")
c[3].metric("FN", m["fn"], help="missed anomalies: called normal")
c[4].metric("precision", f"{m['precision']:.3f}")
c[5].metric("recall", f"{m['recall']:.3f}")
c[6].metric("F1", f"{m['f1']:.3f}")
c[7].metric("FPR", f"{m['fpr']:.3f}")
st.markdown(
    "| | called normal | called anomaly |\n|---|---:|---:|\n"
    f"| **normal** (test) | {m['tn']} | {m['fp']} |\n| **anomalous** (test) | {m['fn']} | {m['tp']} |"
)

# ---------------------------------------------------------------- charts
# plain figure specs (h.RawFigure): plotly's object model would cost more than the whole budget
LAYOUT = {
    "height": 320,
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "y": -0.3},
}


def _axes(title: str, x: str, y: str, **xaxis) -> dict:
    return {
        **LAYOUT,
        "title": {"text": title},
        "xaxis": {"title": {"text": x}, **xaxis},
        "yaxis": {"title": {"text": y}},
    }


step_x = h.arr(np.repeat(base["bins"], 2)[1:-1])
ymax = float(max(base["h_normal"].max(initial=0), base["h_anom"].max(initial=0), 1))
hist = h.RawFigure(
    [
        {
            "type": "scatter",
            "x": step_x,
            "y": h.arr(np.repeat(base["h_normal"], 2)),
            "name": "normal",
            "mode": "lines",
            "fill": "tozeroy",
            "line": {"color": "#4c78a8", "width": 1},
        },
        {
            "type": "scatter",
            "x": step_x,
            "y": h.arr(np.repeat(base["h_anom"], 2)),
            "name": "anomalous",
            "mode": "lines",
            "fill": "tozeroy",
            "line": {"color": "#e45756", "width": 1},
            "opacity": 0.7,
        },
        {
            "type": "scatter",
            "x": [threshold, threshold],
            "y": [0, ymax * 1.05],
            "mode": "lines",
            "name": f"t = {threshold:.3g}",
            "line": {"color": "black", "width": 2, "dash": "dash"},
        },
    ],
    _axes("Test scores", "score (log scale)", "samples", type="log"),
)
charts = st.columns(3)
charts[0].plotly_chart(hist, key="anomaly_hist", width="stretch")
if base["has_labels"]:
    point = {
        "mode": "markers",
        "type": "scatter",
        "name": "operating point",
        "marker": {"size": 12, "color": "black", "symbol": "x"},
    }
    fpr_c, tpr_c = base["roc"]
    roc = h.RawFigure(
        [
            {
                "type": "scatter",
                "x": h.arr(fpr_c),
                "y": h.arr(tpr_c),
                "mode": "lines",
                "name": f"ROC (AUROC {base['auroc']:.3f})",
            },
            {**point, "x": [m["fpr"]], "y": [m["recall"]]},
        ],
        _axes("ROC", "false positive rate", "true positive rate"),
    )
    rec_c, prec_c = base["pr"]
    pr = h.RawFigure(
        [
            {
                "type": "scatter",
                "x": h.arr(rec_c),
                "y": h.arr(prec_c),
                "mode": "lines",
                "name": f"PR (AUPR {base['aupr']:.3f})",
            },
            {**point, "x": [m["recall"]], "y": [m["precision"]]},
        ],
        _axes("Precision–recall", "recall", "precision"),
    )
    charts[1].plotly_chart(roc, key="anomaly_roc", width="stretch")
    charts[2].plotly_chart(pr, key="anomaly_pr", width="stretch")

# ---------------------------------------------------------------- galleries
GALLERY = 12
fp_rows = base["fp_order"][: int(m["fp"])][:GALLERY]  # sorted desc by score: the first fp rows are > t
fn_rows = base["fn_order"][: int(m["fn"])][:GALLERY]  # sorted asc: the first fn rows are <= t
g1, g2 = st.columns(2)
with g1:
    st.markdown(f"**False positives** ({m['fp']}): normal samples called anomalous, highest score first")
    h.show_gallery(run, fp_rows, [f"{h.class_name(run, r)} · {run.score[r]:.2g}" for r in fp_rows], width=64)
with g2:
    st.markdown(f"**False negatives** ({m['fn']}): anomalies called normal, lowest score first")
    h.show_gallery(run, fn_rows, [f"{h.class_name(run, r)} · {run.score[r]:.2g}" for r in fn_rows], width=64)

# ---------------------------------------------------------------- inspect images (results kept across reruns)
st.subheader("Inspect images")
uploads = st.file_uploader(
    "Upload images to score against this run", accept_multiple_files=True, key=f"anomaly_upload::{run.name}"
)
cache = st.session_state.setdefault("anomaly_inspect_cache", {})
inspected: list[dict] = []
if uploads:
    cache_key = (run.name, h.run_mtime(run.run_dir), tuple(getattr(u, "file_id", u.name) for u in uploads))
    if cache_key not in cache:
        with st.spinner(f"Embedding {len(uploads)} image(s)…"):
            cache.clear()
            cache[cache_key] = h.inspect_uploads(run, [(u.name, u.getvalue()) for u in uploads], threshold)
    inspected = cache[cache_key]
    for row in inspected:  # the decision follows the slider without re-embedding
        if row["score"] is not None:
            row["threshold"] = threshold
            row["decision"] = "anomaly" if row["score"] > threshold else "normal"

# ---------------------------------------------------------------- the map
coords = base["coords"]
star_traces = []
stars = [r for r in inspected if r.get("coords") is not None]
if stars and coords.xy is not None:
    xy = np.stack([r["coords"] for r in stars])
    text = [f"{r['file']} · {r['score']:.3g} · {r['decision']}" for r in stars]
    flat = xy.shape[1] == 2
    star = {
        "type": "scatter" if flat else "scatter3d",
        "mode": "markers+text",
        "name": "uploaded",
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
        "text": [r["file"][:20] for r in stars],
        "hovertext": text,
        "marker": {
            "symbol": "star" if flat else "diamond",
            "size": 18 if flat else 8,
            "color": "gold",
            "line": {"color": "black", "width": 1},
        },
    }
    if not flat:
        star["z"] = xy[:, 2].tolist()
    star_traces.append(star)

if coords.xy is not None:
    dim = base["dim"]
    pred = np.zeros(len(run.score), dtype=bool)
    pred[base["test"]] = base["s_test"] > threshold
    rows = base["map_rows"]
    title = "The hypersphere" if dim <= 3 else f"Test split on the {coords.kind.upper()} projection"
    st.subheader(title)
    if len(rows) < len(base["test"]):
        st.info(f"Showing {len(rows):,} of {len(base['test']):,} test points (stratified by class).")
    extra = h.decision_region_traces(base, threshold) + star_traces
    fig = h.scatter_figure(run, coords, rows, "decision", pred=pred, height=520, extra=extra)
    st.plotly_chart(fig, key="anomaly_map", width="stretch")
    if dim == 2:
        st.caption(
            "Green arc: directions whose kNN score is ≤ threshold (the normal region, exact on a 0.5° grid)."
        )
    elif dim == 3:
        st.caption(
            f"Green circles: caps of angle arccos(1 − t) = {np.degrees(views.cap_angle(threshold)):.1f}° "
            "around each normal class mean direction — an approximation of the kNN normal region."
        )
    elif stars:
        st.caption(
            "Stars: approximate placement (kNN-weighted mean of the neighbours' projected coordinates)."
        )
elif inspected:
    st.caption(coords.note)

for row in inspected:
    if row["score"] is None:
        st.error(f"{row['file']}: {row['error']}")
        continue
    verdict = ":red[**anomaly**]" if row["decision"] == "anomaly" else ":green[**normal**]"
    with st.container(border=True):
        a, b = st.columns([1, 5])
        a.image(row["image"], caption=row["file"][:40], width=96, clamp=True)
        b.markdown(f"{verdict} · score **{row['score']:.4g}** (threshold {threshold:.4g})")
        with b:
            h.show_gallery(
                run,
                row["nn_rows"],
                [f"{h.class_name(run, r)} · {d:.2g}" for r, d in zip(row["nn_rows"], row["nn_dist"])],
                width=56,
            )
if inspected:
    st.download_button(
        "Download scores and decisions (CSV)",
        views.scores_csv(inspected),
        file_name=f"{run.name}_inspect.csv",
        mime="text/csv",
        key="anomaly_inspect_dl",
    )
