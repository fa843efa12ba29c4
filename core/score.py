"""`python -m core.score --run DIR PATH...`: score images (files, folders or ZIPs) against a run.

Prints CSV: path, score, decision at the run's threshold (a saved threshold.json wins over the
training-time suggestion; --threshold wins over both), and the nearest normal neighbours."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from core.runs import RunError, embed_images, load_run, score_embeddings


def collect_images(paths: list[str], extract_root: Path) -> list[Path]:
    from core.ingest import list_image_files, safe_extract_zip

    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"path not found: {p}")
        if p.is_file() and p.suffix.lower() == ".zip":
            p = safe_extract_zip(p, extract_root)
        if p.is_dir():
            files += sorted(list_image_files(p))
        else:
            files.append(p)
    return files


def score_files(
    run_dir: str | Path, files: list[Path], k: int | None = None
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of {path, score, nn_rows, nn_dist, embedding}; unusable files come back as (path, reason)."""
    from core.ingest import IngestError, load_image

    run = load_run(run_dir)
    size = int(run.summary.get("image_size") or run.config.get("image_size") or 28)
    channels = int(run.summary.get("channels") or 1)
    images, kept, skipped = [], [], []
    for f in files:
        try:
            images.append(load_image(f, size, channels))
            kept.append(f)
        except IngestError as e:
            skipped.append((str(f), str(e)))
    if not images:
        return [], skipped
    emb = embed_images(run.run_dir, np.stack(images))
    scores, nn_rows, nn_dist = score_embeddings(run, emb, k)
    rows = [
        {"path": str(f), "score": float(s), "nn_rows": r, "nn_dist": d, "embedding": e}
        for f, s, r, d, e in zip(kept, scores, nn_rows, nn_dist, emb)
    ]
    return rows, skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.score", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("paths", nargs="+", help="images, folders or .zip files")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--k", type=int, default=None, help="neighbours (default: the run's k)")
    p.add_argument("--extract-root", default="data/uploads")
    args = p.parse_args(argv)
    try:
        run = load_run(args.run)
        threshold = args.threshold if args.threshold is not None else run.threshold
        files = collect_images(args.paths, Path(args.extract_root))
        rows, skipped = score_files(args.run, files, args.k)
    except (RunError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, reason in skipped:
        print(f"skipped: {path}: {reason}", file=sys.stderr)
    if not rows:
        print("error: no usable image to score", file=sys.stderr)
        return 2
    out = csv.writer(sys.stdout)
    out.writerow(["path", "score", "decision", "threshold", "neighbours"])
    for r in rows:
        neighbours = ";".join(f"{run.source[i]}={d:.4f}" for i, d in zip(r["nn_rows"], r["nn_dist"]))
        decision = "anomaly" if r["score"] > threshold else "normal"
        out.writerow([r["path"], f"{r['score']:.6f}", decision, f"{threshold:.6f}", neighbours])
    return 0


if __name__ == "__main__":
    sys.exit(main())
