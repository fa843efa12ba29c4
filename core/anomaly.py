"""Anomaly scoring shared by training, the app and `core.score`.

The score of a sample is its mean cosine distance to the k nearest normal training embeddings:
on a hypersphere the angle is what carries identity, so the norm is deliberately ignored."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

DEFAULT_K = 5


def _as_tensor(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.detach().float()


def knn_cosine_scores(
    query: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray,
    k: int = DEFAULT_K,
    chunk: int = 4096,
    exclude_self: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (scores [N], neighbour indices [N,k], neighbour distances [N,k]).

    Chunked so memory stays bounded by chunk x len(reference). With exclude_self, query i is
    reference i (leave-one-out scores for the training set)."""
    q = F.normalize(_as_tensor(query), dim=1)
    r = F.normalize(_as_tensor(reference), dim=1)
    if len(r) == 0:
        raise ValueError("no normal reference embeddings to score against")
    k_eff = min(k, len(r) - (1 if exclude_self else 0))
    if k_eff < 1:
        raise ValueError("need at least 2 normal reference embeddings for leave-one-out scores")
    idx_out = np.empty((len(q), k_eff), dtype=np.int64)
    dist_out = np.empty((len(q), k_eff), dtype=np.float32)
    for start in range(0, len(q), chunk):
        sim = q[start : start + chunk] @ r.T
        if exclude_self:
            rows = torch.arange(sim.shape[0])
            sim[rows, rows + start] = -float("inf")
        top = sim.topk(k_eff, dim=1)
        idx_out[start : start + chunk] = top.indices.numpy()
        dist_out[start : start + chunk] = (1.0 - top.values).clamp_min(0).numpy()
    return dist_out.mean(axis=1), idx_out, dist_out


def roc_pr(scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """ROC and PR curves; anomalies are the positive class. Empty dict when one class is missing."""
    y = np.asarray(is_anomaly, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.all() or not y.any():
        return {}
    fpr, tpr, roc_thr = roc_curve(y, s)
    precision, recall, pr_thr = precision_recall_curve(y, s)
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr": fpr,
        "tpr": tpr,
        "roc_thresholds": roc_thr,
        "precision": precision,
        "recall": recall,
        "pr_thresholds": pr_thr,
    }


def decision_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> dict:
    """Confusion counts and rates when `score > threshold` means anomaly."""
    y = np.asarray(is_anomaly, dtype=bool)
    pred = np.asarray(scores) > threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    tn = int(np.sum(~pred & ~y))
    fn = int(np.sum(~pred & y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fpr,
    }


def percentile_threshold(normal_scores: np.ndarray, percentile: float = 95.0) -> float:
    """Works without any labelled anomaly: flag what is rarer than `percentile` of normal samples."""
    return float(np.percentile(np.asarray(normal_scores, dtype=np.float64), percentile))


def suggest_thresholds(val_normal_scores: np.ndarray, scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """Candidate thresholds: p95/p99 of normal validation scores, and (with labels) best F1 and Youden's J."""
    out = {
        "p95": percentile_threshold(val_normal_scores, 95),
        "p99": percentile_threshold(val_normal_scores, 99),
    }
    curves = roc_pr(scores, is_anomaly)
    if curves:
        p, r, thr = curves["precision"][:-1], curves["recall"][:-1], curves["pr_thresholds"]
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)
        # precision_recall_curve thresholds are inclusive (score >= t); ours is strict (score > t)
        out["best_f1"] = float(np.nextafter(thr[int(np.argmax(f1))], -np.inf))
        j = curves["tpr"] - curves["fpr"]
        finite = np.isfinite(curves["roc_thresholds"])
        best = int(np.argmax(np.where(finite, j, -np.inf)))
        out["youden"] = float(np.nextafter(curves["roc_thresholds"][best], -np.inf))
    return out
