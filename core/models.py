"""Embedding networks. The classifier head lives in core.losses, separate from the backbone, so the
feature descriptor is taken before the classifier, as the L2-softmax paper describes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

MIN_DIM, MAX_DIM = 2, 512


class SmallCNN(nn.Module):
    """3-conv BatchNorm CNN for small grayscale images (MNIST-sized)."""

    def __init__(self, in_channels: int, dim: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, dim)
        # channels-last (NHWC) weights and inputs: oneDNN's own layout for convolutions. A training
        # step is 1.26-1.51x faster on 2 CPU cores (benchmarks/bench_layout.py), with embeddings equal
        # to the plain layout's within 1e-7. Weights and inputs both: channels-last inputs alone
        # were slower than the plain layout.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x.contiguous(memory_format=torch.channels_last)))


def _local_imagenet_weights() -> Path | None:
    """torchvision's ResNet-18 ImageNet file, only if it is already in torch's cache: never download."""
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    found = sorted(hub.glob("resnet18-*.pth")) if hub.is_dir() else []
    return found[0] if found else None


class ResNet18Embedding(nn.Module):
    """torchvision ResNet-18 with its fc replaced by an embedding layer (RGB uploads)."""

    def __init__(self, in_channels: int, dim: int, pretrained: bool = True) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        self.pretrained_from: str | None = None
        weights_file = _local_imagenet_weights() if pretrained else None
        if weights_file is not None:
            net.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
            self.pretrained_from = str(weights_file)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        net.fc = nn.Linear(net.fc.in_features, dim)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_backbone(
    arch: str,
    in_channels: int,
    dim: int,
    pretrained: bool = True,
    finetune_blocks: int = 0,
    image_size: int | None = None,
    width: int = 32,
) -> nn.Module:
    """The embedding network `arch`. smallcnn takes `width` (its first layer's channels).
    efficientnet-lite0 takes `finetune_blocks` (0: frozen backbone)
    and `image_size` (its static "same" padding is computed for that input size)."""
    if not MIN_DIM <= dim <= MAX_DIM:
        raise ValueError(f"embedding dim must be between {MIN_DIM} and {MAX_DIM}, got {dim}")
    if arch == "smallcnn":
        return SmallCNN(in_channels, dim, width=int(width))
    if arch == "resnet18":
        return ResNet18Embedding(in_channels, dim, pretrained=pretrained)
    if arch == "efficientnet-lite0":  # grayscale is repeated to 3 channels inside the network
        from core.backbones import DEFAULT_IMAGE_SIZE, EfficientNetLite0Embedding

        return EfficientNetLite0Embedding(
            dim,
            pretrained=pretrained,
            finetune_blocks=int(finetune_blocks),
            image_size=int(image_size or DEFAULT_IMAGE_SIZE),
        )
    raise ValueError(f"unknown architecture '{arch}'; choose smallcnn, resnet18 or efficientnet-lite0")


def default_arch(channels: int, image_size: int) -> str:
    """smallcnn for MNIST-like digits (grayscale, at most 64 px), pretrained EfficientNet-Lite0 for
    photos."""
    return "smallcnn" if channels == 1 and image_size <= 64 else "efficientnet-lite0"


class MetricModel(nn.Module):
    """Backbone producing pre-normalisation features, plus the loss head (which may own class weights).
    `score_shifts`: the anomaly score averages each image's embedding over one-pixel shifts
    (core.score_shifts); a setting of the run, rebuilt from its config, not a weight."""

    def __init__(self, backbone: nn.Module, head: nn.Module, score_shifts: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.score_shifts = bool(score_shifts)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)
