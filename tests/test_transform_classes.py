"""Rotated and mirrored copies of the known classes as extra classes (core.transform_classes)."""

import json

import numpy as np
import pytest
import torch

from core.config import TrainConfig
from core.distributed import DistInfo, LossStep
from core.losses import L2SoftmaxHead
from core.modelio import build_model, load_model
from core.train import train
from core.transform_classes import (
    TRANSFORM_SETS,
    TransformedClassesHead,
    class_multiplier,
    transform_images,
    with_transform_classes,
)


def test_the_eight_transforms_are_the_squares_symmetries():
    img = torch.arange(9.0).reshape(1, 1, 3, 3)  # no symmetry of its own: 8 distinct images
    a = img[0, 0].numpy()
    rotations = [np.rot90(a, k) for k in range(4)]
    expected = [*rotations, a[:, ::-1], a[::-1, :], a.T, np.rot90(a, 2).T]
    got = [transform_images(img, t)[0, 0].numpy() for t in range(8)]
    for t in range(8):
        np.testing.assert_array_equal(got[t], expected[t], err_msg=f"transform {t}")
    assert len({g.tobytes() for g in got}) == 8
    with pytest.raises(ValueError, match="0-7"):
        transform_images(img, 8)


def test_expand_batch_labels_each_copy_by_its_transform():
    torch.manual_seed(0)
    head = TransformedClassesHead(L2SoftmaxHead(4, 3 * 8), num_classes=3, transforms="dihedral")
    x = torch.randn(40, 1, 5, 5)
    y = torch.randint(0, 3, (40,))
    x_all, y_all = head.expand_batch(x, y)
    assert x_all.shape == (80, 1, 5, 5)
    torch.testing.assert_close(x_all[:40], x)
    assert torch.equal(y_all[:40], y)
    for i in range(40):
        t = int(y_all[40 + i]) // 3
        assert 1 <= t <= 7 and int(y_all[40 + i]) % 3 == int(y[i])
        torch.testing.assert_close(x_all[40 + i], transform_images(x[i : i + 1], t)[0])
    with pytest.raises(ValueError, match="square"):
        head.expand_batch(torch.randn(2, 1, 5, 6), y[:2])


def test_the_head_shows_only_the_upright_classes():
    inner = L2SoftmaxHead(4, 3 * 4, alpha=5.0)
    head = with_transform_classes(inner, 3, "rotations")
    emb = torch.randn(6, 4)
    assert head.logits(emb).shape == (6, 3)
    torch.testing.assert_close(head.logits(emb), inner.logits(emb)[:, :3])
    assert head.class_weights().shape == (3, 4)
    assert head.has_alpha and head.alpha_value == pytest.approx(5.0)
    labels = torch.tensor([0, 5, 11, 2, 7, 3])  # training labels reach into the extra classes
    torch.testing.assert_close(head(emb, labels), inner(emb, labels))
    assert with_transform_classes(inner, 3, "none") is inner
    assert [class_multiplier(name) for name in TRANSFORM_SETS] == [1, 4, 8]


def test_loss_step_trains_on_the_batch_and_its_copies():
    torch.manual_seed(0)
    backbone = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(25, 4))

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = TransformedClassesHead(L2SoftmaxHead(4, 2 * 8), 2, "dihedral")

        def embed(self, x):
            return self.backbone(x)

    model = Model().train()
    x, y = torch.randn(8, 1, 5, 5), torch.tensor([0, 1] * 4)
    torch.manual_seed(1)
    loss, value, emb = LossStep(model, DistInfo(), gather=False)(x, y)
    torch.manual_seed(1)
    x_all, y_all = model.head.expand_batch(x, y)
    torch.testing.assert_close(loss, model.head(model.embed(x_all), y_all))
    assert emb.shape == (8, 4) and value is loss
    model.eval()  # evaluation embeds the batch alone
    _, _, emb_eval = LossStep(model, DistInfo(), gather=False)(x, y)
    torch.testing.assert_close(emb_eval, model.embed(x))


def test_a_run_with_transform_classes_trains_saves_and_reloads(tmp_path):
    run_dir = tmp_path / "rot"
    cfg = TrainConfig(
        epochs=3,
        max_train_samples=800,
        projection="none",
        run_dir=str(run_dir),
        holdout_classes=["8", "9"],
        transform_classes="rotations",
        dim=16,
    )
    summary = train(cfg)
    assert json.loads((run_dir / "config.json").read_text())["transform_classes"] == "rotations"
    model, meta = load_model(run_dir / "model.pt")
    assert isinstance(model.head, TransformedClassesHead) and model.head.num_classes == 8
    assert model.head.head.fc.out_features == 32
    assert np.load(run_dir / "embeddings.npz")["class_weights"].shape == (8, 16)
    # accuracy is over the 8 upright known classes; 3 epochs on 800 digits are far above 1/8
    assert 0.4 < summary["test_accuracy"] <= 1.0
    # a run saved before the option existed (no transform_classes in its config) rebuilds plainly
    old = {**meta, "config": {k: v for k, v in meta["config"].items() if k != "transform_classes"}}
    assert isinstance(build_model(old).head, L2SoftmaxHead)


def test_losses_without_a_classifier_refuse_it():
    with pytest.raises(ValueError, match="needs a loss with a classifier; triplet"):
        TrainConfig(loss="triplet", transform_classes="dihedral").validate()
    with pytest.raises(ValueError, match="unknown transform_classes 'mirror'"):
        TrainConfig(transform_classes="mirror").validate()
