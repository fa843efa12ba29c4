"""Anomaly: kNN cosine scores of the test split, a threshold, and what it gets right and wrong.

Moving the threshold never recomputes an embedding: everything comes from the run's stored `score`
array, and what does not depend on the threshold is cached per run version (core.anomaly_view)."""

from __future__ import annotations

import numpy as np
import streamlit as st

from core import anomaly, anomaly_view, catalog, csv_export, method_scoring, views
from core.anomaly_view import anomaly_base
from core.methods import TRAINING_FREE_METHODS
from core.runs import Run, RunError, save_threshold
from core.score import score_uploads
from core.uploads import uploads_root
from ui.anomaly_plots import CHART_HEIGHT, histogram_figure, pr_figure, roc_figure, star_traces
from ui.embedding_plot import decision_region_traces, scatter_figure, selected_rows
from ui.gallery import overlay_gallery, sample_gallery
from ui.health import draw_health
from ui.inspect_view import inspected_card, mark_out_of_distribution, user_error
from ui.live_chart import LiveFigure, live_charts
from ui.plotly_spec import GL_CONFIG
from ui.run_choice import pick_run
from ui.sample_story import selection_details
from ui.shell import run_inside_app
from ui.text import model_label, one_line, run_data_label

run_inside_app()  # first, before anything is drawn (see ui/shell.py)


GALLERY = 12  # false positives / negatives shown
MAP_HEIGHT = 520
MAP_NEIGHBOURS = 8  # neighbours listed for a sample clicked on the map (Explore's default)
CONFUSION_HELP = {
    "TP": "anomalies called anomalous",
    "FP": "false alarms: normal samples called anomalous",
    "TN": "normal samples called normal",
    "FN": "missed anomalies: called normal",
}
TERMS = {
    "AUROC": "Chance that a random anomaly scores above a random normal image (0.5 = a coin, 1 = perfect).",
    "AUPR": "Area under the precision-recall curve: how clean the flagged images stay as more are caught.",
    "precision": "Of the images called anomalous, the share that really are.",
    "recall": "Of the real anomalies, the share that is caught.",
    "F1": "One number balancing precision and recall (their harmonic mean).",
    "FPR": "Of the normal images, the share wrongly called anomalous (false alarms).",
    "best_f1": "The threshold with the best balance of precision and recall on the labelled test images.",
    "youden": "Youden's J: the threshold with the largest gap between caught anomalies and false alarms.",
}
SAVED_MESSAGE = "anomaly_saved_message"
RULES = {rule.name: rule for rule in anomaly.SUGGESTED_THRESHOLDS}  # their plain-words descriptions


def fmt_t(value: float) -> str:
    """How every threshold is written on this page (slider, saved value, buttons): 6 significant digits."""
    return f"{value:.6g}"


def header(run: Run, base: dict) -> None:
    st.markdown(f"**{run.name}** — {model_label(run)}, data: {run_data_label(run)}")
    top = st.columns(4)
    top[0].metric("AUROC", f"{base['auroc']:.3f}" if base["has_labels"] else "—", help=TERMS["AUROC"])
    top[1].metric("AUPR", f"{base['aupr']:.3f}" if base["has_labels"] else "—", help=TERMS["AUPR"])
    top[2].metric("normal test samples", f"{int((~base['y_test']).sum()):,}")
    top[3].metric("anomalous test samples", f"{int(base['y_test'].sum()):,}")
    if not base["has_labels"]:
        st.info(
            "This run has no labelled anomalies in its test split: ROC/PR need both; the p95/p99 "
            "suggestions still work."
        )


def meaning(base: dict, threshold: float) -> str:
    """What the threshold does, in words: the share of normal validation images it flags."""
    share = anomaly_view.flagged_share(base, threshold)
    what = "validation" if base["ref_is_val"] else "training"
    n = len(base["ref_sorted"])
    if not np.isfinite(share):
        return "there are no normal images to compare it with"
    text = f"flags **{share:.1%}** of normal {what} images ({round(share * n)} of {n})"
    match = anomaly_view.matching_suggestion(base, threshold)
    if match:
        text += f", the {anomaly_view.SUGGESTION_LABELS.get(match, match)}"
    return text


