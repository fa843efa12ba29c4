"""Training end to end on small slices of the bundled digits: artefacts, reload, summary values."""

import json

import numpy as np
import pytest
import torch

from core.runs import load_run
from core.train import TrainConfig, load_model, train


def quick_config(run_dir, **fields) -> TrainConfig:
    """A one-epoch config on a few hundred digits without projection; ``fields`` override."""
    settings = {"epochs": 1, "max_train_samples": 256, "projection": "none", "run_dir": str(run_dir)}
    return TrainConfig(**{**settings, **fields})


@pytest.fixture(scope="module")
def l2_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "l2"
    events = []
    cfg = quick_config(
        run_dir,
        loss="l2softmax",
        alpha="8",
        dim=16,
        epochs=2,
        max_train_samples=600,
        projection="pca",
        holdout_classes=["6", "7", "8", "9"],
    )
    summary = train(cfg, events.append)
    return run_dir, summary, events


def test_run_directory_holds_every_artefact(l2_run):
    run_dir, summary, _ = l2_run
    for name in (
        "config.json",
        "status.json",
        "metrics.jsonl",
        "model.pt",
        "embeddings.npz",
        "summary.json",
        "projection.npz",
    ):
        assert (run_dir / name).is_file(), name
    on_disk = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "loss",
        "alpha",
        "dim",
        "epochs",
        "n_train",
        "n_test",
        "test_accuracy",
        "precision_at_1",
        "map_at_r",
        "anomaly_auroc",
        "anomaly_aupr",
        "threshold",
        "threshold_percentile",
        "samples_per_second",
        "projection_seconds",  # the projection phase reports its time
    ):
        assert key in on_disk, key
    assert on_disk["projection_seconds"] > 0
    assert on_disk["loss"] == "l2softmax" and on_disk["alpha"] == 8.0 and on_disk["dim"] == 16
    assert on_disk["n_train"] == 600
    assert 0.0 <= on_disk["anomaly_auroc"] <= 1.0 and on_disk["n_test_anomalies"] > 0
    # 2 epochs on 600 digits of 6 classes already separate them far above chance (1/6)
    assert on_disk["test_accuracy"] > 0.5


def test_events_report_progress(l2_run):
    _, _, events = l2_run
    steps = [e for e in events if e["event"] == "step"]
    epochs = [e for e in events if e["event"] == "epoch"]
    assert len(epochs) == 2 and steps[-1]["progress"] == pytest.approx(1.0)
    assert all(k in steps[0] for k in ("epoch", "step", "loss", "accuracy", "samples_per_s"))
    assert [e["step"] for e in steps] == list(range(1, len(steps) + 1))


def test_checkpoint_reloads_with_weights_only_and_reproduces_embeddings(l2_run):
    run_dir, _, _ = l2_run
    model, meta = load_model(run_dir / "model.pt")
    run = load_run(run_dir)
    assert meta["normal_classes"] == [0, 1, 2, 3, 4, 5]
    from core.data import load_data

    bundle = load_data("mnist-5k", holdout_classes=["6", "7", "8", "9"], seed=0)
    with torch.no_grad():
        emb = model.embed(bundle.test.x[:50]).numpy()
    test_rows = np.flatnonzero(run.split == 2)[:50]
    np.testing.assert_allclose(emb, run.emb[test_rows], atol=1e-4)


def test_l2softmax_features_have_norm_alpha(l2_run):
    run_dir, _, _ = l2_run
    model, _ = load_model(run_dir / "model.pt")
    f = model.embed(torch.rand(8, 1, 28, 28))
    scaled = model.head.scale_features(f)
    torch.testing.assert_close(scaled.norm(dim=1), torch.full((8,), 8.0), rtol=1e-5, atol=1e-5)


