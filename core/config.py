"""`TrainConfig`: every setting of a training run, written once.

Each field carries its command-line flag and help in `field(metadata=...)`; `add_config_arguments`
builds the argparse options from them and `config_from_args` reads them back, so adding a setting is
a one-place change here. Imports nothing heavy: `core.jobs` and the pages load it cheaply."""

from __future__ import annotations

import argparse
import time
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from core.fsutil import read_json
from core.loss_specs import MINING, loss_spec

DEFAULT_K = 5  # neighbours for the anomaly score (core.anomaly uses the same default)
PROJECTIONS = ("auto", "pca", "umap", "none")
BUNDLED_DATA = ("mnist-5k", "mnist")
REFERENCE_KEYWORDS = ("auto", "none", "mnist-5k")
DIM_RANGE = (2, 512)
WIDTH_RANGE = (8, 256)
PRECISIONS = ("fp32", "bf16")
ARCHS = ("auto", "smallcnn", "resnet18", "efficientnet-lite0")
# metric: train an embedding (any loss) and score by kNN distance to normal; knn: pretrained global
# features, no training; patch: PatchCore-style memory bank of pretrained patch features.
METHODS = ("metric", "knn", "patch")
FINETUNE_BLOCKS_MAX = 16  # EfficientNet-Lite0 has 16 MBConv blocks
# core.transform_classes: name -> the transforms (indices into its `transform_images`) whose copies of
# each known class become extra classes
TRANSFORM_SETS: dict[str, tuple[int, ...]] = {
    "none": (),
    "rotations": (1, 2, 3),
    "dihedral": (1, 2, 3, 4, 5, 6, 7),
}


