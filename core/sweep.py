"""`python -m core.sweep`: a grid of training runs (losses x alphas x seeds x open-set splits) through the
same file-backed queue as the app, collected into OUT/results.csv and OUT/summary.csv.

Example: python -m core.sweep --data mnist-5k --loss l2softmax --alphas 1,2,4,8,16,32,64 --dim 64 \
             --holdout-classes 6,7,8,9 --seeds 0,1,2 --out sweeps/alpha"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from core import jobs
from core.fsutil import read_json, write_json
from core.train import TrainConfig, build_parser, config_from_args

# The standard open-set MNIST protocol: 6 known / 4 unknown digits over 5 fixed random splits
# (the same splits as ../shared/reference/openset_reference.py, so numbers compare directly).
OPENSET_SPLITS = [
    ["0", "1", "2", "3", "4", "5"],
    ["4", "5", "6", "7", "8", "9"],
    ["0", "2", "4", "6", "8", "1"],
    ["1", "3", "5", "7", "9", "0"],
    ["2", "3", "5", "7", "8", "9"],
]
RESULT_FIELDS = [
    "run_id",
    "state",
    "loss",
    "alpha",
    "alpha_final",
    "seed",
    "split",
    "holdout",
    "test_accuracy",
    "precision_at_1",
    "map_at_r",
    "anomaly_auroc",
    "anomaly_aupr",
    "train_seconds",
    "mean_feature_norm",
]
METRICS = [
    "test_accuracy",
    "precision_at_1",
    "map_at_r",
    "anomaly_auroc",
    "anomaly_aupr",
    "train_seconds",
    "mean_feature_norm",
]


def holdout_for_split(known: list[str]) -> list[str]:
    return [str(d) for d in range(10) if str(d) not in known]


def expand_grid(
    base: TrainConfig, losses: list[str], alphas: list[str], seeds: list[int], openset_splits: int = 0
) -> list[tuple[TrainConfig, dict]]:
    """One config per cell. Alpha only multiplies the losses that have one (L2-softmax)."""
    splits = [(i, holdout_for_split(k)) for i, k in enumerate(OPENSET_SPLITS[:openset_splits])] or [
        (0, list(base.holdout_classes))
    ]
    cells = []
    for loss in losses:
        loss_alphas = alphas if loss == "l2softmax" else [base.alpha if loss == "l2softmax" else "-"]
        for alpha, seed, (split_i, holdout) in itertools.product(loss_alphas, seeds, splits):
            cfg = replace(
                base,
                loss=loss,
                seed=seed,
                holdout_classes=holdout,
                run_dir="",
                alpha=alpha if alpha != "-" else base.alpha,
            )
            cfg.name = (
                f"sweep-{loss}" + (f"-a{alpha}" if loss == "l2softmax" else "") + f"-s{seed}-split{split_i}"
            )
            cfg.validate()
            cells.append(
                (
                    cfg,
                    {
                        "loss": loss,
                        "alpha": alpha if loss == "l2softmax" else "",
                        "seed": seed,
                        "split": split_i,
                        "holdout": ",".join(holdout),
                    },
                )
            )
    return cells


def collect(out: Path, root: Path) -> list[dict]:
    """Rows for results.csv from the sweep manifest and each run's summary."""
    manifest = read_json(out / "sweep.json")
    rows = []
    for cell in manifest["runs"]:
        st = jobs.status(cell["run_id"], root)
        row = {
            **{k: cell[k] for k in ("run_id", "loss", "alpha", "seed", "split", "holdout")},
            "state": st["state"],
        }
        summary_path = root / cell["run_id"] / "summary.json"
        if st["state"] == "completed" and summary_path.exists():
            s = read_json(summary_path)
            row.update({k: s.get(k) for k in METRICS})
            row["alpha_final"] = s.get("alpha")
        rows.append(row)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and standard deviation over seeds and splits, per (loss, alpha)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if r["state"] == "completed":
            groups.setdefault((r["loss"], str(r["alpha"])), []).append(r)
    out = []
    for (loss, alpha), rs in groups.items():
        agg = {"loss": loss, "alpha": alpha, "n": len(rs)}
        for m in METRICS:
            vals = [float(r[m]) for r in rs if r.get(m) not in (None, "")]
            mean = sum(vals) / len(vals) if vals else float("nan")
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
            agg[f"{m}_mean"], agg[f"{m}_std"] = mean, std
        out.append(agg)
    return sorted(out, key=lambda a: (a["loss"], _alpha_sort_key(a["alpha"])))


