"""`python -m core.score --run DIR PATH...`: score images (files, folders or ZIPs) against a run.

Prints CSV: path, score, decision at the run's threshold (a saved threshold.json wins over the
training-time suggestion; --threshold wins over both), and the nearest normal neighbours."""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import sys
from pathlib import Path

import numpy as np

from core import method_scoring
from core.ingest import IngestError, load_image
from core.runs import Run, RunError, load_run
from core.views import star_coords

DEFAULT_IMAGE_SIZE = 28  # runs written before image_size was recorded were all MNIST
MAX_UPLOAD_NAME = 100


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


def input_shape(run: Run) -> tuple[int, int]:
    """(image size, channels) the run's model was trained on."""
    size = int(run.summary.get("image_size") or run.config.get("image_size") or DEFAULT_IMAGE_SIZE)
    return size, int(run.summary.get("channels") or 1)


def embed_and_score(
    run: Run, images: list[np.ndarray], k: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(embeddings, scores, neighbour rows, neighbour distances) of images [C, S, S] against a run."""
    scored = score_images(run, images, k)
    return scored.emb, scored.scores, scored.nn_rows, scored.nn_dist


def score_images(
    run: Run, images: list[np.ndarray], k: int | None = None, with_maps: bool = False
) -> method_scoring.Scored:
    """Score images [C, S, S] with the run's method (metric, knn or patch; core.method_scoring);
    `with_maps`: patch runs add anomaly maps [N, S, S] in the scores' units."""
    return method_scoring.score_images(run, np.stack(images), k, with_maps)


def score_files(
    run_dir: str | Path, files: list[Path], k: int | None = None, with_maps: bool = False
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Rows of {path, score, nn_rows, nn_dist, embedding} (with `with_maps`, also `image` [C, S, S]
    and, for patch runs, `heatmap` [S, S]); unusable files come back as (path, reason)."""
    run = load_run(run_dir)
    size, channels = input_shape(run)
    images, kept, skipped = [], [], []
    for f in files:
        try:
            images.append(load_image(f, size, channels))
            kept.append(f)
        except IngestError as e:
            skipped.append((str(f), str(e)))
    if not images:
        return [], skipped
    scored = score_images(run, images, k, with_maps)
    rows = [
        {"path": str(f), "score": float(s), "nn_rows": r, "nn_dist": d, "embedding": e}
        for f, s, r, d, e in zip(kept, scored.scores, scored.nn_rows, scored.nn_dist, scored.emb)
    ]
    if with_maps:
        for j, row in enumerate(rows):
            row["image"] = images[j]
            row["heatmap"] = None if scored.maps is None else scored.maps[j]
    return rows, skipped


def safe_upload_name(name: str) -> str:
    """A harmless file name: basename only, [A-Za-z0-9._-], at most 100 characters, never empty/dots."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")
    if len(base) > MAX_UPLOAD_NAME:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[:90] + "." + suffix[:9]) if dot and len(suffix) < 10 else base[:MAX_UPLOAD_NAME]
    return base or "upload"


def save_upload(data: bytes, name: str, root: str | Path) -> tuple[Path, str]:
    """Write an upload under <root>/<sha256>/<safe name>; never outside root. Returns (path, sha256)."""
    root = Path(root).resolve()
    sha = hashlib.sha256(data).hexdigest()
    folder = (root / sha).resolve()
    path = (folder / safe_upload_name(name)).resolve()
    if folder.parent != root or path.parent != folder:
        raise ValueError("refused upload path")
    folder.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = folder / f".{path.name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path, sha


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return msg[:300]


def _display_image(img: np.ndarray) -> np.ndarray:
    """uint8 [S, S] or [S, S, 3] of a model input [C, S, S] in [0, 1]."""
    return (np.clip(img.transpose(1, 2, 0) if img.shape[0] == 3 else img[0], 0, 1) * 255).astype(np.uint8)


