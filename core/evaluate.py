"""Evaluate a trained model on a DataBundle: embeddings of every split, anomaly scores, accuracy,
retrieval metrics and the suggested threshold.

`python -m core.evaluate --run DIR` re-evaluates an existing run from its config.json and model.pt and
rewrites its embeddings.npz and summary.json (other summary fields, e.g. timings, are kept)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import anomaly
from core.config import TrainConfig
from core.fsutil import read_json
from core.modelio import embed_all, embed_for_scoring, load_model, scores_plain_embedding
from core.rundir import (
    CONFIG_FILE,
    MODEL_FILE,
    SPLIT_CODES,
    SPLIT_TEST,
    SPLIT_TRAIN,
    SPLIT_VAL,
    SUMMARY_FILE,
    RunWriter,
)


@dataclass
class EvalResult:
    """What evaluation found: `arrays` are embeddings.npz's columns, `metrics` go into summary.json."""

    arrays: dict[str, np.ndarray]
    metrics: dict = field(default_factory=dict)


def classifier_index(bundle) -> np.ndarray:
    """Class index -> classifier output index (-1 for classes the classifier was not trained on)."""
    to_cls = np.full(len(bundle.class_names), -1, dtype=np.int64)
    to_cls[bundle.train_classes] = np.arange(len(bundle.train_classes))
    return to_cls


def class_centroids(emb: torch.Tensor, y_cls: torch.Tensor, num_classes: int) -> torch.Tensor:
    e = F.normalize(emb, dim=1)
    cents = torch.stack(
        [e[y_cls == c].mean(0) if (y_cls == c).any() else torch.zeros(e.shape[1]) for c in range(num_classes)]
    )
    return F.normalize(cents, dim=1)


def classifier_accuracy(
    model: torch.nn.Module, emb: torch.Tensor, y_cls: torch.Tensor, centroids: torch.Tensor | None
) -> float:
    """Accuracy of the head's logits, or (heads without a classifier) of the nearest class centroid."""
    if len(emb) == 0:
        return float("nan")
    with torch.no_grad():
        if model.head.has_classifier:
            pred = model.head.logits(emb).argmax(1)
        else:
            pred = (F.normalize(emb, dim=1) @ centroids.T).argmax(1)
    return float((pred == y_cls).float().mean())


def retrieval_metrics(query: np.ndarray, q_labels: np.ndarray, ref: np.ndarray, r_labels: np.ndarray) -> dict:
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    if len(query) == 0 or len(ref) == 0:
        return {"precision_at_1": float("nan"), "map_at_r": float("nan")}
    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r"),
        k="max_bin_count",
        knn_func=CustomKNN(CosineSimilarity()),
    )
    acc = calc.get_accuracy(
        torch.from_numpy(query),
        torch.from_numpy(q_labels),
        torch.from_numpy(ref),
        torch.from_numpy(r_labels),
        ref_includes_query=False,
    )
    return {
        "precision_at_1": float(acc["precision_at_1"]),
        "map_at_r": float(acc["mean_average_precision_at_r"]),
    }


def _embed_splits(model: torch.nn.Module, bundle) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    splits = [("train", bundle.train), ("val", bundle.val), ("test", bundle.test)]
    emb = torch.cat([embed_all(model, s.x, torch.device("cpu")) for _, s in splits])
    cols = {
        "label": np.concatenate([s.y for _, s in splits]).astype(np.int64),
        "split": np.concatenate([np.full(len(s.y), SPLIT_CODES[name], np.int8) for name, s in splits]),
        "anomaly": np.concatenate([s.anomaly for _, s in splits]).astype(bool),
        "source": np.array(sum((list(s.source) for _, s in splits), []), dtype=str),
    }
    return emb, cols


def _scoring_embeddings(model: torch.nn.Module, bundle, emb: torch.Tensor) -> np.ndarray | None:
    """Every split's scoring embedding (core.modelio.embed_for_scoring), in _embed_splits' row order
    (`emb`: their plain embeddings, in that order); None when the model scores its plain embedding."""
    if scores_plain_embedding(model):
        return None
    parts, start = [], 0
    for s in (bundle.train, bundle.val, bundle.test):
        if len(s):  # an empty split adds no rows
            upright = emb[start : start + len(s)]
            parts.append(embed_for_scoring(model, s.x, torch.device("cpu"), upright=upright))
            start += len(s)
    return torch.cat(parts).numpy().astype(np.float32)


def _scores(emb: np.ndarray, split: np.ndarray, normal_train: np.ndarray, k: int) -> np.ndarray:
    """kNN cosine score against the normal training rows; those rows get leave-one-out scores."""
    ref_rows = np.flatnonzero(normal_train)
    score = np.full(len(emb), np.nan, dtype=np.float32)
    other = np.flatnonzero(split != SPLIT_TRAIN)
    score[other] = anomaly.knn_cosine_scores(emb[other], emb[ref_rows], k=k)[0]
    score[ref_rows] = anomaly.knn_cosine_scores(emb[ref_rows], emb[ref_rows], k=k, exclude_self=True)[0]
    return score


