"""A run trained with rotated copies as classes scores two views of each image: the image and the image
turned by 180° (core.transform_classes.SCORE_VIEWS, core.modelio.embed_for_scoring), in evaluation, in
core.score and in the export alike."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import TrainConfig
from core.export import MODEL_FILES, export_run
from core.losses import L2SoftmaxHead
from core.modelio import embed_all, embed_for_scoring, score_views
from core.models import MetricModel, SmallCNN
from core.runs import load_run, load_run_model
from core.score import score_images
from core.train import train
from core.transform_classes import TransformedClassesHead, transform_images
from tests.test_export import _assert_same_scores, _images, _run_script

CPU = torch.device("cpu")


def _model(transforms: str | None) -> MetricModel:
    torch.manual_seed(0)
    if transforms is None:
        return MetricModel(SmallCNN(1, 8, width=8), L2SoftmaxHead(8, 3)).eval()
    head = TransformedClassesHead(L2SoftmaxHead(8, 3 * 8), 3, transforms)
    return MetricModel(SmallCNN(1, 8, width=8), head).eval()


def test_the_joint_embeddings_cosine_is_the_mean_of_the_two_views():
    assert score_views(_model("dihedral")) == score_views(_model("rotations")) == (0, 2)
    assert (
        score_views(_model(None)) == (0,)
        and embed_for_scoring(_model(None), torch.rand(2, 1, 28, 28), CPU) is None
    )
    model, x = _model("dihedral"), torch.rand(6, 1, 28, 28)
    joint = embed_for_scoring(model, x, CPU)
    assert joint.shape == (6, 16)
    up, turned = embed_all(model, x, CPU), embed_all(model, transform_images(x, 2), CPU)
    for i in range(6):
        for j in range(6):
            views = [torch.cosine_similarity(e[i], e[j], dim=0) for e in (up, turned)]
            torch.testing.assert_close(joint[i] @ joint[j], (views[0] + views[1]) / 2, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def rotated_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("views") / "run"
    cfg = TrainConfig(
        epochs=2, max_train_samples=600, projection="none", run_dir=str(run_dir), holdout_classes=["8", "9"],
        transform_classes="rotations", dim=8, width=8,
    )  # fmt: skip
    train(cfg)
    return run_dir


def test_the_run_stores_and_scores_the_joint_embedding(rotated_run):
    run = load_run(rotated_run)
    assert run.emb.shape[1] == 8 and run.score_emb.shape == (len(run.emb), 16)
    assert run.scoring_emb is run.score_emb
    ref = run.score_emb[run.normal_train_mask]
    test = np.flatnonzero(run.split == 2)[:40]
    for r in test:  # brute force: the mean cosine distance to the 5 nearest normal training rows
        dist = sorted(1 - float(ref[i] @ run.score_emb[r]) for i in range(len(ref)))
        assert run.score[r] == pytest.approx(np.mean(dist[:5]), abs=1e-5)
    # core.score, from model.pt and the test images alone, gives the stored scores
    from core.data import load_data

    cfg = run.config
    bundle = load_data("mnist-5k", holdout_classes=cfg["holdout_classes"], seed=cfg["seed"])
    images = bundle.test.x[:40].numpy()
    scored = score_images(run, list(images))
    np.testing.assert_allclose(scored.scores, run.score[test], atol=1e-5)
    assert scored.emb.shape == (40, 8)  # the plain embedding, for the views and the neighbours


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_runs_both_views_and_scores_like_core_score(rotated_run, tmp_path, fmt):
    assert_export_computes_embed_for_scoring(rotated_run, tmp_path, fmt, dim=16)


def assert_export_computes_embed_for_scoring(run_dir: Path, tmp_path: Path, fmt: str, dim: int) -> None:
    """The exported graph computes embed_for_scoring (views and shifts included) against the stored
    reference, and the exported script scores images as core.score does."""
    result = export_run(run_dir, fmt, tmp_path / "out")
    run = load_run(run_dir)
    np.testing.assert_array_equal(
        np.load(result.out_dir / "reference_embeddings.npy"), run.score_emb[run.normal_train_mask]
    )
    assert json.loads((result.out_dir / "scoring.json").read_text())["dim"] == dim
    x = torch.rand(5, 1, 28, 28)
    model_file = str(result.out_dir / MODEL_FILES[fmt])
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model_file, providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    else:
        got = torch.jit.load(model_file)(x)
    want = embed_for_scoring(load_run_model(run_dir), x, CPU)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    files = _images(tmp_path / "images")
    exported = _run_script(result.out_dir / "score_exported.py", files, block_torch=fmt == "onnx")
    _assert_same_scores(run_dir, exported, files, run.threshold)
