"""Health check of a finished run: warnings a user should see before trusting its numbers.

Each warning says what went wrong in plain words and what to change. The checks read only what every
run directory holds (the summary and the test rows' scores), so they work on any method and any loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Cosine distances computed in float32 carry rounding noise of a few ulp of 1.0 (eps = 1.19e-7). Scores
# whose bulk sits below this floor cannot be told apart from noise: the embedding has collapsed.
SCORE_NOISE_FLOOR = 1e-6
# The share of test scores that must clear the floor for the score to carry information.
SCORE_SIGNAL_QUANTILE = 0.9
# An AUROC at or below this separates anomalies from normal parts barely better than a coin.
CHANCE_AUROC = 0.6
# Below this closed-set test accuracy the embedding has not learned the known classes.
LOW_ACCURACY = 0.5
# Class names the data loader gives to the reference images added to a one-class upload.
REFERENCE_PREFIX = "ref:"


@dataclass(frozen=True)
class HealthWarning:
    """One problem with a run: ``code`` for tests and filters, ``message`` and ``advice`` for people."""

    code: str
    message: str
    advice: str

    def __str__(self) -> str:
        return f"{self.message} {self.advice}"


def _score_warnings(test_scores: np.ndarray) -> list[HealthWarning]:
    scores = np.asarray(test_scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return []
    if np.ptp(scores) == 0.0:
        return [
            HealthWarning(
                "constant_scores",
                f"Every test image gets the same score ({scores[0]:.3g}), so no threshold can tell "
                "normal from anomalous.",
                "Train again with a larger embedding dimension (64 or more) and more epochs.",
            )
        ]
    bulk = float(np.quantile(scores, SCORE_SIGNAL_QUANTILE))
    if bulk < SCORE_NOISE_FLOOR:
        return [
            HealthWarning(
                "noise_scores",
                f"{SCORE_SIGNAL_QUANTILE:.0%} of the test scores are below {SCORE_NOISE_FLOOR:g}, the "
                "size of floating-point rounding: the embedding has collapsed and the scores are noise.",
                "Train with an embedding dimension of 64 or more and more epochs; use 2-D or 3-D only "
                "to draw the circle or sphere.",
            )
        ]
    return []


def _accuracy_warning(class_names: Sequence[str], normal_classes: Sequence[int]) -> list[HealthWarning]:
    reference = [c for c in class_names if str(c).startswith(REFERENCE_PREFIX)]
    if len(normal_classes) != 1 or not reference:
        return []
    return [
        HealthWarning(
            "reference_accuracy",
            "Test accuracy only measures how well your normal images are told apart from the reference "
            f"images ({len(reference)} reference classes), not how well defects are found.",
            "Judge this run by its AUROC and by the decisions on the Anomaly page.",
        )
    ]


def _low_accuracy_warning(accuracy: float | None, n_classes: int) -> list[HealthWarning]:
    if accuracy is None or n_classes < 2 or not np.isfinite(accuracy) or accuracy >= LOW_ACCURACY:
        return []
    return [
        HealthWarning(
            "low_accuracy",
            f"The model names the right class for only {accuracy:.0%} of the test images of known "
            f"classes: the embedding has not learned them yet, so distances to normal mean little.",
            "Train for more epochs, with an embedding dimension of 64 or more.",
        )
    ]


def _auroc_warning(auroc: float | None, n_anomalies: int | None) -> list[HealthWarning]:
    if n_anomalies == 0 or auroc is None:
        return [
            HealthWarning(
                "no_anomalies",
                "The test set holds no anomalies, so there is no AUROC and the threshold cannot be checked.",
                "Hold out a class as unknown, or add defect images (test/<defect>/ in an MVTec layout).",
            )
        ]
    if not np.isfinite(auroc) or auroc > CHANCE_AUROC:
        return []
    return [
        HealthWarning(
            "chance_auroc",
            f"The score separates anomalies from normal images barely better than chance "
            f"(AUROC {auroc:.3f}; a coin gives 0.5).",
            "Train longer, raise the embedding dimension, or try L2-softmax with α near the "
            "suggested lower bound; for photos use the pretrained backbone.",
        )
    ]


def check_run(summary: dict, test_scores: np.ndarray) -> list[HealthWarning]:
    """Warnings for a run from its ``summary.json`` dict and the scores of its test rows."""
    warnings = _score_warnings(test_scores)
    names, normal = summary.get("class_names") or [], summary.get("normal_classes") or []
    reference_warning = _accuracy_warning(names, normal)
    if not reference_warning:  # accuracy against reference images says nothing about the model's grip
        accuracy = summary.get("test_accuracy")
        n_known = len(summary.get("train_classes") or normal)
        warnings += _low_accuracy_warning(None if accuracy is None else float(accuracy), n_known)
    warnings += reference_warning
    auroc = summary.get("anomaly_auroc")
    warnings += _auroc_warning(None if auroc is None else float(auroc), summary.get("n_test_anomalies"))
    return warnings
