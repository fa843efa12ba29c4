"""Metric training on a frozen pretrained backbone: the backbone's pooled features are computed once
per dataset through the feature cache (core.features), and only the embedding head (and the loss head)
is trained, on those features. Any loss works; an epoch over 2,000 images takes well under a second on
a CPU instead of minutes of convolutions.

The run directory is the same as for any metric run: model.pt holds the whole network (frozen backbone
included), so core.score embeds new images with it and gets the embeddings this training evaluated."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from core.config import TrainConfig
from core.features import FeatureSpec, array_fingerprint, cached_extract, files_fingerprint


@dataclass
class CachedFeatures:
    bundle: object  # a DataBundle whose splits' x are pooled features [N, 1280]
    seconds: float  # time to extract (or read) them
    hits: int  # splits read from the cache
    notices: list[str]


class PooledFeatureInput(nn.Module):
    """The embedding head alone, as a backbone whose input is the frozen backbone's pooled features."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(pooled)


def trains_on_cached_features(model: nn.Module, distributed: bool) -> bool:
    """True for a frozen EfficientNet-Lite0 backbone in a single-process run."""
    from core.backbones import EfficientNetLite0Embedding

    backbone = getattr(model, "backbone", None)
    return isinstance(backbone, EfficientNetLite0Embedding) and backbone.frozen and not distributed


def head_model(model: nn.Module) -> nn.Module:
    """A MetricModel sharing `model`'s embedding head and loss head, fed with pooled features."""
    from core.models import MetricModel

    return MetricModel(PooledFeatureInput(model.backbone.head), model.head)


def split_fingerprint(split, channels: int) -> str:
    """The files' contents when every row comes from a file (uploads), else the pixels (digits,
    reference crops); the channel count decides the decoded pixels too."""
    sources = list(split.source)
    if sources and all(Path(s).is_file() for s in sources):
        return f"files:{files_fingerprint(sources)}:c{channels}"
    return f"pixels:{array_fingerprint(split.x)}"


def cached_feature_bundle(
    model: nn.Module, bundle, config: TrainConfig, device: torch.device
) -> CachedFeatures:
    """The bundle with each split's images replaced by the frozen backbone's pooled features, read from
    (or written to) `<data_root>/features/`."""
    backbone = model.backbone
    spec = FeatureSpec(image_size=int(bundle.image_size), layers="global", pretrained=config.pretrained)
    notices: list[str] = []
    t0, hits, splits = time.time(), 0, {}
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        if len(split) == 0:
            splits[name] = replace(split, x=torch.zeros(0, backbone.head[0].in_features))
            continue
        feats, hit = cached_extract(
            split.x,
            config.data_root,
            spec,
            fingerprint=split_fingerprint(split, bundle.channels),
            notices=notices,
            extractor=backbone.features,
            device=device,
        )
        hits += int(hit)
        splits[name] = replace(split, x=torch.from_numpy(feats))
    return CachedFeatures(replace(bundle, **splits), time.time() - t0, hits, notices)