def threshold_picker(run: Run, base: dict) -> float:
    """The slider (its stops include the saved threshold and every suggestion exactly), what its
    position means, one button per suggestion, and Save."""
    thr_key = f"anomaly_thr::{run.name}"
    options = base["options"]

    def set_threshold(value: float) -> None:
        st.session_state[thr_key] = value

    if st.session_state.get(thr_key) not in options:  # first visit, or the run's files changed
        saved = base["saved"]  # a stop of the slider unless it is zero or negative (then: the lowest)
        st.session_state[thr_key] = saved if saved in options else options[0]
    threshold = float(
        st.select_slider(
            "Threshold: an image scoring above it is called an anomaly",
            options=options,
            format_func=fmt_t,
            key=thr_key,
        )
    )
    st.markdown(f"Threshold **{fmt_t(threshold)}**: {meaning(base, threshold)}.")
    st.caption(f"Threshold saved with the run: {fmt_t(base['saved'])}")
    names = [n for n in anomaly_view.SUGGESTION_LABELS if n in base["suggest"]]
    bcols = st.columns(2)
    for i, name in enumerate(names):
        value = base["suggest"][name]
        bcols[i % 2].button(
            f"{anomaly_view.SUGGESTION_LABELS[name]} = {fmt_t(value)}",
            key=f"anomaly_suggest_{name}",
            help=TERMS.get(name, RULES[name].description),
            on_click=set_threshold,
            args=(value,),
            width="stretch",
        )
    if len(names) < len(anomaly_view.SUGGESTION_LABELS):
        st.caption("Suggestions that would flag every test image or none are not offered.")
    if st.button("Save threshold with run", key="anomaly_save", type="primary"):
        try:
            save_threshold(run.run_dir, threshold, source="anomaly page")
            st.session_state[SAVED_MESSAGE] = (
                f"Saved threshold {fmt_t(threshold)} with {run.name}: scoring from the command line uses it."
            )
            st.rerun()  # the whole page: the run's files changed, so does its cached view
        except OSError as e:
            st.error(f"Could not save the threshold: {one_line(e)}")
    if msg := st.session_state.pop(SAVED_MESSAGE, None):
        st.success(msg)
    return threshold


def decision_table(m: dict) -> None:
    for col, key in zip(st.columns(4), CONFUSION_HELP):
        col.metric(key, m[key.lower()], help=CONFUSION_HELP[key])
    for col, key in zip(st.columns(4), ("precision", "recall", "F1", "FPR")):
        col.metric(key, f"{m[key.lower()]:.3f}", help=TERMS[key])
    st.markdown(
        "| | called normal | called anomaly |\n|---|---:|---:|\n"
        f"| **normal** (test) | {m['tn']} | {m['fp']} |\n| **anomalous** (test) | {m['fn']} | {m['tp']} |"
    )


def score_charts(base: dict, threshold: float, m: dict) -> list[LiveFigure]:
    """Score histogram, ROC and PR (one row), each with the threshold marked."""
    width = "33.33%"
    charts = [LiveFigure("histogram", histogram_figure(base, threshold), CHART_HEIGHT, width)]
    if base["has_labels"]:
        charts.append(LiveFigure("roc", roc_figure(base, m), CHART_HEIGHT, width))
        charts.append(LiveFigure("pr", pr_figure(base, m), CHART_HEIGHT, width))
    return charts


def mistakes(run: Run, base: dict, m: dict, threshold: float) -> None:
    fp_rows = base["fp_order"][: int(m["fp"])][:GALLERY]  # sorted desc by score: the first fp rows are > t
    fn_rows = base["fn_order"][: int(m["fn"])][:GALLERY]  # sorted asc: the first fn rows are <= t
    maps = anomaly_view.patch_maps(str(run.run_dir), catalog.run_mtime(run.run_dir))
    g1, g2 = st.columns(2)
    for col, rows, title in (
        (
            g1,
            fp_rows,
            f"**False positives** ({m['fp']}): normal samples called anomalous, highest score first",
        ),
        (g2, fn_rows, f"**False negatives** ({m['fn']}): anomalies called normal, lowest score first"),
    ):
        with col:
            st.markdown(title)
            if maps is None:
                sample_gallery(run, rows, run.score)
            else:
                overlay_gallery(run, rows, maps, threshold)


def decisions_download(run: Run, base: dict, threshold: float) -> None:
    """The test split's decisions at this threshold as CSV, built only when the button is pressed."""
    data = str(run.summary.get("data") or run.config.get("data") or "")

    def build() -> bytes:
        rows = base["test"]
        return csv_export.decisions_csv(
            [csv_export.display_source(str(run.source[r]), data) for r in rows],
            base["y_test"],
            [views.class_name(run, r) for r in rows],
            run.score[rows],
            threshold,
        )

    st.download_button(
        f"Download the test decisions at threshold {fmt_t(threshold)} (CSV)",
        build,
        file_name=f"{run.name}_decisions.csv",
        mime="text/csv",
        key="anomaly_decisions_dl",
        on_click="ignore",
        icon=":material/download:",
    )


