"""Anomaly: kNN cosine scores of the test split, a threshold, and what it gets right and wrong.

Moving the threshold never recomputes an embedding: everything comes from the run's stored `score`
array, and what does not depend on the threshold is cached per run version (core.anomaly_view)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import anomaly, catalog, views
from core.anomaly_view import anomaly_base
from core.runs import Run, RunError, save_threshold
from core.score import score_uploads
from core.uploads import uploads_root
from ui.anomaly_plots import histogram_figure, pr_figure, roc_figure, star_traces
from ui.embedding_plot import decision_region_traces, scatter_figure
from ui.gallery import sample_gallery, show_gallery
from ui.text import one_line, run_title

GALLERY = 12  # false positives / negatives shown
MIN_THRESHOLD = 1e-12
SUGGESTIONS = {
    "p95": "p95 of normal val",
    "p99": "p99 of normal val",
    "best_f1": "best F1",
    "youden": "Youden's J",
}
CONFUSION_HELP = {
    "TP": "anomalies called anomalous",
    "FP": "false alarms: normal samples called anomalous",
    "TN": "normal samples called normal",
    "FN": "missed anomalies: called normal",
}


def header(run: Run, base: dict) -> None:
    st.markdown(f"**{run_title(run)}**")
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


def threshold_picker(run: Run, base: dict) -> float:
    """The slider (log10 scale: scores span decades), one button per suggestion, and Save."""
    thr_key = f"anomaly_thr::{run.name}"
    lo, hi = base["log_lo"], base["log_hi"]

    def to_log(t: float) -> float:
        return float(np.clip(round(float(np.log10(max(t, MIN_THRESHOLD))), 3), lo, hi))

    def set_threshold(value: float) -> None:
        st.session_state[thr_key] = to_log(value)

    if thr_key not in st.session_state:
        st.session_state[thr_key] = to_log(run.threshold)
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
    bcols = st.columns(len(SUGGESTIONS) + 1)
    for col, (key, label) in zip(bcols, SUGGESTIONS.items()):
        value = base["suggest"].get(key)
        col.button(
            label + ("" if value is None else f" = {value:.3g}"),
            key=f"anomaly_suggest_{key}",
            disabled=value is None,
            on_click=set_threshold,
            args=(value or 0.0,),
            width="stretch",
        )
    if bcols[-1].button("Save threshold with run", key="anomaly_save", width="stretch"):
        try:
            save_threshold(run.run_dir, threshold, source="anomaly page")
            st.success(
                f"Saved threshold {threshold:.4g} to {run.name}/threshold.json; `core.score` now uses it."
            )
        except OSError as e:
            st.error(f"Could not save the threshold: {one_line(e)}")
    st.caption(f"Threshold used by `core.score` for this run: {run.threshold:.4g}")
    return threshold


def decision_table(m: dict) -> None:
    c = st.columns(8)
    for col, key in zip(c, CONFUSION_HELP):
        col.metric(key, m[key.lower()], help=CONFUSION_HELP[key])
    for col, key in zip(c[4:], ("precision", "recall", "F1", "FPR")):
        col.metric(key, f"{m[key.lower()]:.3f}")
    st.markdown(
        "| | called normal | called anomaly |\n|---|---:|---:|\n"
        f"| **normal** (test) | {m['tn']} | {m['fp']} |\n| **anomalous** (test) | {m['fn']} | {m['tp']} |"
    )


def charts(base: dict, threshold: float, m: dict) -> None:
    cols = st.columns(3)
    cols[0].plotly_chart(histogram_figure(base, threshold), key="anomaly_hist", width="stretch")
    if base["has_labels"]:
        cols[1].plotly_chart(roc_figure(base, m), key="anomaly_roc", width="stretch")
        cols[2].plotly_chart(pr_figure(base, m), key="anomaly_pr", width="stretch")


def mistakes(run: Run, base: dict, m: dict) -> None:
    fp_rows = base["fp_order"][: int(m["fp"])][:GALLERY]  # sorted desc by score: the first fp rows are > t
    fn_rows = base["fn_order"][: int(m["fn"])][:GALLERY]  # sorted asc: the first fn rows are <= t
    g1, g2 = st.columns(2)
    with g1:
        st.markdown(f"**False positives** ({m['fp']}): normal samples called anomalous, highest score first")
        sample_gallery(run, fp_rows, run.score)
    with g2:
        st.markdown(f"**False negatives** ({m['fn']}): anomalies called normal, lowest score first")
        sample_gallery(run, fn_rows, run.score)


def inspect_images(run: Run, threshold: float) -> list[dict]:
    """Uploads scored once per (run version, files); the decision follows the slider without re-embedding."""
    st.subheader("Inspect images")
    uploads = st.file_uploader(
        "Upload images to score against this run",
        accept_multiple_files=True,
        key=f"anomaly_upload::{run.name}",
    )
    if not uploads:
        return []
    cache = st.session_state.setdefault("anomaly_inspect_cache", {})
    cache_key = (
        run.name,
        catalog.run_mtime(run.run_dir),
        tuple(getattr(u, "file_id", u.name) for u in uploads),
    )
    if cache_key not in cache:
        with st.spinner(f"Embedding {len(uploads)} image(s)…"):
            cache.clear()
            cache[cache_key] = score_uploads(
                run, [(u.name, u.getvalue()) for u in uploads], threshold, uploads_root()
            )
    inspected = cache[cache_key]
    for row in inspected:
        if row["score"] is not None:
            row["threshold"] = threshold
            row["decision"] = "anomaly" if row["score"] > threshold else "normal"
    return inspected


def decision_map(run: Run, base: dict, threshold: float, inspected: list[dict]) -> None:
    coords, dim = base["coords"], base["dim"]
    if coords.xy is None:
        if inspected:
            st.caption(coords.note)
        return
    pred = np.zeros(len(run.score), dtype=bool)
    pred[base["test"]] = base["s_test"] > threshold
    rows = base["map_rows"]
    st.subheader("The hypersphere" if dim <= 3 else f"Test split on the {coords.kind.upper()} projection")
    if len(rows) < len(base["test"]):
        st.info(f"Showing {len(rows):,} of {len(base['test']):,} test points (stratified by class).")
    stars = star_traces(inspected)
    extra = decision_region_traces(base, threshold) + stars
    fig = scatter_figure(run, coords, rows, "decision", pred=pred, height=520, extra=extra)
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


def inspected_rows(run: Run, inspected: list[dict], threshold: float) -> None:
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
                captions = [
                    f"{views.class_name(run, r)} · {d:.2g}" for r, d in zip(row["nn_rows"], row["nn_dist"])
                ]
                show_gallery(run, row["nn_rows"], captions, width=56)
    if inspected:
        st.download_button(
            "Download scores and decisions (CSV)",
            views.scores_csv(inspected),
            file_name=f"{run.name}_inspect.csv",
            mime="text/csv",
            key="anomaly_inspect_dl",
        )


def load(entries: list[catalog.RunEntry]) -> tuple[Run, dict] | None:
    """The chosen run and its threshold-independent data; None (after one error line) when unusable."""
    by_id = {e.run_id: e for e in entries}
    entry = by_id[st.selectbox("Run", list(by_id), key="anomaly_run")]
    run, err = catalog.try_load(entry)
    if run is None:
        st.error(err)
        return None
    try:
        base = anomaly_base(str(run.run_dir.resolve()), catalog.run_mtime(run.run_dir))
    except (RunError, OSError, ValueError, KeyError) as e:  # loads, but cannot be scored: one line
        st.error(f"{run.name}: cannot show anomaly scores ({one_line(e)})")
        return None
    if len(base["s_test"]) == 0:
        st.warning(f"{run.name}: the test split has no scored samples.")
        return None
    return run, base


def render() -> None:
    st.title("Anomaly detection")
    st.caption(
        "Score = mean cosine distance to the k nearest normal training embeddings; a score above the "
        "threshold is called an anomaly. Normal = training classes; anomalies = held-out classes or defects."
    )
    entries, errors = catalog.completed_entries()
    for err in errors:
        st.error(f"Run skipped: {err}")
    if not entries:
        st.info(f"No completed run in `{catalog.checkpoints_root()}` yet. Train one on the Train page.")
        return
    loaded = load(entries)
    if loaded is None:
        return
    run, base = loaded
    header(run, base)
    threshold = threshold_picker(run, base)
    m = anomaly.decision_metrics(base["s_test"], base["y_test"], threshold)
    decision_table(m)
    charts(base, threshold, m)
    mistakes(run, base, m)
    inspected = inspect_images(run, threshold)
    decision_map(run, base, threshold, inspected)
    inspected_rows(run, inspected, threshold)


render()