def test_embeddings_file_contents(l2_run):
    run_dir, summary, _ = l2_run
    run = load_run(run_dir)
    n = len(run.label)
    assert run.emb.shape == (n, 16)
    np.testing.assert_allclose(run.norm, np.linalg.norm(run.emb, axis=1), rtol=1e-5)
    assert set(np.unique(run.split)) == {0, 1, 2}
    assert run.anomaly[run.split == 2].any() and not run.anomaly[run.split != 2].any()
    assert set(run.label[run.anomaly]) == {6, 7, 8, 9}
    assert run.source[0].startswith("mnist-5k#")
    assert run.class_weights.shape == (6, 16)
    assert np.isfinite(run.score).all()
    assert run.projection["pca"].shape == (n, 2)
    # the suggested threshold is the named percentile of normal validation scores
    val_normal = (run.split == 1) & ~run.anomaly
    assert summary["threshold"] == pytest.approx(np.percentile(run.score[val_normal], 95), rel=1e-5)


def test_status_completed_only_through_run_job(tmp_path):
    from core.train import run_job

    cfg = quick_config(tmp_path / "r", loss="softmax", dim=2, max_train_samples=200)
    assert run_job(cfg) == 0
    st = json.loads((tmp_path / "r" / "status.json").read_text())
    assert st["state"] == "completed" and st["ended"] >= st["started"]


@pytest.mark.parametrize("loss", ["triplet", "npair", "arcface", "cosface", "normface"])
def test_every_loss_trains_and_reloads(tmp_path, loss):
    cfg = quick_config(tmp_path / loss, loss=loss, dim=8, batch_size=64, holdout_classes=["9"])
    summary = train(cfg)
    assert np.isfinite(summary["test_accuracy"]) and summary["anomaly_auroc"] is not None
    model, _ = load_model(tmp_path / loss / "model.pt")
    assert model.embed(torch.rand(2, 1, 28, 28)).shape == (2, 8)


def test_alpha_auto_uses_the_paper_bound(tmp_path, capsys):
    cfg = quick_config(tmp_path / "auto", loss="l2softmax", alpha="auto", dim=4, max_train_samples=128)
    summary = train(cfg)
    assert summary["alpha_initial"] == pytest.approx(np.log(0.9 * 8 / 0.1))
    assert "lower bound" in capsys.readouterr().out


def test_trainable_alpha_moves(tmp_path):
    cfg = quick_config(tmp_path / "ta", loss="l2softmax", alpha="2", alpha_trainable=True, dim=4, lr=1e-2)
    summary = train(cfg)
    assert summary["alpha"] != pytest.approx(2.0)


def test_projection_includes_umap_and_umap_on_a_sphere():
    from core.train import compute_projection

    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(size=(60, 8)) + 6 * np.eye(8)[i] for i in range(4)])
    out = compute_projection(emb, "auto")
    assert out["pca"].shape == (240, 2) and out["umap"].shape == (240, 2)
    np.testing.assert_allclose(np.linalg.norm(out["umap_sphere"], axis=1), 1.0, rtol=1e-5)
    # clusters stay together on the sphere: each point's nearest neighbour is from its own cluster
    s = out["umap_sphere"]
    nearest = np.argsort(-(s @ s.T), axis=1)[:, 1]
    labels = np.repeat(np.arange(4), 60)
    assert (labels[nearest] == labels).mean() > 0.95


def test_evaluate_cli_rewrites_a_runs_embeddings_and_summary(l2_run, tmp_path, capsys):
    import shutil

    from core import evaluate

    run_dir, summary, _ = l2_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "embeddings.npz").unlink()
    stale = {**json.loads((copy / "summary.json").read_text()), "test_accuracy": -1.0, "threshold": -1.0}
    (copy / "summary.json").write_text(json.dumps(stale))

    assert evaluate.main(["--run", str(copy)]) == 0
    before, after = np.load(run_dir / "embeddings.npz"), np.load(copy / "embeddings.npz")
    assert before.files == after.files
    for key in before.files:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    rewritten = json.loads((copy / "summary.json").read_text())
    assert rewritten["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert rewritten["threshold"] == pytest.approx(summary["threshold"])
    assert rewritten["train_seconds"] == summary["train_seconds"]  # training facts are kept

    assert evaluate.main(["--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "missing" in err
