"""Test-time shifts (core.score_shifts): a run made with score_shifts scores each image by the mean
direction of its embeddings over itself and four one-pixel shifts, in evaluation, in core.score and in
the export alike; runs without the option score as before."""

from pathlib import Path

import numpy as np
import pytest
import torch

from core.augment import augment_with
from core.config import TrainConfig
from core.losses import L2SoftmaxHead
from core.modelio import embed_for_scoring, load_model, score_offsets, scores_plain_embedding
from core.models import MetricModel, SmallCNN
from core.runs import load_run
from core.score import score_images
from core.score_shifts import SHIFT_OFFSETS, mean_direction, shift_images
from core.train import train
from core.transform_classes import TransformedClassesHead, transform_images
from tests.test_score_views import assert_export_computes_embed_for_scoring

CPU = torch.device("cpu")


def _shifted_by_loop(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """[C, H, W] moved pixel by pixel: out[r + rows, c + cols] = image[r, c]; the rest 0."""
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    for r in range(h):
        for c in range(w):
            if 0 <= r + rows < h and 0 <= c + cols < w:
                out[:, r + rows, c + cols] = image[:, r, c]
    return out


def test_shift_images_moves_every_pixel_by_one_and_fills_with_zero():
    x = torch.rand(2, 1, 9, 9)
    for rows, cols in SHIFT_OFFSETS:
        got = shift_images(x, rows, cols)
        for i in range(2):
            torch.testing.assert_close(got[i], _shifted_by_loop(x[i], rows, cols), atol=0, rtol=0)
        # the same move as training's augmentation at a whole pixel (its shift runs the other way)
        u = torch.tensor([[0.5, 0.5, 0.5 - cols / 4, 0.5 - rows / 4]]).expand(2, 4)
        torch.testing.assert_close(got, augment_with(x, u), atol=1e-5, rtol=0)
    assert shift_images(x, 0, 0) is x


def test_mean_direction_is_the_normalised_sum_of_unit_vectors():
    a, b = torch.tensor([[3.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [0.0, 7.0]])
    got = mean_direction([a, b])
    torch.testing.assert_close(got, torch.tensor([[2**-0.5, 2**-0.5], [0.0, 1.0]]))


def _model(transforms: str | None, shifts: bool) -> MetricModel:
    torch.manual_seed(0)
    if transforms is None:
        head = L2SoftmaxHead(8, 3)
    else:
        head = TransformedClassesHead(L2SoftmaxHead(8, 24), 3, transforms)
    return MetricModel(SmallCNN(1, 8, width=8), head, score_shifts=shifts).eval()


@pytest.mark.parametrize("transforms", [None, "rotations"])
def test_embed_for_scoring_matches_a_loop_over_views_and_shifts(transforms):
    assert scores_plain_embedding(_model(None, shifts=False))
    model, x = _model(transforms, shifts=True), torch.rand(4, 1, 28, 28)
    assert not scores_plain_embedding(model) and score_offsets(model) == SHIFT_OFFSETS
    views = (0,) if transforms is None else (0, 2)
    got = embed_for_scoring(model, x, CPU)
    assert got.shape == (4, 8 * len(views))
    with torch.no_grad():
        for i in range(4):
            parts = []
            for t in views:
                image = transform_images(x[i : i + 1], t)[0]
                total = torch.zeros(8)
                for rows, cols in SHIFT_OFFSETS:
                    e = model.embed(_shifted_by_loop(image, rows, cols)[None])[0]
                    total += e / e.norm()
                parts.append(total / total.norm())
            want = torch.cat(parts) / len(views) ** 0.5
            torch.testing.assert_close(got[i], want, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def shifted_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("shifts") / "run"
    cfg = TrainConfig(
        epochs=2, max_train_samples=600, projection="none", run_dir=str(run_dir), holdout_classes=["8", "9"],
        transform_classes="rotations", dim=8, width=8, score_shifts=True,
    )  # fmt: skip
    train(cfg)
    return run_dir


def test_the_run_keeps_the_option_and_scores_the_shifted_embedding(shifted_run):
    model, meta = load_model(shifted_run / "model.pt")
    assert meta["config"]["score_shifts"] is True and score_offsets(model) == SHIFT_OFFSETS
    run = load_run(shifted_run)
    assert run.score_emb.shape == (len(run.emb), 16)
    # the stored joint embedding is the shifted one: recompute it from model.pt and the images
    from core.data import load_data

    cfg = run.config
    bundle = load_data("mnist-5k", holdout_classes=cfg["holdout_classes"], seed=cfg["seed"])
    test = np.flatnonzero(run.split == 2)[:30]
    images = bundle.test.x[:30]
    np.testing.assert_allclose(embed_for_scoring(model, images, CPU).numpy(), run.score_emb[test], atol=1e-5)
    unshifted = embed_for_scoring(MetricModel(model.backbone, model.head), images, CPU)
    assert np.abs(unshifted.numpy() - run.score_emb[test]).max() > 1e-3  # the shifts change it
    ref = run.score_emb[run.normal_train_mask]
    for r in test[:15]:  # brute force: the mean cosine distance to the 5 nearest normal training rows
        dist = sorted(1 - float(ref[i] @ run.score_emb[r]) for i in range(len(ref)))
        assert run.score[r] == pytest.approx(np.mean(dist[:5]), abs=1e-5)
    scored = score_images(run, list(images.numpy()))  # core.score, from model.pt and the images alone
    np.testing.assert_allclose(scored.scores, run.score[test], atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_the_export_averages_the_shifts_and_scores_like_core_score(shifted_run, tmp_path, fmt):
    assert_export_computes_embed_for_scoring(shifted_run, tmp_path, fmt, dim=16)


def test_score_shifts_is_refused_for_methods_without_a_trained_embedding():
    with pytest.raises(ValueError, match="score_shifts applies to metric runs only"):
        TrainConfig(method="knn", score_shifts=True).validate()


def test_runs_made_before_the_option_score_without_shifts():
    model_file = Path(__file__).resolve().parent.parent / "checkpoints" / "demo-l2softmax-2d" / "model.pt"
    model, meta = load_model(model_file)
    assert "score_shifts" not in meta["config"]  # a shipped run from before the option
    assert score_offsets(model) == ((0, 0),) and scores_plain_embedding(model)
