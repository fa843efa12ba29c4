"""The small CNN's channels-last layout and embed_all's folded BatchNorm against the plain layout, side by
side in one run (rounds alternate, so machine noise hits every variant alike). Prints the median time of
each variant and the ratios plain / faster.

- training: one step (forward, backward, AdamW) of 256 MNIST-sized images, fp32 and bf16 autocast;
- inference: embedding 8,192 images as evaluation does: before (plain layout, batches of 1,024) and
  now (core.modelio.embed_all: channels-last, BatchNorm folded, batches of 256).

    python benchmarks/bench_layout.py [--rounds 5] [--widths 32,48]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.modelio import embed_all  # noqa: E402
from core.models import MetricModel, SmallCNN  # noqa: E402


class PlainLayoutCNN(SmallCNN):
    """The small CNN as it was: contiguous (NCHW) weights and inputs."""

    def __init__(self, in_channels: int, dim: int, width: int) -> None:
        super().__init__(in_channels, dim, width)
        self.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x.contiguous()))


def step_seconds(model: torch.nn.Module, x: torch.Tensor, bf16: bool, steps: int = 6) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            emb = model(x)
        loss = emb.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[1:])


@torch.no_grad()
def plain_inference_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.eval()
    t = time.perf_counter()
    for i in range(0, len(x), 1024):
        model(x[i : i + 1024])
    return time.perf_counter() - t


def embed_all_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    t = time.perf_counter()
    embed_all(MetricModel(model, torch.nn.Identity()), x, torch.device("cpu"))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--widths", default="32,48")
    args = ap.parse_args()
    torch.manual_seed(0)
    batch, images = torch.rand(256, 1, 28, 28), torch.rand(8192, 1, 28, 28)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for width in (int(w) for w in args.widths.split(",")):
        plain, fast = PlainLayoutCNN(1, 64, width), SmallCNN(1, 64, width)
        fast.load_state_dict(plain.state_dict())
        timings: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for precision in ("fp32", "bf16"):
                for name, model in (("plain", plain), ("channels-last", fast)):
                    key = f"train step {precision} {name}"
                    timings.setdefault(key, []).append(step_seconds(model, batch, precision == "bf16"))
            timings.setdefault("inference before", []).append(plain_inference_seconds(plain, images))
            timings.setdefault("inference embed_all", []).append(embed_all_seconds(fast, images))
        med = {k: statistics.median(v) for k, v in timings.items()}
        for key, value in med.items():
            print(f"width {width}  {key:34s} {value * 1000:8.1f} ms")
        for precision in ("fp32", "bf16"):
            ratio = med[f"train step {precision} plain"] / med[f"train step {precision} channels-last"]
            print(f"width {width}  ratio train {precision} plain/channels-last {ratio:.2f}")
        ratio = med["inference before"] / med["inference embed_all"]
        print(f"width {width}  ratio inference before/embed_all {ratio:.2f}")


if __name__ == "__main__":
    main()
