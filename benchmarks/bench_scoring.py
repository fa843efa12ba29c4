"""kNN scoring at scale (issue 6): time and peak memory of `core.anomaly.knn_cosine_scores`, torch
(chunked over queries and references) against FAISS (exact IndexFlatIP), at 10k, 100k and 1M synthetic
reference embeddings (dim 64, 1,000 queries).

Every case runs in a fresh subprocess, so its peak RSS (`ru_maxrss`) belongs to that case alone. The
reference embeddings themselves (N x 64 float32) are part of any scorer's footprint; the table shows the
RSS once they exist ("data RSS") and the peak while scoring, and the difference is what scoring added.
"torch, one block" is the pre-issue-6 behaviour (all references in one matmul per query chunk), for
comparison; it is skipped at 1M, where its 1,000 x 1M similarity block alone would be 4 GB.

    .venv/bin/python benchmarks/bench_scoring.py            # prints a markdown table
    .venv/bin/python benchmarks/bench_scoring.py --write    # also appends it to benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = (10_000, 100_000, 1_000_000)
DIM, QUERIES, K = 64, 1_000, 5
CASES = ("torch", "faiss", "torch-one-block")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(backend: str, n_ref: int) -> dict:
    """In this (fresh) process: make the data, score, report time and memory."""
    sys.path.insert(0, str(REPO))
    import numpy as np

    from core.anomaly import knn_cosine_scores

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((n_ref, DIM), dtype=np.float32)
    query = rng.standard_normal((QUERIES, DIM), dtype=np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    data_rss = _rss_mb()
    kw = {"backend": "torch", "ref_chunk": n_ref} if backend == "torch-one-block" else {"backend": backend}
    knn_cosine_scores(query[:10], ref[:1000], k=K, **kw)  # warm-up (thread pools, first-call costs)
    t = time.perf_counter()
    scores, idx, _ = knn_cosine_scores(query, ref, k=K, **kw)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "backend": backend,
        "n_ref": n_ref,
        "seconds": seconds,
        "data_rss_mb": data_rss,
        "peak_rss_mb": max(peak, base),
        "added_mb": max(peak, base) - data_rss,
        "checksum": float(scores.sum()),
        "first_idx": idx[0].tolist(),
    }


def run_all(sizes: tuple[int, ...]) -> list[dict]:
    rows = []
    for n in sizes:
        for backend in CASES:
            if backend == "torch-one-block" and n > 100_000:
                continue
            out = subprocess.run(
                [sys.executable, __file__, "--case", backend, str(n)],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{backend:16s} {n:>9,d}  {row['seconds']:7.2f} s  peak {row['peak_rss_mb']:7.0f} MB  "
                f"(+{row['added_mb']:.0f} MB over data)",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def _ram_gb() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 1024**2


def markdown(rows: list[dict], command: str) -> str:
    import faiss
    import torch

    by = {(r["backend"], r["n_ref"]): r for r in rows}
    lines = [
        "## Scoring at scale (issue 6)",
        "",
        f"`knn_cosine_scores`, exact kNN (k={K}) of {QUERIES:,} queries against N synthetic reference "
        f"embeddings (dim {DIM}, float32, Gaussian). Machine: {os.cpu_count()} CPUs (shared with other "
        f"work), {_ram_gb():.0f} GB RAM, {platform.processor() or platform.machine()}; torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), faiss-cpu {faiss.__version__}. "
        f"Date: {time.strftime('%Y-%m-%d')}. Command: `{command}`.",
        "",
        "Each case runs in a fresh process; peak RSS is `ru_maxrss`. *Data RSS* is the process once the "
        "reference and query arrays exist (Python + torch + the N x 64 float32 array: 2.4 MB at 10k, "
        "24 MB at 100k, 244 MB at 1M); *added* is what scoring took on top of that.",
        "",
        "| N reference | backend | time (s) | data RSS (MB) | peak RSS (MB) | added by scoring (MB) |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for n in SIZES:
        for b in CASES:
            r = by.get((b, n))
            if r is None:
                if b == "torch-one-block" and (("torch", n) in by):
                    lines.append(
                        f"| {n:,} | {b} | not run: its 1,000 x N block = {4 * QUERIES * n / 1e9:.0f} GB ||||"
                    )
                continue
            lines.append(
                f"| {n:,} | {b} | {r['seconds']:.2f} | {r['data_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['added_mb']:.0f} |"
            )
    same = all(
        by[("torch", n)]["first_idx"] == by[("faiss", n)]["first_idx"]
        and abs(by[("torch", n)]["checksum"] - by[("faiss", n)]["checksum"]) < 1e-3
        for n in SIZES
        if ("torch", n) in by and ("faiss", n) in by
    )
    lines += [
        "",
        f"torch and FAISS returned the same neighbours and scores in every case: {'yes' if same else 'NO'}.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", nargs=2, metavar=("BACKEND", "N"), help=argparse.SUPPRESS)
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated reference sizes")
    p.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = p.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return 0
    sizes = tuple(int(s) for s in args.sizes.split(","))
    rows = run_all(sizes)
    command = "python " + " ".join([f"benchmarks/{Path(__file__).name}", *sys.argv[1:]])
    text = markdown(rows, command)
    print(text)
    if args.write:
        results = REPO / "benchmarks" / "RESULTS.md"
        old = results.read_text() if results.exists() else "# Benchmark results\n"
        results.write_text(old.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
