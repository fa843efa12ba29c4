"""The offline pretrained EfficientNet-Lite0: weights load, freezing, inputs, and that the ImageNet
weights make a real difference on real photographs."""

import pytest
import torch

from core.anomaly import knn_cosine_scores, roc_pr
from core.backbones import (
    GLOBAL_DIM,
    N_BLOCKS,
    EfficientNetLite0Embedding,
    EfficientNetLite0Features,
    build_efficientnet_lite0,
    weights_file,
)
from core.features import extract_features
from core.models import build_backbone
from core.synthetic_defects import texture_pair_set


@pytest.fixture(scope="module")
def pretrained_features():
    return EfficientNetLite0Features(pretrained=True, image_size=128)


def test_every_shipped_weight_is_loaded():
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    assert len(state) == 296
    net = build_efficientnet_lite0(pretrained=True)
    loaded = net.state_dict()
    assert set(loaded) == set(state)  # strict=True already refused missing or unexpected keys
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert net.pretrained_from == str(weights_file())


def test_random_init_differs_from_pretrained():
    torch.manual_seed(0)
    net = build_efficientnet_lite0(pretrained=False)
    state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    assert net.pretrained_from is None
    assert not torch.equal(net.state_dict()["_conv_stem.weight"], state["_conv_stem.weight"])


def test_feature_shapes_and_grayscale_equals_repeated_rgb(pretrained_features):
    gray = torch.rand(2, 1, 128, 128)
    with torch.no_grad():
        pooled_gray = pretrained_features(gray)
        pooled_rgb = pretrained_features(gray.repeat(1, 3, 1, 1))
        maps = pretrained_features.feature_maps(gray)
    assert pooled_gray.shape == (2, GLOBAL_DIM)
    torch.testing.assert_close(pooled_gray, pooled_rgb)
    # blocks 1 and 2 (stride 4) and 4 (stride 8)
    assert [tuple(m.shape) for m in maps] == [(2, 24, 32, 32), (2, 24, 32, 32), (2, 40, 16, 16)]


def test_embedding_is_frozen_by_default_and_finetune_unfreezes_last_blocks():
    frozen = EfficientNetLite0Embedding(dim=8)
    assert frozen.frozen
    assert not any(p.requires_grad for p in frozen.features.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    frozen.train()
    assert not frozen.features.training and frozen.head.training  # BatchNorm statistics stay fixed

    tuned = EfficientNetLite0Embedding(dim=8, finetune_blocks=2)
    blocks = tuned.features.net._blocks
    assert all(p.requires_grad for p in blocks[N_BLOCKS - 1].parameters())
    assert all(p.requires_grad for p in blocks[N_BLOCKS - 2].parameters())
    assert not any(p.requires_grad for p in blocks[N_BLOCKS - 3].parameters())
    assert all(p.requires_grad for p in tuned.features.net._conv_head.parameters())
    tuned.train()
    assert blocks[N_BLOCKS - 1].training and not blocks[N_BLOCKS - 3].training
    with pytest.raises(ValueError, match="finetune_blocks"):
        EfficientNetLite0Embedding(dim=8, finetune_blocks=N_BLOCKS + 1)


def test_embedding_head_on_cached_features_matches_full_forward():
    model = EfficientNetLite0Embedding(dim=4, image_size=128).eval()
    x = torch.rand(3, 3, 128, 128)
    with torch.no_grad():
        pooled = torch.from_numpy(extract_features(x, image_size=128, extractor=model.features, device="cpu"))
        torch.testing.assert_close(model.embed_features(pooled), model(x), rtol=1e-4, atol=1e-5)


def test_build_backbone_registers_efficientnet_lite0():
    model = build_backbone("efficientnet-lite0", in_channels=1, dim=16)
    assert isinstance(model, EfficientNetLite0Embedding)
    with torch.no_grad():
        assert model(torch.rand(2, 1, 96, 96)).shape == (2, 16)


def _knn_auroc(features_net: EfficientNetLite0Features, seed: int) -> float:
    data = texture_pair_set("grass", "gravel", n_train=24, n_test_each=10, seed=seed)
    train = extract_features(data.train, image_size=128, extractor=features_net, device="cpu")
    test = extract_features(data.test, image_size=128, extractor=features_net, device="cpu")
    return roc_pr(knn_cosine_scores(test, train, k=5)[0], data.test_anomaly)["auroc"]


def test_pretrained_weights_separate_real_textures_and_random_weights_do_not(pretrained_features):
    """Grass crops are normal, histogram-matched gravel crops are anomalies: only texture differs.
    Measured: pretrained 1.00, random init 0.62."""
    pretrained = _knn_auroc(pretrained_features, seed=0)
    torch.manual_seed(0)
    random_init = _knn_auroc(EfficientNetLite0Features(pretrained=False, image_size=128), seed=0)
    assert pretrained > 0.9
    assert random_init < 0.8
