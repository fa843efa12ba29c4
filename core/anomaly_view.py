"""What the Anomaly page shows of a run that does not depend on the threshold, computed once per run
version: test scores and labels, log-spaced histogram bins, thinned ROC/PR curves, threshold
suggestions, score-sorted false-positive/negative candidates and the hypersphere geometry.

``anomaly_base(run_dir, mtime)`` is cached per (run dir, newest file mtime) in-process (not
``st.cache_resource``: its lookup alone costs ms per rerun); the result is shared between reruns,
so callers treat it as read-only."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from core import anomaly, views
from core.runs import Run, load_run
from core.views import SPLIT_TEST, SPLIT_VAL

HISTOGRAM_BINS = 60
MIN_LOG_SCORE = -7.0  # kNN cosine scores of a dense 2-D circle reach 1e-6; nothing below 1e-7 is drawn
MAX_SCORE = 2.0  # the largest cosine distance
MAP_POINTS = 4000


def _reference_scores(run: Run) -> np.ndarray:
    """Scores of the normal validation samples (the normal training ones when there is no val split)."""
    val_normal = (
        (run.split == SPLIT_VAL) & np.isin(run.label, views.normal_classes(run)) & np.isfinite(run.score)
    )
    ref = run.score[val_normal] if val_normal.any() else run.score[run.normal_train_mask]
    return ref[np.isfinite(ref)]


def _log_bins(
    s_test: np.ndarray, ref_scores: np.ndarray, threshold: float
) -> tuple[np.ndarray, float, float]:
    """kNN cosine scores span decades (1e-6 for a dense 2-D circle, 0.5 for a far anomaly): the
    threshold slider and the histogram work on log10(score)."""
    pooled = np.concatenate([s_test, ref_scores, [threshold]])
    pos = pooled[pooled > 0]
    smallest = max(float(pos.min()) if len(pos) else 1e-6, 10**MIN_LOG_SCORE)
    lo = float(np.floor(np.log10(smallest) * 10) / 10)
    hi = float(np.ceil(np.log10(min(max(float(pooled.max()), 1e-6), MAX_SCORE)) * 10) / 10)
    hi = max(hi, lo + 0.1)
    return np.logspace(lo, hi, HISTOGRAM_BINS + 1), lo, hi


def _geometry(run: Run, test: np.ndarray, max_points: int) -> dict:
    dim = int(run.emb.shape[1])
    out: dict = {"dim": dim}
    if dim <= 3:
        xy, radius = views.display_coords(run.emb, str(run.summary.get("loss")), run.alpha, raw=False)
        out["coords"] = views.Coords(xy, radius, "sphere")
        ref = run.emb[run.normal_train_mask]
        labels = run.label[run.normal_train_mask]
        out["directions"] = views.class_mean_directions(ref, labels, views.normal_classes(run))
        if dim == 2 and len(ref):
            out["grid"] = views.circle_grid_scores(ref, k=int(run.summary.get("k", anomaly.DEFAULT_K)))
    else:
        out["coords"] = views.run_coords(run)
    out["map_rows"] = test[views.downsample_indices(len(test), max_points, seed=0, strata=run.label[test])]
    return out


@lru_cache(maxsize=8)
def anomaly_base(run_dir: str, mtime: int, max_points: int = MAP_POINTS) -> dict:  # noqa: ARG001 - mtime is the key
    """Everything on the Anomaly page that does not depend on the threshold (see the module doc)."""
    run = load_run(run_dir)
    test = np.flatnonzero(run.split == SPLIT_TEST)
    s_test = run.score[test].astype(np.float64)
    finite = np.isfinite(s_test)
    test, s_test = test[finite], s_test[finite]
    y_test = run.anomaly[test].astype(bool)
    ref_scores = _reference_scores(run)
    bins, lo, hi = _log_bins(s_test, ref_scores, run.threshold)
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
    base.update(_geometry(run, test, max_points))
    return base