def _alpha_sort_key(a: str) -> float:
    try:
        return float(a)
    except ValueError:
        return -1.0 if a == "auto" else math.inf


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or (list(rows[0]) if rows else [])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def write_results(out: Path, root: Path) -> list[dict]:
    rows = collect(out, root)
    write_csv(out / "results.csv", rows, RESULT_FIELDS)
    write_csv(out / "summary.csv", aggregate(rows))
    return rows


def start(cells: list[tuple[TrainConfig, dict]], out: Path, root: Path) -> dict:
    """Submit every cell and write the manifest; returns it."""
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for cfg, meta in cells:
        runs.append({**meta, "run_id": jobs.submit(cfg, root)})
        write_json(
            out / "sweep.json",
            {
                "root": str(root.resolve()),
                "runs": runs,
                "pid": os.getpid(),
                "created": time.time(),
                "state": "running",
            },
        )
    return read_json(out / "sweep.json")


def sweep_state(out: Path) -> dict:
    """Progress of a sweep: counts per state, and the overall state."""
    manifest = read_json(out / "sweep.json")
    root = Path(manifest["root"])
    states = [jobs.status(r["run_id"], root)["state"] for r in manifest["runs"]]
    counts = {s: states.count(s) for s in set(states)}
    live = counts.get("queued", 0) + counts.get("running", 0)
    return {
        **manifest,
        "counts": counts,
        "done": len(states) - live,
        "total": len(states),
        "state": "running" if live else manifest.get("state", "completed"),
    }


def cancel(out: Path) -> None:
    manifest = read_json(out / "sweep.json")
    for r in manifest["runs"]:
        jobs.cancel(r["run_id"], manifest["root"])
    manifest["state"] = "cancelled"
    write_json(out / "sweep.json", manifest)


def _parse_list(s: str) -> list[str]:
    return [p.strip() for p in s.split(",") if p.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog = "python -m core.sweep"
    parser.description = "Run a grid of training runs and collect results.csv."
    parser.add_argument("--alphas", default="", help="comma-separated alphas for l2softmax; 'auto' allowed")
    parser.add_argument("--seeds", default="0")
    parser.add_argument(
        "--openset-splits", type=int, default=0, help="run the 6-known/4-unknown protocol over N splits"
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--root", default=None, help="checkpoints root (the app's queue); default checkpoints/"
    )
    parser.add_argument("--no-wait", action="store_true", help="submit and return")
    args = parser.parse_args(argv)
    try:
        losses = _parse_list(args.loss)
        base_args = argparse.Namespace(**{**vars(args), "loss": losses[0], "run_dir": "-"})
        base = config_from_args(base_args)
        alphas = _parse_list(args.alphas) or [base.alpha]
        seeds = [int(s) for s in _parse_list(args.seeds)]
        if not 0 <= args.openset_splits <= len(OPENSET_SPLITS):
            raise ValueError(f"--openset-splits must be between 0 and {len(OPENSET_SPLITS)}")
        if args.openset_splits and base.data not in ("mnist-5k", "mnist"):
            raise ValueError("--openset-splits needs digit data (mnist-5k or mnist)")
        cells = expand_grid(base, losses, alphas, seeds, args.openset_splits)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    root = Path(args.root) if args.root else jobs.default_root()
    start(cells, out, root)
    print(f"submitted {len(cells)} runs; manifest {out / 'sweep.json'}", flush=True)
    if args.no_wait:
        return 0

    def _cancel(signum, frame):  # noqa: ARG001
        cancel(out)
        write_results(out, root)
        sys.exit(3)

    signal.signal(signal.SIGTERM, _cancel)
    signal.signal(signal.SIGINT, _cancel)
    last = -1
    while True:
        st = sweep_state(out)
        if st["done"] != last:
            print(f"{st['done']}/{st['total']} runs finished {st['counts']}", flush=True)
            last = st["done"]
            write_results(out, root)
        if st["state"] != "running":
            break
        time.sleep(1.0)
    manifest = read_json(out / "sweep.json")
    manifest["state"] = "completed"
    write_json(out / "sweep.json", manifest)
    rows = write_results(out, root)
    print(
        f"results: {out / 'results.csv'} "
        f"({sum(r['state'] == 'completed' for r in rows)}/{len(rows)} completed)"
    )
    return 0 if all(r["state"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
