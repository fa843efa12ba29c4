"""The demo runs shipped in checkpoints/ load on a fresh clone, and their summaries agree with the
embeddings stored beside them (so the pages show numbers that the data behind them supports)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core import anomaly
from core.data import load_data
from core.runs import load_run
from core.train import load_model

ROOT = Path(__file__).resolve().parent.parent / "checkpoints"
DEMOS = sorted(p for p in ROOT.glob("demo-*") if (p / "summary.json").exists())
PATCH_DEMO = ROOT / "demo-patch-brick"
METRIC_DEMOS = [p for p in DEMOS if p != PATCH_DEMO]


def test_the_promised_demos_ship():
    names = {p.name for p in DEMOS}
    assert {"demo-softmax-2d", "demo-l2softmax-2d", "demo-l2softmax-3d", PATCH_DEMO.name} <= names
    for p in DEMOS:
        size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
        assert size < 2 * 2**20, f"{p.name} is {size} bytes"


@pytest.mark.parametrize("run_dir", METRIC_DEMOS, ids=lambda p: p.name)
def test_summary_matches_stored_embeddings(run_dir):
    run = load_run(run_dir)
    s = run.summary
    assert run.status["state"] == "completed"
    assert s["n_train"] == int((run.split == 0).sum()) and s["n_test"] == int((run.split == 2).sum())
    assert run.emb.shape[1] == s["dim"]
    np.testing.assert_allclose(run.norm, np.linalg.norm(run.emb, axis=1), rtol=1e-5)
    assert s["mean_feature_norm"] == pytest.approx(float(run.norm[run.split == 0].mean()), rel=1e-5)
    test = run.split == 2
    curves = anomaly.roc_pr(run.score[test], run.anomaly[test])
    assert s["anomaly_auroc"] == pytest.approx(curves["auroc"], abs=1e-6)
    ref = run.normal_train_mask
    recomputed = anomaly.knn_cosine_scores(run.emb[test], run.emb[ref], k=s["k"])[0]
    np.testing.assert_allclose(recomputed, run.score[test], atol=1e-5)
    # test accuracy from the stored class weights (classifier heads): argmax of W f
    if run.class_weights.size and s["loss"] in ("softmax", "l2softmax"):
        model, _ = load_model(run_dir / "model.pt")
        with torch.no_grad():
            logits = model.head.logits(torch.from_numpy(run.emb[test & ~run.anomaly]))
        to_cls = {c: i for i, c in enumerate(s["train_classes"])}
        truth = np.array([to_cls[c] for c in run.label[test & ~run.anomaly]])
        assert s["test_accuracy"] == pytest.approx(
            float((logits.argmax(1).numpy() == truth).mean()), abs=1e-6
        )


@pytest.mark.parametrize("run_dir", METRIC_DEMOS, ids=lambda p: p.name)
def test_model_reproduces_stored_embeddings(run_dir):
    run = load_run(run_dir)
    model, meta = load_model(run_dir / "model.pt")
    cfg = meta["config"]
    bundle = load_data(cfg["data"], holdout_classes=cfg["holdout_classes"] or None, seed=cfg["seed"])
    with torch.no_grad():
        emb = model.embed(bundle.test.x[:32]).numpy()
    np.testing.assert_allclose(emb, run.emb[np.flatnonzero(run.split == 2)[:32]], atol=1e-4)


def test_patch_demo_rescores_its_shipped_images(monkeypatch):
    """The patch demo's images ship inside it, named relative to the repository root; its memory bank
    (method.npz) scores them as the run did, and its summary agrees with its stored scores."""
    from core.images import load_images
    from core.method_scoring import score_images
    from core.score import input_shape

    monkeypatch.chdir(ROOT.parent)  # the app runs from the repository root
    run = load_run(PATCH_DEMO)
    s = run.summary
    assert (s["method"], s["epochs"], run.config["patch_bank"]) == ("patch", 0, 600)
    assert len(np.load(PATCH_DEMO / "method.npz", allow_pickle=False)["bank"]) == 600
    test = run.split == 2
    assert s["n_test_anomalies"] == int(run.anomaly[test].sum()) > 0 and (~run.anomaly[test]).any()
    curves = anomaly.roc_pr(run.score[test], run.anomaly[test])
    assert s["anomaly_auroc"] == pytest.approx(curves["auroc"], abs=1e-6) and s["anomaly_auroc"] > 0.9
    sources = [str(x) for x in run.source]
    assert all(not x.startswith("/") and Path(x).is_file() for x in sources), sources[:3]
    rows = [np.flatnonzero(test & ~run.anomaly)[0], np.flatnonzero(test & run.anomaly)[0]]
    size, channels = input_shape(run)
    images, kept, skipped = load_images([sources[r] for r in rows], size, channels)
    assert kept == [0, 1] and not skipped
    scored = score_images(run, images, with_maps=True)
    np.testing.assert_allclose(scored.scores, run.score[rows], rtol=1e-4)
    assert run.anomaly[rows].tolist() == [False, True] and scored.scores[1] > s["threshold"]
    assert scored.maps is not None and scored.maps.shape == (2, size, size)


def test_demo_sweep_results_match_its_runs():
    import csv

    from core import sweep

    out = ROOT / "demo-sweep"
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["loss"], r["alpha"]) for r in rows} >= {
        ("softmax", ""),
        ("l2softmax", "1"),
        ("l2softmax", "64"),
    }
    runs_root = sweep.runs_root(out)
    for r in rows:
        assert r["state"] == "completed"
        run = load_run(runs_root / r["run_id"])
        assert float(r["anomaly_auroc"]) == pytest.approx(run.summary["anomaly_auroc"], abs=1e-9)
        test = run.split == 2
        assert float(r["anomaly_auroc"]) == pytest.approx(
            anomaly.roc_pr(run.score[test], run.anomaly[test])["auroc"], abs=1e-6
        )
        size = sum(f.stat().st_size for f in (runs_root / r["run_id"]).rglob("*") if f.is_file())
        assert size < 2 * 2**20
