"""Anomaly scoring shared by training, the app and `core.score`.

The score of a sample is its mean cosine distance to the k nearest normal training embeddings:
on a hypersphere the angle is what carries identity, so the norm is deliberately ignored."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from core.config import DEFAULT_K  # noqa: E402 - one default for the CLI and the scorer


def _as_tensor(a: torch.Tensor | np.ndarray) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.detach().float()


# Above this many reference embeddings the scores use FAISS (exact IndexFlatIP) when it is installed.
FAISS_MIN_REFERENCE = int(os.environ.get("HSE_FAISS_MIN_REFERENCE", 200_000))
# chunk_q x chunk_r similarities at most: 2**24 float32 = 64 MiB per block
BLOCK_ELEMENTS = 1 << 24


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def knn_cosine_scores(
    query: torch.Tensor | np.ndarray,
    reference: torch.Tensor | np.ndarray,
    k: int = DEFAULT_K,
    chunk: int = 4096,
    exclude_self: bool = False,
    ref_chunk: int | None = None,
    backend: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (scores [N], neighbour indices [N,k], neighbour distances [N,k]).

    Exact kNN by cosine similarity in bounded memory, whatever the sizes: queries in chunks of `chunk`,
    references in chunks of `ref_chunk` (default: chunk x ref_chunk <= 2**24 similarities, 64 MiB),
    with a running top-k merged across reference chunks. Rows are normalised chunk by chunk, so no
    normalised copy of a large reference set is made. `backend`: "torch", "faiss" (exact IndexFlatIP on
    normalised vectors) or "auto" = FAISS when it is installed and len(reference) >= FAISS_MIN_REFERENCE.
    Both give the same neighbours (ties aside) and distances within float32 rounding (~1e-6).
    With exclude_self, query i is reference i (leave-one-out scores for the training set)."""
    q = _as_tensor(query)
    r = _as_tensor(reference)
    if len(r) == 0:
        raise ValueError("no normal reference embeddings to score against")
    k_eff = min(k, len(r) - (1 if exclude_self else 0))
    if k_eff < 1:
        raise ValueError("need at least 2 normal reference embeddings for leave-one-out scores")
    if backend == "auto":
        backend = "faiss" if len(r) >= FAISS_MIN_REFERENCE and faiss_available() else "torch"
    if backend == "faiss":
        idx_out, sim_out = _knn_faiss(q, r, k_eff, chunk, exclude_self)
    elif backend == "torch":
        idx_out, sim_out = _knn_torch(q, r, k_eff, chunk, exclude_self, ref_chunk)
    else:
        raise ValueError(f"unknown kNN backend '{backend}'; choose auto, torch or faiss")
    dist_out = np.clip(1.0 - sim_out, 0.0, None).astype(np.float32)
    return dist_out.mean(axis=1), idx_out, dist_out