def evaluate(model: torch.nn.Module, bundle, config: TrainConfig) -> EvalResult:
    """Embed every split on the CPU, score anomalies, measure accuracy and retrieval."""
    model.cpu()
    emb, cols = _embed_splits(model, bundle)
    emb_np = emb.numpy().astype(np.float32)
    label, split, is_anom = cols["label"], cols["split"], cols["anomaly"]
    normal_train = (split == SPLIT_TRAIN) & np.isin(label, bundle.normal_classes)
    # a model that scores several views of each image (core.transform_classes), or shifted copies
    # (core.score_shifts), scores their joint embedding, kept beside the plain one (which the views,
    # accuracy and retrieval use)
    score_emb = _scoring_embeddings(model, bundle, emb)
    score = _scores(emb_np if score_emb is None else score_emb, split, normal_train, config.k)

    test_rows = split == SPLIT_TEST
    test_known = test_rows & ~is_anom
    y_cls = torch.from_numpy(classifier_index(bundle)[label])
    train_rows = torch.from_numpy(split == SPLIT_TRAIN)
    head = model.head
    cents = (
        None
        if head.has_classifier
        else class_centroids(emb[train_rows], y_cls[train_rows], len(bundle.train_classes))
    )
    known = torch.from_numpy(test_known)
    curves = anomaly.roc_pr(score[test_rows], is_anom[test_rows])
    val_normal = (split == SPLIT_VAL) & np.isin(label, bundle.normal_classes)
    threshold = anomaly.PercentileOfNormal(config.threshold_percentile).value(
        score[val_normal] if val_normal.any() else score[normal_train]
    )
    norm = emb.norm(dim=1).numpy()
    cw = head.class_weights()
    arrays = {
        "emb": emb_np,
        "norm": norm.astype(np.float32),
        **cols,
        "score": score,
        "class_weights": (
            cw.detach().cpu().numpy().astype(np.float32)
            if cw is not None
            else np.zeros((0, config.dim), np.float32)
        ),
        "class_names": np.array(bundle.class_names, dtype=str),
    }
    # embeddings.npz's column order (a reader never depends on it, but the file stays as it was)
    order = ("emb", "norm", "label", "split", "anomaly", "source", "score", "class_weights", "class_names")
    if score_emb is not None:
        arrays["score_emb"] = score_emb
        order += ("score_emb",)
    metrics = {
        "n_train": int((split == SPLIT_TRAIN).sum()),
        "n_val": int((split == SPLIT_VAL).sum()),
        "n_test": int(test_rows.sum()),
        "n_test_anomalies": int(is_anom.sum()),
        "test_accuracy": classifier_accuracy(model, emb[known], y_cls[known], cents),
        **retrieval_metrics(emb_np[test_known], label[test_known], emb_np[normal_train], label[normal_train]),
        "anomaly_auroc": curves.get("auroc"),
        "anomaly_aupr": curves.get("aupr"),
        "threshold": threshold,
        "threshold_percentile": config.threshold_percentile,
        "mean_feature_norm": float(norm[split == SPLIT_TRAIN].mean()),
    }
    return EvalResult(arrays={key: arrays[key] for key in order}, metrics=metrics)


def reevaluate_run(run_dir: str | Path) -> dict:
    """Evaluate an existing run again (same data, same model.pt) and rewrite its embeddings.npz and
    summary.json; returns the new summary."""
    from core.data import limit_train, load_bundle

    run_dir = Path(run_dir)
    config = TrainConfig.from_dict(read_json(run_dir / CONFIG_FILE))
    model, _ = load_model(run_dir / MODEL_FILE)
    bundle = limit_train(load_bundle(config), config.max_train_samples, config.seed)
    result = evaluate(model, bundle, config)
    try:
        summary = read_json(run_dir / SUMMARY_FILE)
    except FileNotFoundError:
        summary = {}
    summary.update(result.metrics)
    writer = RunWriter(run_dir)
    writer.embeddings(**result.arrays)
    writer.summary(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory with config.json and model.pt")
    args = p.parse_args(argv)
    try:
        summary = reevaluate_run(args.run)
    except (ValueError, OSError) as e:
        print(f"error: {args.run}: {e}", file=sys.stderr)
        return 2
    auroc = summary.get("anomaly_auroc")
    print(
        f"re-evaluated {args.run}: test_accuracy {summary['test_accuracy']:.4f}"
        + (f"  AUROC {auroc:.4f}" if auroc is not None else ""),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
