"""What the Anomaly page shows of a run that does not depend on the threshold, computed once per run
version: test scores and labels, log-spaced histogram bins, thinned ROC/PR curves, threshold
suggestions, score-sorted false-positive/negative candidates and the hypersphere geometry.

``anomaly_base(run_dir, mtime)`` is cached per (run dir, newest file mtime) in-process (not
``st.cache_resource``: its lookup alone costs ms per rerun); the result is shared between reruns,
so callers treat it as read-only."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from core import anomaly, views
from core.runs import Run, load_run
from core.views import SPLIT_TEST, SPLIT_VAL

HISTOGRAM_BINS = 60
MIN_LOG_SCORE = -7.0  # kNN cosine scores of a dense 2-D circle reach 1e-6; nothing below 1e-7 is drawn
MAX_SCORE = 2.0  # the largest cosine distance
MAP_POINTS = 4000
PATCH_MAPS_FILE = "patch_maps.npz"  # patch runs: distances [N_test, h, w], row [N_test], image_size, sigma
THRESHOLD_GRID = 400  # slider stops between the smallest and the largest score (log-spaced)
GRID_DIGITS = 3  # grid stops are round numbers (3 significant digits); suggestions stay exact
# Below this a suggestion is zero or a denormal float: it flags everything, it is not a threshold.
MIN_SUGGESTION = float(np.finfo(np.float32).tiny)
SUGGESTION_LABELS = {
    "p95": "p95 of normal validation scores",
    "p99": "p99 of normal validation scores",
    "best_f1": "best F1",
    "youden": "Youden's J",
}


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


def usable_suggestions(suggest: dict, s_test: np.ndarray) -> dict:
    """The suggestions a user can act on: finite, above zero and denormals, and neither flagging every
    test sample nor none of them (such a rule says nothing)."""
    out = {}
    for name, value in suggest.items():
        if value is None or not np.isfinite(value) or value < MIN_SUGGESTION:
            continue
        flagged = int(np.sum(s_test > value))
        if 0 < flagged < len(s_test):
            out[name] = float(value)
    return out


def threshold_options(lo: float, hi: float, exact: list[float]) -> tuple[float, ...]:
    """The slider's stops: a log-spaced grid of round numbers from 10**lo to 10**hi, plus the exact
    values (saved threshold, suggestions), so each of those is a position the slider can take."""
    grid = [float(f"{v:.{GRID_DIGITS}g}") for v in np.logspace(lo, hi, THRESHOLD_GRID + 1)]
    values = {v for v in grid + [float(e) for e in exact] if np.isfinite(v) and v > 0}
    return tuple(sorted(values))


def flagged_share(base: dict, threshold: float) -> float:
    """The share of normal validation scores above ``threshold`` (what the threshold flags of normal)."""
    ref = base["ref_sorted"]
    if len(ref) == 0:
        return float("nan")
    return 1.0 - np.searchsorted(ref, threshold, side="right") / len(ref)


def matching_suggestion(base: dict, threshold: float) -> str | None:
    """The suggestion whose value is exactly ``threshold``, if any."""
    return next((k for k, v in base["suggest"].items() if v == threshold), None)


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
    }
    raw = (
        anomaly.suggest_thresholds(ref_scores if len(ref_scores) else s_test, s_test, y_test)
        if len(s_test)
        else {}
    )
    base["suggest"] = usable_suggestions(raw, s_test)
    base["saved"] = float(run.threshold)
    base["options"] = threshold_options(lo, hi, [base["saved"], *base["suggest"].values()])
    base["ref_sorted"] = np.sort(ref_scores)
    base["ref_is_val"] = bool(
        ((run.split == SPLIT_VAL) & np.isin(run.label, views.normal_classes(run))).any()
    )
    train_scores = run.score[run.normal_train_mask]
    train_scores = train_scores[np.isfinite(train_scores)]
    base["max_train_score"] = float(train_scores.max()) if len(train_scores) else float("inf")
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


@lru_cache(maxsize=4)
def patch_maps(run_dir: str, mtime: int) -> dict | None:  # noqa: ARG001 - mtime is the cache key
    """A patch run's stored patch-distance grids: {distances [N, h, w], index {embeddings row: i},
    image_size, sigma}; None for runs without ``patch_maps.npz``."""
    path = Path(run_dir) / PATCH_MAPS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        out = {
            "distances": np.asarray(z["distances"], dtype=np.float32),
            "index": {int(r): i for i, r in enumerate(np.asarray(z["row"]))},
            "image_size": int(z["image_size"]) if "image_size" in z else None,
            "sigma": float(z["sigma"]) if "sigma" in z else 4.0,
        }
    return out


def defect_map(maps: dict, row: int, out_hw: tuple[int, int], threshold: float) -> np.ndarray | None:
    """The defect map [H, W] of one embeddings row in threshold units (1 = the threshold), or None
    when the run stored no map for it."""
    from core.patchcore import distance_maps_to_images  # torch: only for the runs that have maps

    i = maps["index"].get(int(row))
    if i is None:
        return None
    grid = maps["distances"][i : i + 1]
    size = maps["image_size"] or max(out_hw)
    heat = distance_maps_to_images(grid, size, out_hw, sigma=maps["sigma"])[0]
    return heat / threshold if threshold > 0 else heat
