"""The facts a finished run shows under its progress bar: headline figures and where the time went."""

from __future__ import annotations

from ui.progress import summary_facts
from ui.text import fmt_duration


def test_a_finished_run_reports_its_training_and_projection_time():
    facts = summary_facts(
        {
            "test_accuracy": 0.99125,
            "anomaly_auroc": None,
            "train_seconds": 1237.0,
            "projection_seconds": 454.3,
        }
    )
    assert facts == [
        "test accuracy 0.991",
        f"training took {fmt_duration(1237.0)}",
        f"projections (PCA, UMAP) took {fmt_duration(454.3)}",
    ]


def test_a_run_without_projection_says_nothing_about_it():
    facts = summary_facts({"test_accuracy": 0.5, "anomaly_auroc": 0.75, "alpha": 16, "train_seconds": 12})
    assert facts == [
        "test accuracy 0.500",
        "anomaly AUROC 0.750",
        "α 16.00",
        f"training took {fmt_duration(12)}",
    ]
    assert not any("projection" in f for f in facts)