def opt(
    default: Any = MISSING,
    help: str = "",
    cli: bool = True,
    choices: tuple[str, ...] | None = None,
    **argparse_kw: Any,
) -> Any:
    """A config field with its command-line option. `cli=False`: no flag (set by code only).
    A bool defaulting to True gets a `--no-NAME` flag; a list[str] is given comma-separated.
    `choices`: `validate()` refuses any other value with a one-line error naming them (the CLI's
    `error:` line too, rather than argparse's usage dump)."""
    meta = {"help": help, "cli": cli, "choices": choices, "argparse": argparse_kw}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    data: str = opt("mnist-5k", "mnist-5k (bundled), mnist, a folder or a .zip")
    data_root: str = opt("data")
    loss: str = opt("l2softmax", "softmax, l2softmax, triplet, npair, arcface, cosface, normface")
    # a number, or "auto" for the paper's lower bound with p=0.9
    alpha: str = opt("16", "L2-softmax scale, or 'auto' for the paper's bound (p=0.9)")
    alpha_trainable: bool = opt(False)
    dim: int = opt(64)
    epochs: int = opt(8)
    batch_size: int = opt(128)
    lr: float = opt(1e-3)
    weight_decay: float = opt(5e-4)
    margin: float | None = opt(None)
    mining: str = opt("semihard", "random, semihard or hard (triplet)")
    scale: float | None = opt(None, "ArcFace/CosFace/NormFace scale")
    m_per_class: int = opt(8)
    holdout_classes: list[str] = opt([], "comma-separated class names used as anomalies")
    reference: str = opt("auto", "auto, none, mnist-5k or PATH")
    seed: int = opt(0)
    arch: str = opt(
        "auto",
        "auto (smallcnn for digits, pretrained efficientnet-lite0 for photos), smallcnn, resnet18 "
        "or efficientnet-lite0",
        choices=ARCHS,
    )
    width: int = opt(32, "smallcnn: channels of its first layer (48 or 64: more capacity, slower)")
    precision: str = opt(
        "fp32",
        "fp32, or bf16 (mixed precision: 1.8-1.9x faster training measured on a CPU with bfloat16 "
        "instructions; GPUs support it too)",
        choices=PRECISIONS,
    )
    pretrained: bool = opt(True, "ImageNet weights for efficientnet-lite0/resnet18 (--no-pretrained: random)")
    finetune_blocks: int = opt(
        0, "efficientnet-lite0: unfreeze the last N blocks (slower; 0 trains the head on cached features)"
    )
    method: str = opt(
        "metric",
        "metric (trained embedding + kNN), knn (pretrained features, no training) or patch "
        "(PatchCore-style patch memory bank, with defect maps)",
        choices=METHODS,
    )
    # patch: the memory bank keeps 10 % of the good patches, at most this many (core.patchcore's default)
    patch_bank: int = opt(5000, "patch: at most N patches in the memory bank (fewer: smaller, faster)")
    image_size: int | None = opt(None)
    augment: bool = opt(True)
    # core.transform_classes: rotated/mirrored copies of the known classes as extra classes
    transform_classes: str = opt(
        "none",
        "none, rotations or dihedral: train rotated (and mirrored) copies of each known class as "
        "classes of their own, which sharpens open-set detection of digits (2x the training time)",
        choices=tuple(TRANSFORM_SETS),
    )
    k: int = opt(DEFAULT_K, "neighbours for the anomaly score")
    # core.score_shifts; off keeps a run's score what it was before the option
    score_shifts: bool = opt(
        False,
        "metric runs: score each image by its mean embedding over itself and 4 copies moved by one "
        "pixel (steadier scores for unusual digits; 5x the scoring time)",
    )
    threshold_percentile: float = opt(95.0)
    # auto: PCA, plus UMAP when dim > 3; "pca", "umap" or "none"
    projection: str = opt("auto", "auto, pca, umap or none (dim > 3)")
    device: str = opt("auto")
    # 0: all; a small number makes smoke runs and tests fast
    max_train_samples: int = opt(0, "use at most N training images (smoke runs)")
    # local processes (GPUs); > 1: core.jobs launches torchrun --nproc_per_node nproc
    nproc: int = opt(1, cli=False)
    run_dir: str = opt("")
    name: str = opt("")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        loss_spec(self.loss)  # ValueError naming the choices
        if str(self.alpha) != "auto":
            try:
                a = float(self.alpha)
            except ValueError:
                raise ValueError(f"alpha must be a positive number or 'auto', got '{self.alpha}'") from None
            if not a > 0:
                raise ValueError(f"alpha must be positive, got {self.alpha}")
        if not DIM_RANGE[0] <= int(self.dim) <= DIM_RANGE[1]:
            raise ValueError(f"dim must be between {DIM_RANGE[0]} and {DIM_RANGE[1]}, got {self.dim}")
        if not WIDTH_RANGE[0] <= int(self.width) <= WIDTH_RANGE[1]:
            raise ValueError(f"width must be between {WIDTH_RANGE[0]} and {WIDTH_RANGE[1]}, got {self.width}")
        for name in ("epochs", "batch_size", "nproc", "patch_bank"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.mining not in MINING:
            raise ValueError(f"unknown mining '{self.mining}'; choose random, semihard or hard")
        if not 0 <= int(self.finetune_blocks) <= FINETUNE_BLOCKS_MAX:
            raise ValueError(f"finetune_blocks must be between 0 and {FINETUNE_BLOCKS_MAX}")
        if self.transform_classes != "none" and not loss_spec(self.loss).has_classifier:
            raise ValueError(f"transform_classes needs a loss with a classifier; {self.loss} has none")
        if self.score_shifts and self.method != "metric":
            raise ValueError(f"score_shifts applies to metric runs only, not method {self.method}")
        if self.projection not in PROJECTIONS:
            raise ValueError("projection must be auto, pca, umap or none")
        for f in fields(self):
            allowed = f.metadata.get("choices")
            if allowed and getattr(self, f.name) not in allowed:
                value = getattr(self, f.name)
                raise ValueError(f"unknown {f.name} '{value}'; choose one of: {', '.join(allowed)}")


def parse_list(s: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c'] (comma-separated command-line lists)."""
    return [p.strip() for p in s.split(",") if p.strip()]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option(f: Any, hint: Any, default: Any) -> tuple[str, dict]:
    """The argparse flag and keywords of one config field, from its type and default."""
    kw: dict[str, Any] = {"help": f.metadata["help"] or None, **f.metadata["argparse"]}
    if hint is bool:
        if default:
            return "--no-" + f.name.replace("_", "-"), {**kw, "action": "store_false", "dest": f.name}
        return _flag(f.name), {**kw, "action": "store_true"}
    if typing.get_origin(hint) is list:
        return _flag(f.name), {**kw, "type": parse_list, "default": ",".join(default)}
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    kind = args[0] if args else hint
    return _flag(f.name), {**kw, "type": kind, "default": default}


def cli_fields() -> list:
    return [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per config field that has a flag, in field order."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    for f in cli_fields():
        flag, kw = _option(f, hints[f.name], getattr(defaults, f.name))
        parser.add_argument(flag, **kw)


def default_run_dir(cfg: TrainConfig) -> str:
    return str(Path("checkpoints") / time.strftime(f"%Y%m%d-%H%M%S-{cfg.loss}"))


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config of parsed arguments: `--config FILE` (core.jobs) wins, with `--run-dir` applied."""
    if getattr(args, "config", None):
        cfg = TrainConfig.from_dict(read_json(args.config))
        if args.run_dir:
            cfg.run_dir = args.run_dir
        return cfg
    cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in cli_fields()})
    cfg.alpha = str(cfg.alpha)
    if not cfg.run_dir:
        cfg.run_dir = default_run_dir(cfg)
    cfg.validate()
    return cfg


def check_inputs(cfg: TrainConfig) -> None:
    """Fail fast on paths that do not exist, before any status file is written."""
    if cfg.data not in BUNDLED_DATA and not Path(cfg.data).exists():
        raise ValueError(f"data path not found: {cfg.data}")
    if cfg.reference not in REFERENCE_KEYWORDS and not Path(cfg.reference).exists():
        raise ValueError(f"reference path not found: {cfg.reference}")


def resolve_alpha(config: TrainConfig, num_classes: int) -> tuple[float, str | None]:
    """Numeric alpha, and a notice when 'auto' chose the paper's bound."""
    from core.losses import auto_alpha

    if str(config.alpha) == "auto":
        a = auto_alpha(num_classes)
        return (
            a,
            f"alpha auto: the paper's lower bound log(p(C-2)/(1-p)) with p=0.9, C={num_classes} -> {a:.2f}",
        )
    return float(config.alpha), None
