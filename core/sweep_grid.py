"""The grid of a sweep: one TrainConfig per cell (losses x alphas x seeds x open-set splits, and the
training-free methods beside them), in the queue order that makes a partial sweep useful."""

from __future__ import annotations

import itertools
from dataclasses import replace

from core.config import TrainConfig
from core.losses import loss_spec

# The standard open-set MNIST protocol: 6 known / 4 unknown digits over 5 fixed random splits
# (the same splits as ../shared/reference/openset_reference.py, so numbers compare directly).
OPENSET_SPLITS = [
    ["0", "1", "2", "3", "4", "5"],
    ["4", "5", "6", "7", "8", "9"],
    ["0", "2", "4", "6", "8", "1"],
    ["1", "3", "5", "7", "9", "0"],
    ["2", "3", "5", "7", "8", "9"],
]


def holdout_for_split(known: list[str]) -> list[str]:
    return [str(d) for d in range(10) if str(d) not in known]


def _training_free_cells(base: TrainConfig, methods: list[str], seeds: list[int], splits: list) -> list:
    """One cell per training-free method, seed and split. Their results rows carry the method's name
    in the `loss` column, so the Compare page draws them as reference lines beside the alpha curves."""
    cells = []
    for method, seed, (split_i, holdout) in itertools.product(methods, seeds, splits):
        cfg = replace(base, method=method, seed=seed, holdout_classes=holdout, run_dir="")
        cfg.name = f"sweep-{method}-s{seed}-split{split_i}"
        cfg.validate()
        meta = {"loss": method, "alpha": "", "seed": seed, "split": split_i, "holdout": ",".join(holdout)}
        cells.append((cfg, {**meta, "method": method}))
    return cells


def expand_grid(
    base: TrainConfig,
    losses: list[str],
    alphas: list[str],
    seeds: list[int],
    openset_splits: int = 0,
    methods: list[str] | None = None,
    openset_first: int = 0,
) -> list[tuple[TrainConfig, dict]]:
    """One config per cell. Alpha only multiplies the losses that have one (L2-softmax). `methods`
    (default: the base config's): "metric" runs the loss x alpha grid, "knn"/"patch" one cell each.
    `openset_first` skips the first splits, so a grid stopped part-way can run the rest under the
    same split numbers."""
    chosen = list(enumerate(OPENSET_SPLITS))[openset_first : openset_first + openset_splits]
    splits = [(i, holdout_for_split(k)) for i, k in chosen] or [(0, list(base.holdout_classes))]
    methods = methods or [base.method]
    cells = _training_free_cells(base, [m for m in methods if m != "metric"], seeds, splits)
    for loss in losses if "metric" in methods else []:
        has_alpha = loss_spec(loss).has_alpha
        loss_alphas = alphas if has_alpha else [None]
        for alpha, seed, (split_i, holdout) in itertools.product(loss_alphas, seeds, splits):
            cfg = replace(
                base,
                method="metric",
                loss=loss,
                seed=seed,
                holdout_classes=holdout,
                run_dir="",
                alpha=alpha if has_alpha else base.alpha,
            )
            cfg.name = f"sweep-{loss}" + (f"-a{alpha}" if has_alpha else "") + f"-s{seed}-split{split_i}"
            cfg.validate()
            meta = {
                "loss": loss,
                "alpha": alpha if has_alpha else "",
                "seed": seed,
                "split": split_i,
                "holdout": ",".join(holdout),
            }
            cells.append((cfg, meta))
    # Queue order: split, then seed, then the loss/alpha cells, so a sweep stopped early (or read while
    # running) already has every configuration on the same first splits and seeds.
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(cells, key=lambda c: (c[1]["split"], c[1]["seed"], order[id(c)]))