def inspect_images(run: Run, base: dict, threshold: float) -> list[dict]:
    """Uploads scored once per (run version, files); the decision follows the slider without re-embedding.
    Files that cannot be scored are listed right under the upload box, by their own names."""
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
    if method_scoring.run_method(run) not in TRAINING_FREE_METHODS:
        # A trained model may map an unfamiliar image anywhere; a training-free method's score IS the
        # distance to the good images, so "farther than any of them" is simply its anomaly verdict.
        mark_out_of_distribution(inspected, base["max_train_score"])
    for row in inspected:
        if row["score"] is None:
            st.error(f"{row['file']}: {user_error(row)}")
            continue
        row["threshold"] = threshold
        row["max_train_score"] = base["max_train_score"]
        row["decision"] = "anomaly" if row["score"] > threshold else "normal"
    return inspected


def map_chart(run: Run, base: dict, threshold: float, inspected: list[dict]) -> LiveFigure | None:
    """The test split coloured by the decision at ``threshold``, the normal region and the inspected
    uploads as stars; None when the run has no 2-D/3-D view."""
    coords = base["coords"]
    if coords.xy is None:
        return None
    pred = np.zeros(len(run.score), dtype=bool)
    pred[base["test"]] = base["s_test"] > threshold
    stars = star_traces([r for r in inspected if r.get("score") is not None])
    extra = decision_region_traces(base, threshold) + stars
    fig = scatter_figure(
        run, coords, base["map_rows"], "decision", pred=pred, height=MAP_HEIGHT, extra=extra, dragmode=None
    )
    return LiveFigure("map", fig, MAP_HEIGHT, config=GL_CONFIG, selectable=True)


def map_captions(base: dict, threshold: float, inspected: list[dict]) -> None:
    if base["dim"] == 2:
        st.caption(
            "Green arc on the map: the directions an image would be called normal in (exact on a 0.5° grid)."
        )
    elif base["dim"] == 3:
        st.caption(
            f"Green circles on the map: caps of angle {np.degrees(views.cap_angle(threshold)):.1f}° around "
            "each normal class's mean direction, an approximation of the region called normal."
        )
    elif any(r.get("score") is not None for r in inspected):
        st.caption("Stars: approximate placement (near their nearest training images on the projection).")


def decision_plots(run: Run, base: dict, threshold: float, m: dict, inspected: list[dict]) -> None:
    """The decision map, then the score histogram, ROC and PR, as one group of charts that a threshold
    move redraws in place (st.plotly_chart would remount them and rebuild the map's WebGL contexts);
    a click on a map point tells its story (as on Explore), the lasso selects many."""
    coords, rows = base["coords"], base["map_rows"]
    mapped = map_chart(run, base, threshold, inspected)
    if mapped is not None:
        st.subheader(
            "The hypersphere" if base["dim"] <= 3 else f"Test split on the {coords.kind.upper()} projection"
        )
        if len(rows) < len(base["test"]):
            st.info(f"Showing {len(rows):,} of {len(base['test']):,} test points (stratified by class).")
    elif inspected:
        st.caption(coords.note)
    charts = ([mapped] if mapped is not None else []) + score_charts(base, threshold, m)
    event = live_charts(charts, key=f"anomaly_plots::{run.name}")
    if mapped is not None:
        map_captions(base, threshold, inspected)
        selection_details(run, coords.xy, selected_rows(event), MAP_NEIGHBOURS, "anomaly_map_dl", threshold)


def inspected_rows(run: Run, inspected: list[dict], threshold: float) -> None:
    data = str(run.summary.get("data") or run.config.get("data") or "")
    scored = [row for row in inspected if row["score"] is not None]
    for row in scored:
        inspected_card(run, row, threshold, data)
    if inspected:
        st.download_button(
            "Download scores and decisions (CSV)",
            csv_export.scores_csv(inspected, data),
            file_name=f"{run.name}_inspect.csv",
            mime="text/csv",
            key="anomaly_inspect_dl",
            on_click="ignore",
        )


@st.fragment
def threshold_section(run: Run, base: dict) -> None:
    """Everything that follows the threshold: a slider move reruns only this part of the page."""
    threshold = threshold_picker(run, base)
    m = anomaly.decision_metrics(base["s_test"], base["y_test"], threshold)
    decision_table(m)
    decisions_download(run, base, threshold)
    plots = st.container()  # above the galleries, filled once the uploads are scored (their stars)
    mistakes(run, base, m, threshold)
    inspected = inspect_images(run, base, threshold)
    with plots:
        decision_plots(run, base, threshold, m, inspected)
    inspected_rows(run, inspected, threshold)


def load(entries: list[catalog.RunEntry]) -> tuple[Run, dict] | None:
    """The chosen run and its threshold-independent data; None (after one error line) when unusable."""
    entry = pick_run(entries, key="anomaly_run")
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
        "Each image gets a score: how far it lies from the normal training images (0 = just like one "
        "of them). An image scoring above the threshold is called an anomaly."
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
    draw_health(run)
    threshold_section(run, base)


render()
