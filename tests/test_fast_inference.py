"""The small CNN's channels-last layout and embed_all's BatchNorm folding are speed-ups only: they must
compute the same embeddings as the plain network, and leave the caller's model as it was."""

import pytest
import torch

from core.losses import L2SoftmaxHead
from core.modelio import EMBED_BATCH, batchnorm_folded, embed_all
from core.models import MetricModel, SmallCNN, build_backbone


def _trained_statistics(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """BatchNorm statistics and affine weights far from their defaults, so that folding is tested on
    something other than the identity."""
    torch.manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 3 + 0.2)
    return model.eval()


def _plain_forward(cnn: SmallCNN, x: torch.Tensor) -> torch.Tensor:
    """The small CNN computed layer by layer in the default (contiguous) layout."""
    plain = SmallCNN(1, cnn.fc.out_features, cnn.features[0].out_channels)
    plain.load_state_dict(cnn.state_dict())
    plain.to(memory_format=torch.contiguous_format).eval()
    h = x.contiguous()
    for layer in plain.features:
        h = layer(h)
    return plain.fc(h)


def test_the_small_cnn_is_channels_last_and_computes_what_the_plain_layout_does():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 28, 28)
    cnn = _trained_statistics(SmallCNN(1, 16, width=32), x)
    assert cnn.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out, plain = cnn(x), _plain_forward(cnn, x)
    assert torch.allclose(out, plain, atol=1e-5 * plain.abs().max())
    assert not torch.equal(out, torch.zeros_like(out))


def test_folding_batchnorm_keeps_the_embeddings_and_leaves_the_model_alone():
    torch.manual_seed(0)
    x = torch.rand(EMBED_BATCH + 40, 1, 28, 28)  # more than one batch: embed_all folds
    model = MetricModel(SmallCNN(1, 16, width=32), L2SoftmaxHead(16, 6, alpha=4.0))
    _trained_statistics(model.backbone, x)
    folded = batchnorm_folded(model)
    kinds = [type(m).__name__ for m in folded.backbone.features]
    assert "BatchNorm2d" not in kinds and kinds.count("Identity") == 3
    # the caller's model still has its BatchNorms, and its weights are untouched
    assert [type(m).__name__ for m in model.backbone.features].count("BatchNorm2d") == 3
    with torch.no_grad():
        reference = model.embed(x)
        assert torch.allclose(folded.embed(x), reference, atol=1e-5 * reference.abs().max())
    embedded = embed_all(model, x, torch.device("cpu"))
    assert torch.allclose(embedded, reference, atol=1e-5 * reference.abs().max())


# ResNet's downsampling shortcuts are Sequential(conv, BatchNorm) and get folded; EfficientNet-Lite's
# blocks keep their layers as attributes, which folding leaves as they are
@pytest.mark.parametrize("arch, folds", [("resnet18", 3), ("efficientnet-lite0", 0)])
def test_folding_keeps_the_embeddings_of_the_photo_backbones(arch, folds):
    torch.manual_seed(0)
    backbone = build_backbone(arch, 3, 16, pretrained=False, finetune_blocks=1, image_size=64)
    x = torch.rand(6, 3, 64, 64)
    model = MetricModel(_trained_statistics(backbone, x), L2SoftmaxHead(16, 3, alpha=4.0)).eval()
    folded = batchnorm_folded(model)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == n_bn - folds
    assert (folded is model) == (folds == 0)  # nothing to fold: no copy
    with torch.no_grad():
        reference = model.embed(x)
        assert torch.allclose(folded.embed(x), reference, atol=1e-4 * reference.abs().max())