def _load_uploads(
    run: Run, files: list[tuple[str, bytes]], threshold: float, root: Path
) -> tuple[list, list]:
    size, channels = input_shape(run)
    rows: list[dict] = []
    loaded: list[tuple[int, np.ndarray]] = []
    for name, data in files:
        row: dict = {
            "file": str(name),
            "sha256": "",
            "score": None,
            "decision": "error",
            "threshold": threshold,
            "error": None,
        }
        rows.append(row)
        try:
            if not data:
                raise ValueError("empty file (0 bytes)")
            path, sha = save_upload(data, name, root)
            row.update(path=str(path), sha256=sha)
            loaded.append((len(rows) - 1, load_image(path, size, channels)))
        except (IngestError, ValueError, OSError) as e:
            row["error"] = _one_line(e)
    return rows, loaded


def score_uploads(
    run: Run, files: list[tuple[str, bytes]], threshold: float, root: str | Path, k: int | None = None
) -> list[dict]:
    """Score uploaded images (name, bytes) against a run, saving each under ``root``. One row per file,
    in order: {file, sha256, path, score, decision, threshold, nn_rows, nn_dist, nn_source, embedding,
    image, coords, error, heatmap, notices}. A file that cannot be used gets score None, decision
    "error" and a one-line ``error``. ``heatmap``: patch runs only (else None), float32 [S, S] at the
    size of ``image`` (the run's input size), patch distances upsampled and Gaussian-smoothed (sigma 4
    px at the backbone's input size), in the score's and threshold's units (its peak is the score, up
    to the resizing to ``image``'s size). ``notices``: one-line notes of the scoring (e.g. images
    upsampled for the patch grid)."""
    rows, loaded = _load_uploads(run, files, threshold, Path(root))
    if not loaded:
        return rows
    try:
        scored = score_images(run, [img for _, img in loaded], k, with_maps=True)
        emb, scores, nn_rows, nn_dist = scored.emb, scored.scores, scored.nn_rows, scored.nn_dist
    except (RunError, OSError, RuntimeError, ValueError, KeyError) as e:  # e.g. model.pt missing
        for i, _ in loaded:
            rows[i]["error"] = f"cannot score with run {run.name}: {_one_line(e)}"
        return rows
    coords = star_coords(run, emb)
    for j, (i, img) in enumerate(loaded):
        rows[i].update(
            score=float(scores[j]),
            decision="anomaly" if scores[j] > threshold else "normal",
            nn_rows=[int(r) for r in nn_rows[j]],
            nn_dist=[float(d) for d in nn_dist[j]],
            nn_source=[str(run.source[r]) for r in nn_rows[j]],
            embedding=emb[j],
            image=_display_image(img),
            coords=None if coords is None else coords[j],
            heatmap=None if scored.maps is None else scored.maps[j],
            notices=list(scored.notices),
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.score", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("paths", nargs="+", help="images, folders or .zip files")
    p.add_argument("--threshold", type=float, default=None)
    p.add_argument("--k", type=int, default=None, help="neighbours (default: the run's k)")
    p.add_argument("--extract-root", default="data/uploads")
    p.add_argument(
        "--heatmaps", default=None, metavar="OUT", help="patch runs: write one PNG overlay per image to OUT"
    )
    args = p.parse_args(argv)
    try:
        run = load_run(args.run)
        threshold = args.threshold if args.threshold is not None else run.threshold
        if args.heatmaps and method_scoring.run_method(run) != "patch":
            raise ValueError(
                f"--heatmaps needs a patch run; {run.name} is a {method_scoring.run_method(run)} run"
            )
        files = collect_images(args.paths, Path(args.extract_root))
        rows, skipped = score_files(args.run, files, args.k, with_maps=bool(args.heatmaps))
        if args.heatmaps:
            from core.heatmaps import write_overlays

            for written in write_overlays(rows, threshold, Path(args.heatmaps)):
                print(f"heatmap: {written}", file=sys.stderr)
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
