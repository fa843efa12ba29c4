import numpy as np
import pytest
import torch

from core import anomaly


def brute_force_knn_scores(query, ref, k, exclude_self=False):
    scores = []
    for i, q in enumerate(query):
        dists = []
        for j, r in enumerate(ref):
            if exclude_self and i == j:
                continue
            cos = float(np.dot(q, r) / (np.linalg.norm(q) * np.linalg.norm(r)))
            dists.append(1.0 - cos)
        scores.append(np.mean(sorted(dists)[:k]))
    return np.array(scores)


@pytest.mark.parametrize("chunk", [3, 4096])
def test_knn_scores_match_brute_force(chunk):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(17, 5)), rng.normal(size=(40, 5))
    scores, idx, dist = anomaly.knn_cosine_scores(q, r, k=5, chunk=chunk)
    np.testing.assert_allclose(scores, brute_force_knn_scores(q, r, 5), atol=1e-5)
    assert idx.shape == (17, 5) and (np.diff(dist, axis=1) >= -1e-6).all()


def test_knn_leave_one_out_excludes_self():
    rng = np.random.default_rng(1)
    r = rng.normal(size=(30, 4))
    scores, idx, _ = anomaly.knn_cosine_scores(r, r, k=3, exclude_self=True, chunk=7)
    np.testing.assert_allclose(scores, brute_force_knn_scores(r, r, 3, exclude_self=True), atol=1e-5)
    assert not (idx == np.arange(30)[:, None]).any()


def test_score_ignores_feature_norm():
    rng = np.random.default_rng(2)
    q, r = rng.normal(size=(5, 8)), rng.normal(size=(20, 8))
    a = anomaly.knn_cosine_scores(q, r)[0]
    b = anomaly.knn_cosine_scores(q * 37.0, torch.tensor(r * 0.01))[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_decision_metrics_counts():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    is_anom = np.array([0, 0, 1, 0, 1, 1], bool)
    m = anomaly.decision_metrics(scores, is_anom, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["fpr"] == pytest.approx(1 / 3)


def test_suggested_thresholds_are_sensible():
    rng = np.random.default_rng(3)
    normal, anom = rng.normal(0.2, 0.05, 500), rng.normal(0.6, 0.05, 100)
    scores = np.concatenate([normal, anom])
    labels = np.r_[np.zeros(500, bool), np.ones(100, bool)]
    s = anomaly.suggest_thresholds(normal[:200], scores, labels)
    assert s["p95"] < s["p99"]
    assert s["p95"] == pytest.approx(np.percentile(normal[:200], 95))
    best = anomaly.decision_metrics(scores, labels, s["best_f1"])
    assert best["f1"] > 0.98
    grid = max(anomaly.decision_metrics(scores, labels, t)["f1"] for t in np.linspace(0, 1, 201))
    assert best["f1"] >= grid - 1e-9
    youden = anomaly.decision_metrics(scores, labels, s["youden"])
    assert youden["recall"] - youden["fpr"] > 0.97


def test_roc_pr_empty_without_both_classes():
    assert anomaly.roc_pr(np.array([0.1, 0.2]), np.array([False, False])) == {}


# ------------------------------------------------------------------ threshold rules, hand-computed


def test_percentile_of_normal_threshold_by_hand():
    rule = anomaly.PercentileOfNormal(95)
    assert rule.name == "p95" and rule.description == "flags 5 % of normal parts"
    assert rule.value(np.arange(21.0)) == 19.0  # 0.95 * 20 = index 19 of 0..20
    assert anomaly.PercentileOfNormal(50).value(np.array([1.0, 2.0, 3.0, 4.0])) == 2.5
    assert anomaly.PercentileOfNormal(99).value(np.array([])) is None
    with pytest.raises(ValueError, match="percentile"):
        anomaly.PercentileOfNormal(120)


def test_best_f1_threshold_by_hand():
    # flag >= 0.3: tp 3, fp 1 -> F1 6/7, the best (>= 0.7: 0.8; >= 0.2: 0.75; >= 0.6: 2/3)
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    is_anom = np.array([0, 0, 1, 0, 1, 1], bool)
    t = anomaly.BestF1().value(scores[~is_anom], scores, is_anom)
    assert t == np.nextafter(0.3, -np.inf)  # strictly below 0.3, so score 0.3 is flagged
    assert anomaly.decision_metrics(scores, is_anom, t)["f1"] == pytest.approx(6 / 7)


def test_youden_threshold_by_hand():
    # flag >= 0.4: tpr 1, fpr 1/4 -> J 0.75 (>= 0.9: 0.5; >= 0.5: 0.25)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.9])
    is_anom = np.array([0, 0, 0, 1, 0, 1], bool)
    t = anomaly.YoudenJ().value(scores[~is_anom], scores, is_anom)
    assert t == np.nextafter(0.4, -np.inf)
    m = anomaly.decision_metrics(scores, is_anom, t)
    assert m["recall"] - m["fpr"] == pytest.approx(0.75)


def test_label_rules_are_none_when_degenerate():
    no_anomaly = np.array([0.1, 0.2, 0.3])
    for rule in (anomaly.BestF1(), anomaly.YoudenJ()):
        assert rule.value(no_anomaly, no_anomaly, np.zeros(3, bool)) is None
    # the best F1 flags everything (threshold just below 0): no meaningful threshold
    scores, is_anom = np.array([0.0, 0.0, 0.5]), np.array([1, 1, 0], bool)
    assert anomaly.BestF1().value(scores[~is_anom], scores, is_anom) is None
    assert "best_f1" not in anomaly.suggest_thresholds(scores[~is_anom], scores, is_anom)


def test_fixed_threshold():
    rule = anomaly.FixedThreshold(0.42, source="threshold.json")
    assert rule.value() == 0.42 and "0.42" in rule.description
    assert anomaly.FixedThreshold(float("nan")).value() is None
