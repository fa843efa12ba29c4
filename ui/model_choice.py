"""The Train page's method and backbone section: scoring method (metric / knn / patch), backbone,
ImageNet weights and fine-tune depth, each with a one-line explanation. Returns a ``ModelChoice``."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from core.config import ARCHS, FINETUNE_BLOCKS_MAX, METHODS, TrainConfig
from core.defaults import DataProfile, suggested_settings
from core.methods import METHOD_HELP, TRAINING_FREE_METHODS

METHOD_LABELS = {
    "metric": "metric: train an embedding",
    "knn": "knn: pretrained features",
    "patch": "patch: where is the defect",
}
ARCH_LABELS = {
    "smallcnn": "small CNN",
    "resnet18": "ResNet-18",
    "efficientnet-lite0": "EfficientNet-Lite0",
}
ARCH_HELP = {
    "smallcnn": "a small network trained from scratch: fast, right for small grayscale digits",
    "resnet18": "ResNet-18 trained from scratch: slow on a CPU, needs many images",
    "efficientnet-lite0": "ImageNet-pretrained EfficientNet-Lite0 (weights ship offline): strong "
    "features for photos",
}
PRETRAINED_ARCHS = ("efficientnet-lite0",)
SMALLCNN_WIDTHS = (32, 48, 64)


@dataclass
class ModelChoice:
    method: str = "metric"
    arch: str = "auto"
    pretrained: bool = True
    finetune_blocks: int = 0
    resolved_arch: str = "smallcnn"  # what "auto" stands for with this data
    width: int = 32  # smallcnn's first-layer channels
    precision: str = "fp32"
    score_shifts: bool = False  # core.score_shifts

    @property
    def trains_embedding(self) -> bool:
        return self.method not in TRAINING_FREE_METHODS

    @property
    def trains_on_images(self) -> bool:
        """False when a frozen pretrained backbone trains only its head, on cached features."""
        frozen = self.resolved_arch in PRETRAINED_ARCHS and self.finetune_blocks == 0
        return self.trains_embedding and not frozen


def auto_arch(profile: DataProfile | None, mvtec: bool = False) -> str:
    """What ``arch=auto`` picks for this data (core's rule: photos, or any MVTec layout, get the
    pretrained EfficientNet-Lite0; digits the small CNN)."""
    photo = profile is not None and (profile.is_photo or mvtec)
    return "efficientnet-lite0" if photo else "smallcnn"


def _arch_label(arch: str, profile: DataProfile | None, mvtec: bool) -> str:
    if arch == "auto":
        resolved = auto_arch(profile, mvtec)
        kind = "photos" if resolved == "efficientnet-lite0" else "digits"
        extra = "pretrained " if resolved in PRETRAINED_ARCHS else ""
        return f"auto: {extra}{ARCH_LABELS[resolved]} (for {kind})"
    return ARCH_LABELS.get(arch, arch)


def model_section(profile: DataProfile | None, mvtec: bool = False) -> ModelChoice:
    """Method, backbone, weights and fine-tune depth (widget keys: method, arch, pretrained,
    finetune_blocks)."""
    st.subheader("2 · Method and backbone")
    defaults = TrainConfig()
    if st.session_state.get("_method_default_for") != profile:  # new data: its suggested method
        st.session_state["_method_default_for"] = profile
        suggestion = suggested_settings(profile) if profile is not None else {}
        st.session_state["method"] = suggestion.get("method", defaults.method)
    method = st.radio(
        "Scoring method",
        METHODS,
        key="method",
        horizontal=True,
        format_func=lambda m: METHOD_LABELS.get(m, m),
        captions=[METHOD_HELP[m] for m in METHODS],
    )
    choice = ModelChoice(method=method)
    c1, c2, c3 = st.columns([2.2, 1, 1.4])
    if choice.trains_embedding:
        choice.arch = c1.selectbox(
            "Backbone", ARCHS, key="arch", format_func=lambda a: _arch_label(a, profile, mvtec)
        )
    else:
        choice.arch = "efficientnet-lite0"
        c1.markdown(f"**Backbone**: {ARCH_LABELS['efficientnet-lite0']} (this method needs its features)")
    resolved = auto_arch(profile, mvtec) if choice.arch == "auto" else choice.arch
    choice.resolved_arch = resolved
    c1.caption(ARCH_HELP[resolved])
    if resolved in PRETRAINED_ARCHS:
        choice.pretrained = c2.toggle(
            "ImageNet weights",
            value=defaults.pretrained,
            key="pretrained",
            help="Off: the same network with random weights (only to see what pretraining brings).",
        )
        if choice.trains_embedding:
            choice.finetune_blocks = int(
                c3.number_input(
                    "Fine-tune blocks",
                    0,
                    FINETUNE_BLOCKS_MAX,
                    defaults.finetune_blocks,
                    key="finetune_blocks",
                    help="0 trains only the embedding head on features computed once (seconds).",
                )
            )
            c3.caption(
                "0: the backbone stays frozen (fast)."
                if choice.finetune_blocks == 0
                else f"Unfreezes the last {choice.finetune_blocks} block(s), with augmentation: "
                "slower (minutes on a CPU; CUDA is used when present)."
            )
    _network_knobs(choice, defaults, c2, c3)
    return choice


def _network_knobs(
    choice: ModelChoice,
    defaults: TrainConfig,
    c2: st.delta_generator.DeltaGenerator,
    c3: st.delta_generator.DeltaGenerator,
) -> None:
    """How the network trains and scores: the small CNN's width, bf16, and the shifts at scoring time
    (widget keys: width, precision_bf16, score_shifts)."""
    if choice.resolved_arch == "smallcnn" and choice.trains_embedding:
        choice.width = int(
            c2.selectbox(
                "Network width",
                SMALLCNN_WIDTHS,
                index=SMALLCNN_WIDTHS.index(defaults.width),
                key="width",
                help="Channels of the small CNN's first layer (the next layers have 2x and 4x). "
                "48 or 64: a little more accurate; training takes about 1.8x and 2.6x as long "
                "(measured in bf16 on a CPU).",
            )
        )
    if choice.trains_on_images:
        bf16 = c3.toggle(
            "Mixed precision (bf16)",
            value=defaults.precision == "bf16",
            key="precision_bf16",
            help="Trains in bfloat16 where it is safe (weights and the loss stay float32): about "
            "1.8-1.9x faster on a CPU with bfloat16 instructions (measured); GPUs support it too. On CPUs "
            "without those instructions it can be slower.",
        )
        choice.precision = "bf16" if bf16 else "fp32"
    if choice.resolved_arch == "smallcnn" and choice.trains_embedding:  # measured on digits only
        choice.score_shifts = c3.toggle(
            "Score over 1-pixel shifts",
            value=defaults.score_shifts,
            key="score_shifts",
            help="The anomaly score compares each image's mean embedding over itself and 4 copies moved "
            "by one pixel: steadier scores for unusual digits (AUROC 0.9957 → 0.9961 on full-MNIST "
            "open-set). Scoring takes 5x as long.",
        )
