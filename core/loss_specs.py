"""What each loss needs and offers (`LossSpec`), answerable from a name alone without building a head
or importing torch: configs, results rows and pages ask `loss_spec(name)` instead of comparing names.
`core.losses` re-exports everything here."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES: tuple[str, ...] = ("softmax", "l2softmax", "triplet", "npair", "arcface", "cosface", "normface")
MINING: tuple[str, ...] = ("random", "semihard", "hard")
PML_LOSSES: tuple[str, ...] = ("npair", "arcface", "cosface", "normface")

DEFAULT_TRIPLET_MARGIN = 0.2
# PML's own ArcFaceLoss defaults: margin in degrees (28.6 deg ~= 0.5 rad) and scale 64.
DEFAULT_ARCFACE_MARGIN_DEG = 28.6
DEFAULT_ARCFACE_SCALE = 64.0
DEFAULT_COSFACE_MARGIN = 0.35
DEFAULT_COSFACE_SCALE = 64.0
# Project choice (PML's default temperature 0.05 would be scale 20): scale 16 <=> temperature 0.0625.
DEFAULT_NORMFACE_SCALE = 16.0


@dataclass(frozen=True)
class Knob:
    """A numeric setting of a loss as the Train page offers it: its range, default and meaning."""

    label: str
    low: float
    high: float
    default: float
    step: float
    help: str


_SCALE_HELP = "Norm the normalised features are scaled to."


@dataclass(frozen=True)
class LossSpec:
    """What a loss needs and offers, so callers ask the spec instead of comparing loss names.

    The heads carry the same facts (``needs_sampler``, ``has_alpha``, ``has_classifier``); the spec
    answers them from a name alone (a config, a results row) without building a head.
    """

    name: str
    label: str  # what the UI shows
    colour: str  # one colour per loss in every plot
    has_alpha: bool = False  # features scaled to a fixed norm alpha (L2-softmax)
    has_classifier: bool = False  # a class-weight matrix and logits
    needs_sampler: bool = False  # batches must hold several samples per class (pair/triplet losses)
    on_sphere: bool = True  # embeddings are compared by direction (False: softmax's raw features)
    margin: Knob | None = None  # its margin knob (units differ per loss), None: no margin
    scale: Knob | None = None  # its scale knob, None: no scale
    has_mining: bool = False
    is_baseline: bool = False  # the plain reference every comparison is drawn against

    @property
    def has_margin(self) -> bool:
        return self.margin is not None

    @property
    def has_scale(self) -> bool:
        return self.scale is not None


LOSS_SPECS: dict[str, LossSpec] = {
    s.name: s
    for s in (
        LossSpec("softmax", "Softmax (no normalisation)", "#d62728", has_classifier=True, on_sphere=False,
                 is_baseline=True),
        LossSpec("l2softmax", "L2-softmax (features on a sphere of radius α)", "#1f77b4", has_alpha=True,
                 has_classifier=True),
        LossSpec("triplet", "Triplet (margin, mining)", "#2ca02c", needs_sampler=True, has_mining=True,
                 margin=Knob("Margin", 0.0, 2.0, DEFAULT_TRIPLET_MARGIN, 0.05,
                             "In squared Euclidean distance between unit vectors (range 0–4).")),
        LossSpec("npair", "N-pair", "#7f7f7f", needs_sampler=True),
        LossSpec("arcface", "ArcFace (additive angular margin)", "#9467bd", has_classifier=True,
                 margin=Knob("Margin m (degrees)", 0.0, 90.0, DEFAULT_ARCFACE_MARGIN_DEG, 0.1,
                             "Additive angular margin, in degrees (28.6° = 0.5 rad, the paper's m)."),
                 scale=Knob("Scale s", 1.0, 128.0, DEFAULT_ARCFACE_SCALE, 1.0, _SCALE_HELP)),
        LossSpec("cosface", "CosFace (additive cosine margin)", "#8c564b", has_classifier=True,
                 margin=Knob("Margin m (cosine)", 0.0, 1.0, DEFAULT_COSFACE_MARGIN, 0.05,
                             "Subtracted from the target class cosine."),
                 scale=Knob("Scale s", 1.0, 128.0, DEFAULT_COSFACE_SCALE, 1.0, _SCALE_HELP)),
        LossSpec("normface", "NormFace (normalised softmax)", "#e377c2", has_classifier=True,
                 scale=Knob("Scale s", 1.0, 128.0, DEFAULT_NORMFACE_SCALE, 1.0,
                            "Inverse temperature of the normalised softmax.")),
    )
}  # fmt: skip
assert tuple(LOSS_SPECS) == LOSSES


def loss_spec(name: str) -> LossSpec:
    """The spec of loss ``name``; ValueError naming the choices for an unknown name."""
    try:
        return LOSS_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}") from None
