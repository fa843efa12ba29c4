"""Training throughput of core.train against a bare PyTorch loop: same model, data, batch size and
optimiser, alternating in one run so machine noise hits both alike. Last line: `ratio <core/bare>`.

    python benchmarks/bench_train.py [--rounds 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.data import load_data  # noqa: E402
from core.losses import build_head  # noqa: E402
from core.models import MetricModel, build_backbone  # noqa: E402
from core.train import TrainConfig, train  # noqa: E402


def bare_loop(x: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, dim: int, seed: int) -> float:
    torch.manual_seed(seed)
    model = MetricModel(build_backbone("smallcnn", 1, dim), build_head("l2softmax", dim, 10, alpha=16.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    marks = []  # (samples seen, time) after each step, as core.train's step events give them
    seen = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model.head.logits(model.embed(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(idx)
            marks.append((seen, time.perf_counter()))
    return rate(marks)


def rate(marks: list[tuple[int, float]]) -> float:
    """Samples/s from the first step's end to the last one's: start-up and final evaluation excluded,
    everything between steps (for core: metric writes, per-epoch validation and checkpoint) included."""
    (s0, t0), (s1, t1) = marks[0], marks[-1]
    return (s1 - s0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    bundle = load_data("mnist-5k", seed=0)
    x, y = bundle.train.x, torch.from_numpy(bundle.train.y)
    core_sps, bare_sps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cfg = TrainConfig(
                loss="l2softmax",
                alpha="16",
                dim=args.dim,
                epochs=args.epochs,
                batch_size=args.batch_size,
                augment=False,
                projection="none",
                device="cpu",
                run_dir=str(Path(tmp) / f"r{r}"),
            )
            marks: list[tuple[int, float]] = []
            batch = args.batch_size

            def on_event(e: dict, marks=marks, batch=batch) -> None:
                if e["event"] == "step":
                    marks.append(((marks[-1][0] if marks else 0) + batch, time.perf_counter()))

            train(cfg, on_event)
            core_sps.append(rate(marks))
            bare_sps.append(bare_loop(x, y, args.epochs, args.batch_size, args.dim, r))
            print(
                f"round {r}: core {core_sps[-1]:.0f} samples/s  bare {bare_sps[-1]:.0f} samples/s", flush=True
            )
    core_med, bare_med = statistics.median(core_sps), statistics.median(bare_sps)
    print(
        f"median: core {core_med:.0f} samples/s  bare {bare_med:.0f} samples/s "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, dim {args.dim})"
    )
    print(f"ratio {core_med / bare_med:.3f}")


if __name__ == "__main__":
    main()
