"""Hostile-input tests. `make_run` is shared by the checkpoint/run-file tests and the CLI tests."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from core.fsutil import write_json, write_npz, write_torch


def make_run(
    run_dir: Path, seed: int = 0, dim: int = 2, channels: int = 1, image_size: int = 28, n: int = 30
) -> Path:
    """A small but complete, valid run directory (contract format) without training: model.pt holds
    real weights of the architecture its config names, so it loads and embeds."""
    from core.train import TrainConfig, build_model

    run_dir.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(loss="l2softmax", alpha="16", dim=dim, arch="smallcnn", image_size=image_size)
    cfg = asdict(config) | {"run_dir": str(run_dir), "name": run_dir.name}
    meta = {
        "config": cfg,
        "class_names": ["a", "b"],
        "train_classes": [0, 1],
        "normal_classes": [0, 1],
        "channels": channels,
        "image_size": image_size,
        "alpha": 16.0,
        "arch": "smallcnn",
    }
    torch.manual_seed(seed)
    model = build_model(meta)
    write_torch(run_dir / "model.pt", {**meta, "state_dict": model.state_dict()})
    rng = np.random.default_rng(seed)
    write_npz(
        run_dir / "embeddings.npz",
        emb=rng.normal(size=(n, dim)).astype(np.float32),
        norm=np.ones(n, np.float32),
        label=np.arange(n, dtype=np.int64) % 2,
        split=np.repeat(np.array([0, 1, 2], np.int8), n // 3),
        anomaly=np.zeros(n, bool),
        source=np.array([f"mnist-5k#{i}" for i in range(n)]),
        score=rng.random(n).astype(np.float32),
        class_weights=np.zeros((0, dim), np.float32),
        class_names=np.array(["a", "b"]),
    )
    write_json(run_dir / "config.json", cfg)
    write_json(
        run_dir / "summary.json",
        {
            "loss": "l2softmax",
            "dim": dim,
            "test_accuracy": 0.5,
            "threshold": 0.25,
            "class_names": ["a", "b"],
            "normal_classes": [0, 1],
            "k": 5,
            "image_size": image_size,
            "channels": channels,
        },
    )
    write_json(run_dir / "status.json", {"state": "completed", "pid": None, "created": 1.0, "ended": 2.0})
    return run_dir
