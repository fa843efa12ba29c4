"""TrainConfig: each field written once, its command-line option generated from it."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields

import pytest

from core.config import TrainConfig, add_config_arguments, cli_fields, config_from_args, opt


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    return p


def test_a_non_default_config_round_trips_through_its_flags():
    cfg = TrainConfig(
        data="some/folder",
        loss="triplet",
        alpha="auto",
        alpha_trainable=True,
        dim=3,
        epochs=2,
        lr=0.01,
        margin=0.3,
        scale=None,
        holdout_classes=["a", "b"],
        image_size=32,
        augment=False,
        projection="none",
        max_train_samples=10,
        run_dir="r",
        name="n",
    )
    argv = []
    for f in cli_fields():
        value, default = getattr(cfg, f.name), getattr(TrainConfig(), f.name)
        if value == default:
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            argv += [flag, ",".join(value)]
        else:
            argv += [flag, str(value)]
    assert "--no-augment" in argv and "--alpha-trainable" in argv
    assert asdict(config_from_args(_parser().parse_args(argv))) == asdict(cfg)


def test_nproc_has_no_flag_and_every_other_field_has_one():
    flags = {a.dest for a in _parser()._actions}
    assert {f.name for f in fields(TrainConfig)} - flags == {"nproc"}


def test_a_new_field_with_choices_is_a_one_place_change():
    @dataclass
    class Extended(TrainConfig):
        method: str = opt("metric", "how parts are scored", choices=("metric", "knn", "patch"))

    Extended(method="knn").validate()
    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of: metric, knn, patch"):
        Extended(method="nope").validate()