def _knn_torch(
    q: torch.Tensor, r: torch.Tensor, k: int, chunk: int, exclude_self: bool, ref_chunk: int | None
) -> tuple[np.ndarray, np.ndarray]:
    chunk = max(1, int(chunk))
    ref_chunk = max(1, int(ref_chunk or max(k, BLOCK_ELEMENTS // max(1, min(chunk, len(q))))))
    idx_out = np.empty((len(q), k), dtype=np.int64)
    sim_out = np.empty((len(q), k), dtype=np.float32)
    for qs in range(0, len(q), chunk):
        qc = F.normalize(q[qs : qs + chunk], dim=1)
        rows = torch.arange(len(qc))
        best_v = best_i = None
        for rs in range(0, len(r), ref_chunk):
            sim = qc @ F.normalize(r[rs : rs + ref_chunk], dim=1).T
            if exclude_self:
                own = rows + qs - rs  # column of query i's own row in this reference chunk
                hit = (own >= 0) & (own < sim.shape[1])
                sim[rows[hit], own[hit]] = -float("inf")
            top = sim.topk(min(k, sim.shape[1]), dim=1)
            v, i = top.values, top.indices + rs
            if best_v is not None:  # merge with the running top-k of the chunks before
                v, i = torch.cat([best_v, v], 1), torch.cat([best_i, i], 1)
                top = v.topk(min(k, v.shape[1]), dim=1)
                v, i = top.values, i.gather(1, top.indices)
            best_v, best_i = v, i
        idx_out[qs : qs + chunk] = best_i.numpy()
        sim_out[qs : qs + chunk] = best_v.numpy()
    return idx_out, sim_out


def _knn_faiss(
    q: torch.Tensor, r: torch.Tensor, k: int, chunk: int, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(r.shape[1])
    step = max(1, BLOCK_ELEMENTS // max(1, r.shape[1]))
    for rs in range(0, len(r), step):  # normalised chunk by chunk into the index's own storage
        index.add(np.ascontiguousarray(F.normalize(r[rs : rs + step], dim=1).numpy(), dtype=np.float32))
    kk = k + 1 if exclude_self else k
    idx_out = np.empty((len(q), k), dtype=np.int64)
    sim_out = np.empty((len(q), k), dtype=np.float32)
    for qs in range(0, len(q), max(1, int(chunk))):
        qc = np.ascontiguousarray(F.normalize(q[qs : qs + chunk], dim=1).numpy(), dtype=np.float32)
        sims, ids = index.search(qc, kk)
        if exclude_self:
            own = np.arange(qs, qs + len(qc))[:, None]
            keep = ids != own
            # drop the query's own row; when it is not among the k+1 (exact duplicates), drop the last
            keep[keep.all(axis=1), -1] = False
            ids = ids[keep].reshape(len(qc), k)
            sims = sims[keep].reshape(len(qc), k)
        idx_out[qs : qs + len(qc)] = ids
        sim_out[qs : qs + len(qc)] = sims
    return idx_out, sim_out


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


# ------------------------------------------------------------------------------------- thresholds


class Threshold:
    """A rule that picks a decision threshold (score > threshold means anomaly).

    `name` is a short key ("p95", "best_f1"), `description` says in plain words what it does, and
    `value(val_normal_scores, scores, is_anomaly)` returns the threshold, or None when the rule cannot
    give a meaningful one (no normal scores, no labelled anomalies, a threshold below every score).
    `needs_labels`: the rule uses the labelled scores (`scores`, `is_anomaly`), not only normal ones."""

    name: str = ""
    description: str = ""
    needs_labels: bool = False

    def value(
        self,
        val_normal_scores: np.ndarray,
        scores: np.ndarray | None = None,
        is_anomaly: np.ndarray | None = None,
    ) -> float | None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _strictly_below(t: float) -> float | None:
    """sklearn's curve thresholds are inclusive (score >= t), ours strict (score > t): step just below.
    None when that lands below zero (cosine distances are >= 0: it would flag everything)."""
    below = float(np.nextafter(t, -np.inf))
    return below if np.isfinite(below) and below >= 0 else None


class PercentileOfNormal(Threshold):
    """The `percentile`-th percentile of normal (validation) scores: needs no labelled anomaly."""

    def __init__(self, percentile: float = 95.0) -> None:
        if not 0 <= percentile <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {percentile}")
        self.percentile = float(percentile)
        self.name = f"p{self.percentile:g}"
        self.description = f"flags {100 - self.percentile:g} % of normal parts"

    def value(self, val_normal_scores, scores=None, is_anomaly=None) -> float | None:
        normal = np.asarray(val_normal_scores, dtype=np.float64)
        return percentile_threshold(normal, self.percentile) if len(normal) else None


class BestF1(Threshold):
    name = "best_f1"
    description = "the best balance of precision and recall (F1) on the labelled test parts"
    needs_labels = True

    def value(self, val_normal_scores, scores=None, is_anomaly=None) -> float | None:
        curves = roc_pr(scores, is_anomaly) if scores is not None else {}
        if not curves:
            return None
        p, r, thr = curves["precision"][:-1], curves["recall"][:-1], curves["pr_thresholds"]
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)
        return _strictly_below(thr[int(np.argmax(f1))])


class YoudenJ(Threshold):
    name = "youden"
    description = "the largest gap between caught anomalies and false alarms (Youden's J)"
    needs_labels = True

    def value(self, val_normal_scores, scores=None, is_anomaly=None) -> float | None:
        curves = roc_pr(scores, is_anomaly) if scores is not None else {}
        if not curves:
            return None
        j = curves["tpr"] - curves["fpr"]
        finite = np.isfinite(curves["roc_thresholds"])
        if not finite.any():
            return None
        best = int(np.argmax(np.where(finite, j, -np.inf)))
        return _strictly_below(curves["roc_thresholds"][best])


class FixedThreshold(Threshold):
    """A threshold chosen by hand (or saved from the Anomaly page)."""

    def __init__(self, threshold: float, source: str = "manual") -> None:
        self.threshold = float(threshold)
        self.name = "fixed"
        self.description = f"a fixed threshold of {self.threshold:.4g} ({source})"

    def value(self, val_normal_scores=None, scores=None, is_anomaly=None) -> float | None:
        return self.threshold if np.isfinite(self.threshold) else None


SUGGESTED_THRESHOLDS: tuple[Threshold, ...] = (
    PercentileOfNormal(95),
    PercentileOfNormal(99),
    BestF1(),
    YoudenJ(),
)


def suggest_thresholds(val_normal_scores: np.ndarray, scores: np.ndarray, is_anomaly: np.ndarray) -> dict:
    """{name: value} of SUGGESTED_THRESHOLDS (p95, p99, and with labels best_f1 and youden); a rule
    that cannot give a meaningful value is left out."""
    out = {}
    for rule in SUGGESTED_THRESHOLDS:
        v = rule.value(val_normal_scores, scores, is_anomaly)
        if v is not None:
            out[rule.name] = v
    return out
