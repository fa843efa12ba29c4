"""core.health: the warnings a run shows before its numbers are trusted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.health import check_run

DEMO = Path(__file__).resolve().parent.parent / "checkpoints" / "demo-l2softmax-2d"
DIGITS = [str(i) for i in range(10)]


def _codes(summary: dict, scores: np.ndarray) -> list[str]:
    return [w.code for w in check_run(summary, scores)]


def test_shipped_demo_run_is_healthy():
    summary = json.loads((DEMO / "summary.json").read_text())
    with np.load(DEMO / "embeddings.npz", allow_pickle=False) as z:
        test_scores = z["score"][z["split"] == 2]
    assert check_run(summary, test_scores) == []


def test_collapsed_scores_at_rounding_noise_are_flagged():
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 3e-7, size=200).astype(np.float32)  # what a collapsed 2-D run produced
    summary = {"class_names": DIGITS, "normal_classes": [0, 1], "anomaly_auroc": 0.9, "n_test_anomalies": 20}
    warnings = check_run(summary, noise)
    assert [w.code for w in warnings] == ["noise_scores"]
    assert "64" in warnings[0].advice  # says what to change
    # the same spread scaled into a usable range is fine
    assert _codes(summary, noise * 1e4) == []


def test_constant_scores_are_flagged():
    summary = {"class_names": DIGITS, "normal_classes": [0], "anomaly_auroc": 0.5, "n_test_anomalies": 5}
    assert _codes(summary, np.full(50, 0.25)) == ["constant_scores", "chance_auroc"]


def test_accuracy_against_reference_classes_is_explained():
    names = ["good", "ref:camera", "ref:coffee"]
    summary = {"class_names": names, "normal_classes": [0], "anomaly_auroc": 0.95, "n_test_anomalies": 9}
    assert _codes(summary, np.linspace(0.01, 0.5, 40)) == ["reference_accuracy"]
    # two normal classes: accuracy is a real closed-set figure again
    summary["normal_classes"] = [0, 1]
    assert _codes(summary, np.linspace(0.01, 0.5, 40)) == []


def test_chance_auroc_and_missing_anomalies():
    base = {"class_names": DIGITS, "normal_classes": [0, 1, 2]}
    scores = np.linspace(0.01, 0.5, 40)
    assert _codes({**base, "anomaly_auroc": 0.55, "n_test_anomalies": 4}, scores) == ["chance_auroc"]
    assert _codes({**base, "anomaly_auroc": 0.61, "n_test_anomalies": 4}, scores) == []
    assert _codes({**base, "anomaly_auroc": None, "n_test_anomalies": 0}, scores) == ["no_anomalies"]


def test_degenerate_run_accuracy_is_flagged():
    """What a 2-D, one-epoch run on the digits gave (accuracy 0.33, AUROC 0.72): scores look usable,
    but the classes were never learned."""
    summary = {
        "class_names": DIGITS,
        "normal_classes": list(range(6)),
        "test_accuracy": 0.33,
        "anomaly_auroc": 0.717,
        "n_test_anomalies": 400,
    }
    warnings = check_run(summary, np.linspace(1e-7, 2e-5, 100))
    assert [w.code for w in warnings] == ["low_accuracy"]
    assert "33%" in warnings[0].message
    assert _codes({**summary, "test_accuracy": 0.62}, np.linspace(1e-7, 2e-5, 100)) == []
