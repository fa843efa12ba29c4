"""Build a model from a config, describe it for model.pt, and rebuild + load it from model.pt alone.

model.pt is loaded with `torch.load(weights_only=True)`: it holds tensors and plain containers only,
so a run directory from elsewhere cannot run code when it is opened."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from core.config import TrainConfig
from core.losses import build_head
from core.models import MetricModel, build_backbone, default_arch
from core.score_shifts import NO_SHIFT, SHIFT_OFFSETS, mean_direction, shift_images
from core.transform_classes import class_multiplier, transform_images, with_transform_classes

# inference batch: 256 small-CNN images stay in the CPU's caches, measured 1.3x faster than 1024
EMBED_BATCH = 256


def resolve_arch(arch: str, channels: int, image_size: int) -> str:
    return arch if arch != "auto" else default_arch(channels, image_size)


def new_model(
    config: TrainConfig, channels: int, image_size: int, num_classes: int, alpha: float
) -> tuple[MetricModel, str]:
    """A freshly initialised model for `config` (backbone + loss head) and the architecture it chose."""
    arch = resolve_arch(config.arch, channels, image_size)
    backbone = build_backbone(
        arch,
        channels,
        config.dim,
        pretrained=config.pretrained,
        finetune_blocks=config.finetune_blocks,
        image_size=image_size,
        width=config.width,
    )
    head = _loss_head(asdict(config), num_classes, alpha)
    return MetricModel(backbone, head, score_shifts=config.score_shifts), arch


def _loss_head(cfg: dict, num_classes: int, alpha: float) -> torch.nn.Module:
    """The loss head a config (as a dict: a fresh run's, or the one model.pt carries) asks for, with
    its rotated/mirrored extra classes when it has them (runs made before that option: none)."""
    transforms = cfg.get("transform_classes") or "none"
    head = build_head(
        cfg["loss"],
        int(cfg["dim"]),
        num_classes * class_multiplier(transforms),
        alpha=alpha,
        alpha_trainable=bool(cfg["alpha_trainable"]),
        margin=cfg["margin"],
        mining=cfg["mining"],
        scale=cfg["scale"],
    )
    return with_transform_classes(head, num_classes, transforms)


def checkpoint_meta(config: TrainConfig, bundle, alpha: float, arch: str) -> dict:
    """Everything but the weights that model.pt carries, enough for `build_model` to rebuild it."""
    return {
        "config": asdict(config),
        "class_names": bundle.class_names,
        "train_classes": bundle.train_classes,
        "normal_classes": bundle.normal_classes,
        "channels": bundle.channels,
        "image_size": bundle.image_size,
        "alpha": alpha,
        "arch": arch,
    }


def build_model(meta: dict) -> torch.nn.Module:
    """Rebuild the model from what model.pt carries (config + class counts); weights not loaded."""
    cfg = meta["config"]
    # the architecture the run resolved (an old run's "auto" may have meant another default)
    arch = meta.get("arch") or resolve_arch(cfg["arch"], meta["channels"], meta["image_size"])
    backbone = build_backbone(
        arch,
        meta["channels"],
        int(cfg["dim"]),
        pretrained=False,  # the weights come from model.pt
        finetune_blocks=int(cfg.get("finetune_blocks") or 0),
        image_size=meta["image_size"],
        width=int(cfg.get("width") or 32),  # runs made before the option: 32
    )
    head = _loss_head(cfg, len(meta["train_classes"]), float(meta["alpha"]))
    # runs made before the option scored without shifts
    return MetricModel(backbone, head, score_shifts=bool(cfg.get("score_shifts")))


def load_model(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Load model.pt safely (weights_only) and rebuild the model from the file alone."""
    payload = torch.load(path, map_location=device, weights_only=True)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    model = build_model(meta)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, meta


@torch.no_grad()
def embed_all(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device, batch: int = EMBED_BATCH
) -> torch.Tensor:
    """Pre-normalisation embeddings of every image of x, in eval mode, on the CPU."""
    model.eval()
    if len(x) > batch:  # folding costs a copy of the model: worth it from a second batch on
        model = batchnorm_folded(model)
    out = [model.embed(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0)


def batchnorm_folded(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of `model` in which every BatchNorm2d that directly follows a Conv2d in an
    nn.Sequential is folded into that convolution's weights (torch's fuse_conv_bn_eval): the same
    function within float rounding (1e-7 on the small CNN), and an inference pass 1.5x faster there,
    because a BatchNorm costs a full pass over its activations. `model` itself is not changed, and is
    returned as it is when it has no such pair (no copy to pay for)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if next(_conv_batchnorm_pairs(model), None) is None:
        return model
    folded = copy.deepcopy(model).eval()
    for seq, conv_name, bn_name in list(_conv_batchnorm_pairs(folded)):
        seq._modules[conv_name] = fuse_conv_bn_eval(seq._modules[conv_name], seq._modules[bn_name])
        seq._modules[bn_name] = torch.nn.Identity()
    return folded


def _conv_batchnorm_pairs(model: torch.nn.Module):
    """(sequential, conv name, BatchNorm name) for each Conv2d directly followed by a BatchNorm2d with
    running statistics inside an nn.Sequential of `model`."""
    for seq in model.modules():
        if isinstance(seq, torch.nn.Sequential):
            names = list(seq._modules)
            for conv_name, bn_name in zip(names, names[1:]):
                conv, bn = seq._modules[conv_name], seq._modules[bn_name]
                if (
                    isinstance(conv, torch.nn.Conv2d)
                    and type(bn) is torch.nn.BatchNorm2d
                    and bn.track_running_stats
                ):
                    yield seq, conv_name, bn_name


def score_views(model: torch.nn.Module) -> tuple[int, ...]:
    """The views of an image that the anomaly score compares (core.transform_classes); (0,): as is."""
    return tuple(getattr(model.head, "score_views", (0,)))


def score_offsets(model: torch.nn.Module) -> tuple[tuple[int, int], ...]:
    """The pixel shifts of each view that the anomaly score averages over (core.score_shifts)."""
    return SHIFT_OFFSETS if getattr(model, "score_shifts", False) else NO_SHIFT


def scores_plain_embedding(model: torch.nn.Module) -> bool:
    """True when the anomaly score compares model.embed itself (one view, no shifts)."""
    return score_views(model) == (0,) and score_offsets(model) == NO_SHIFT


def scoring_embedding(
    embed: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    views: tuple[int, ...],
    offsets: tuple[tuple[int, int], ...],
    upright: torch.Tensor | None = None,
) -> torch.Tensor:
    """What the score compares for images x, with `embed` (images -> embeddings): per view, the mean
    direction of the shifted copies' embeddings; then the views joined. embed_for_scoring and the
    exported graph both compute it here. `upright`: embed(x) when the caller has it already."""

    def copy_embedding(t: int, offset: tuple[int, int]) -> torch.Tensor:
        if t == 0 and offset == (0, 0) and upright is not None:
            return upright
        return embed(shift_images(transform_images(x, t), *offset))

    return join_views([mean_direction([copy_embedding(t, o) for o in offsets]) for t in views])


@torch.no_grad()
def embed_for_scoring(
    model: torch.nn.Module,
    x: torch.Tensor,
    device: torch.device,
    batch: int = EMBED_BATCH,
    upright: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """What the kNN score compares when the model scores more than one view of an image, or shifted
    copies: each view's unit embedding (the mean direction over its shifted copies) side by side,
    divided by sqrt(views), so that the cosine similarity of two images is the mean of their views'
    similarities. None when the model's plain embedding is scored.
    `upright`: x's embeddings when the caller has them already (one pass of the network fewer)."""
    if scores_plain_embedding(model):
        return None
    return scoring_embedding(
        lambda images: embed_all(model, images, device, batch),
        x,
        score_views(model),
        score_offsets(model),
        upright,
    )


def join_views(embeddings: list[torch.Tensor]) -> torch.Tensor:
    """Views' embeddings [N, d] each -> [N, views * d]: unit vectors side by side / sqrt(views), whose
    cosine similarity is the mean of the views' similarities (also inside the exported graph)."""
    return (
        torch.cat([torch.nn.functional.normalize(e, dim=1) for e in embeddings], 1) / len(embeddings) ** 0.5
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
