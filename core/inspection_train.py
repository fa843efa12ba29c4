"""Training-free runs (`--method knn|patch`): fit the method on the good training images, score every
row, and write the same run-directory files as a trained `metric` run (embeddings.npz, summary.json,
projection.npz), plus method.npz (the fitted method: knn reference features or the patch memory bank)
and, for patch, patch_maps.npz (each test image's patch-distance grid). The job queue, the progress
and the pages treat them like any run; core.score scores new images with the run's method."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from core import anomaly
from core.backbones import DEFAULT_IMAGE_SIZE
from core.config import TrainConfig
from core.evaluate import class_centroids, retrieval_metrics
from core.inspection_run import training_free_arrays
from core.methods import build_method
from core.patchcore import PatchCoreConfig
from core.rundir import SPLIT_TEST, SPLIT_TRAIN, SPLIT_VAL

NO_ANOMALY_NOTE = (
    "no AUROC/AUPR: every test image is good (no defect images in the test set); "
    "add test images of defects to measure how well anomalies are separated"
)
NO_NORMAL_NOTE = "no AUROC/AUPR: the test set has no good images to compare the defects with"


def auroc_note(n_test: int, n_test_anomalies: int) -> str | None:
    """Why a run has no AUROC, in one line (None when it has one)."""
    if n_test and n_test_anomalies == 0:
        return NO_ANOMALY_NOTE
    if n_test and n_test_anomalies == n_test:
        return NO_NORMAL_NOTE
    return None


def method_image_size(config: TrainConfig) -> int:
    """The backbone's input size for a training-free method (images are resized to it)."""
    return int(config.image_size or DEFAULT_IMAGE_SIZE)


def _nearest_centroid_accuracy(arrays: dict, bundle) -> float:
    """Test accuracy of the known (non-anomalous) test rows by their nearest class centroid."""
    emb, label, split = torch.from_numpy(arrays["emb"]), arrays["label"], arrays["split"]
    classes = list(bundle.train_classes)
    to_cls = np.full(len(bundle.class_names), -1, dtype=np.int64)
    to_cls[classes] = np.arange(len(classes))
    train = split == SPLIT_TRAIN
    known = (split == SPLIT_TEST) & ~arrays["anomaly"] & (to_cls[label] >= 0)
    if not known.any():
        return float("nan")
    cents = class_centroids(emb[train], torch.from_numpy(to_cls[label[train]]), len(classes))
    pred = (F.normalize(emb[known], dim=1) @ cents.T).argmax(1).numpy()
    return float((pred == to_cls[label[known]]).mean())


def training_free_metrics(arrays: dict, bundle, config: TrainConfig) -> dict:
    """The summary's metrics, as core.evaluate computes them for a metric run."""
    label, split, is_anom, score = arrays["label"], arrays["split"], arrays["anomaly"], arrays["score"]
    normal = np.isin(label, bundle.normal_classes)
    normal_train, val_normal = (split == SPLIT_TRAIN) & normal, (split == SPLIT_VAL) & normal
    test = split == SPLIT_TEST
    test_known = test & ~is_anom
    curves = anomaly.roc_pr(score[test], is_anom[test])
    threshold = anomaly.PercentileOfNormal(config.threshold_percentile).value(
        score[val_normal] if val_normal.any() else score[normal_train]
    )
    emb = arrays["emb"]
    return {
        "n_train": int((split == SPLIT_TRAIN).sum()),
        "n_val": int((split == SPLIT_VAL).sum()),
        "n_test": int(test.sum()),
        "n_test_anomalies": int(is_anom.sum()),
        "test_accuracy": _nearest_centroid_accuracy(arrays, bundle),
        **retrieval_metrics(emb[test_known], label[test_known], emb[normal_train], label[normal_train]),
        "anomaly_auroc": curves.get("auroc"),
        "anomaly_aupr": curves.get("aupr"),
        "threshold": threshold,
        "threshold_percentile": config.threshold_percentile,
        "mean_feature_norm": float(arrays["norm"][split == SPLIT_TRAIN].mean()),
    }


def train_training_free(
    config: TrainConfig, bundle, writer, device: torch.device
) -> tuple[dict, dict[str, np.ndarray], float]:
    """Fit and score a knn/patch run, write its arrays; returns (metrics, embeddings arrays, seconds)."""
    t0 = time.time()
    size = method_image_size(config)
    patch_config = PatchCoreConfig(image_size=size, pretrained=config.pretrained, max_bank=config.patch_bank)
    method = build_method(
        config.method, size, config.pretrained, config.k, device=device, patch_config=patch_config
    )
    writer.status(phase=f"building the {config.method} method (no training)", progress=0.1)
    arrays = training_free_arrays(
        method, bundle.train, bundle.val, bundle.test, bundle.class_names, bundle.normal_classes
    )
    seconds = time.time() - t0
    writer.status(phase="evaluating", progress=0.9)
    writer.embeddings(**arrays.embeddings)
    writer.method_arrays(**arrays.method)
    if arrays.patch_maps is not None:
        writer.patch_maps(**arrays.patch_maps)
    metrics = training_free_metrics(arrays.embeddings, bundle, config)
    metrics["notices"] = list(arrays.notices)
    return metrics, arrays.embeddings, seconds
