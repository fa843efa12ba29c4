"""What each loss needs and offers (`LossSpec`), answerable from a name alone without building a head
or importing torch: configs, results rows and pages ask `loss_spec(name)` instead of comparing names.
`core.losses` re-exports everything here."""

from __future__ import annotations

from dataclasses import dataclass

LOSSES: tuple[str, ...] = ("softmax", "l2softmax", "triplet", "npair", "arcface", "cosface", "normface")
MINING: tuple[str, ...] = ("random", "semihard", "hard")
PML_LOSSES: tuple[str, ...] = ("npair", "arcface", "cosface", "normface")


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
    has_margin: bool = False
    has_scale: bool = False
    has_mining: bool = False
    is_baseline: bool = False  # the plain reference every comparison is drawn against


_CLASSIFIER = {"has_classifier": True}
_MARGIN_SCALE = {"has_classifier": True, "has_margin": True, "has_scale": True}
LOSS_SPECS: dict[str, LossSpec] = {
    s.name: s
    for s in (
        LossSpec(
            "softmax",
            "Softmax (no normalisation)",
            "#d62728",
            on_sphere=False,
            is_baseline=True,
            **_CLASSIFIER,
        ),
        LossSpec(
            "l2softmax",
            "L2-softmax (features on a sphere of radius α)",
            "#1f77b4",
            has_alpha=True,
            **_CLASSIFIER,
        ),
        LossSpec(
            "triplet",
            "Triplet (margin, mining)",
            "#2ca02c",
            needs_sampler=True,
            has_margin=True,
            has_mining=True,
        ),
        LossSpec("npair", "N-pair", "#7f7f7f", needs_sampler=True),
        LossSpec("arcface", "ArcFace (additive angular margin)", "#9467bd", **_MARGIN_SCALE),
        LossSpec("cosface", "CosFace (additive cosine margin)", "#8c564b", **_MARGIN_SCALE),
        LossSpec("normface", "NormFace (normalised softmax)", "#e377c2", has_scale=True, **_CLASSIFIER),
    )
}
assert tuple(LOSS_SPECS) == LOSSES


def loss_spec(name: str) -> LossSpec:
    """The spec of loss ``name``; ValueError naming the choices for an unknown name."""
    try:
        return LOSS_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}") from None
