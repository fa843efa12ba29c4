"""Open-set quality: 6 known / 4 unknown digits over the 5 fixed splits, for softmax, L2-softmax
(alpha auto, 4, 16, 64, trainable), triplet (semihard) and ArcFace. Runs the grid through
`python -m core.sweep` (the app's queue), then writes a table into benchmarks/RESULTS.md.

    python benchmarks/bench_quality.py                 # mnist-5k, the offline default
    python benchmarks/bench_quality.py --data mnist    # full MNIST: the literature's protocol
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
REFERENCE = {  # ../shared/reference/README.md: plain PyTorch loop, 5 splits, kNN-5 / centroid AUROC
    "softmax": "acc 0.958, AUROC 0.899 (kNN-5)",
    "l2softmax 4.28": "acc 0.977, AUROC 0.934 (kNN-5)",
    "l2softmax 16": "acc 0.972, AUROC 0.941 (kNN-5)",
    "l2softmax 64": "acc 0.963, AUROC 0.944 (kNN-5)",
}
PUBLISHED = "softmax 0.978, OpenMax 0.981, CROSR 0.991, DSC 0.996 (full MNIST, AUROC)"


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return f"{platform.machine()}, {os.cpu_count()} cores, {mem}, {dev}, torch {torch.__version__}"


def fmt(row: dict, key: str) -> str:
    m, s = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if m in (None, "", "nan"):
        return "–"
    return f"{float(m):.3f} ± {float(s):.3f}"


def write_section(title: str, body: str) -> None:
    """Replace (or append) one '## title' section of RESULTS.md, leaving other sections alone."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Measured results\n"
    section = f"## {title}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (
        pattern.sub(lambda _: section + "\n", text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + section
    )
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist-5k")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "quality"))
    ap.add_argument("--collect-only", action="store_true", help="rewrite RESULTS.md from an earlier --out")
    args = ap.parse_args()
    out = Path(args.out)
    cmd = [
        sys.executable,
        "-m",
        "core.sweep",
        "--data",
        args.data,
        "--loss",
        "softmax,l2softmax,triplet,arcface",
        "--alphas",
        "auto,4,16,64",
        "--alpha-trainable",
        "--mining",
        "semihard",
        "--dim",
        str(args.dim),
        "--epochs",
        str(args.epochs),
        "--openset-splits",
        str(args.splits),
        "--seeds",
        args.seeds,
        "--projection",
        "none",
        "--out",
        str(out),
        "--root",
        str(out / "runs"),
    ]
    t0 = time.time()
    if not args.collect_only:
        subprocess.run(cmd, cwd=ROOT, check=False)
    wall = time.time() - t0
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    lines = [
        "| loss | α (initial, trainable) | runs | closed-set acc | P@1 | MAP@R | open-set AUROC | AUPR |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        alpha = r["alpha"] or "–"
        lines.append(
            f"| {r['loss']} | {alpha} | {r['n']} | {fmt(r, 'test_accuracy')} | {fmt(r, 'precision_at_1')} | "
            f"{fmt(r, 'map_at_r')} | {fmt(r, 'anomaly_auroc')} | {fmt(r, 'anomaly_aupr')} |"
        )
    shown = " ".join(c if not c.startswith("/") else os.path.relpath(c, ROOT) for c in cmd[1:])
    body = f"""Open-set protocol on `{args.data}`: train on 6 known digits, score the 4 unknown by the
mean cosine distance to the 5 nearest normal training embeddings; {args.splits} fixed splits x seeds
{args.seeds}, mean ± std. {args.epochs} epochs, dim {args.dim}, AdamW + one-cycle LR, light affine
augmentation, precise-BN recalibration.

- Machine: {machine()}
- Date: {time.strftime("%Y-%m-%d")}; wall time {wall / 60:.1f} min for the whole grid
- Command: `python benchmarks/bench_quality.py --data {args.data} --epochs {args.epochs} \
  --splits {args.splits}`
  (it runs `python {shown}`)

{chr(10).join(lines)}

Reference floor (plain PyTorch loop, `../shared/reference/openset_reference.py`, same 5 splits):
{"; ".join(f"{k}: {v}" for k, v in REFERENCE.items())}.
Published on full MNIST (6 known / 4 unknown): {PUBLISHED}.
"""
    write_section(f"Open-set quality on {args.data} (issue 4)", body)
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
