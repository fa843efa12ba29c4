"""Score images against an exported run: python score_exported.py IMAGE... -> CSV path,score,decision.

Needs numpy, Pillow and onnxruntime (torch instead, for a TorchScript export). The preprocessing, k,
threshold and method (metric/knn: kNN cosine to reference embeddings; patch: peak of the smoothed map
of patch distances to a memory bank) come from scoring.json beside this file; they repeat what the
project's core.score does."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
CFG = json.loads((HERE / "scoring.json").read_text())
SIZE, CHANNELS = CFG["preprocessing"]["image_size"], CFG["preprocessing"]["channels"]


def decode(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> float32 [H, W, 1|3] in [0, 1], transparency composited on black."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.nan_to_num(np.asarray(im, np.float64))
        a = a / 65535.0 if im.mode != "F" else (a / 255.0 if a.max(initial=0.0) > 1.0 else a)
        return np.clip(a, 0.0, 1.0).astype(np.float32)[..., None]
    if im.mode in ("1", "L", "LA", "La"):
        la = np.asarray(im.convert("LA"), np.float32) / 255.0
        return (la[..., :1] * la[..., 1:]) if im.mode in ("LA", "La") else la[..., :1]
    if im.mode in ("RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"), np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:]
    return np.asarray(im.convert("RGB"), np.float32) / 255.0


def load(path: str) -> np.ndarray:
    with Image.open(path) as im:
        if im.format == "JPEG":
            im.draft(im.mode, (SIZE, SIZE))  # decode big JPEGs at reduced scale, as core.ingest does
        im.load()
        a = decode(ImageOps.exif_transpose(im) or im)
    if a.shape[-1] != CHANNELS:  # gray -> 3 channels by repetition, RGB -> gray by ITU-R 601-2 luma
        a = (
            np.repeat(a, 3, -1)
            if CHANNELS == 3
            else a[..., :1] * 0.299 + a[..., 1:2] * 0.587 + a[..., 2:] * 0.114
        )
    if a.shape[:2] != (SIZE, SIZE):  # each channel as a float image, bilinear (antialiased)
        planes = [Image.fromarray(np.ascontiguousarray(a[..., c]), "F") for c in range(a.shape[-1])]
        a = np.stack([np.asarray(p.resize((SIZE, SIZE), Image.Resampling.BILINEAR)) for p in planes], -1)
    a = (np.clip(a, 0.0, 1.0) - CFG["preprocessing"]["mean"]) / CFG["preprocessing"]["std"]
    return a.transpose(2, 0, 1).astype(np.float32)


def embedder():
    if CFG["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(HERE / CFG["model_file"]), providers=["CPUExecutionProvider"]
        )
        return lambda x: session.run([CFG["output_name"]], {CFG["input_name"]: x})[0]
    import torch

    module = torch.jit.load(str(HERE / CFG["model_file"]), map_location="cpu").eval()
    return lambda x: module(torch.from_numpy(x)).detach().numpy()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def knn_scores(emb: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Mean cosine distance to the k nearest reference embeddings (metric and knn runs)."""
    dist = np.clip(1.0 - unit(emb.astype(np.float32)) @ reference.T, 0.0, None)
    return np.sort(dist, axis=1)[:, : CFG["k"]].mean(axis=1)


def patch_scores(patches: np.ndarray, bank: np.ndarray, op: "np.ndarray | None") -> np.ndarray:
    """Patch runs, one image at a time: each patch's distance to its nearest memory-bank row; the score
    is the peak of the anomaly map op @ grid @ op.T (older runs without map_operator.npy: the largest)."""
    bank_sq = (bank**2).sum(axis=1)
    scores = []
    for grid in patches.astype(np.float64):
        q = grid.reshape(-1, grid.shape[-1])
        sq = (q**2).sum(axis=1, keepdims=True) - 2.0 * q @ bank.T + bank_sq
        dist = np.sqrt(np.clip(sq.min(axis=1), 0.0, None)).reshape(grid.shape[:2])
        scores.append((op @ dist @ op.T).max() if op is not None else dist.max())
    return np.array(scores)


def main(paths: list[str]) -> int:
    images, kept = [], []
    for p in paths:
        try:
            images.append(load(p))
            kept.append(p)
        except (OSError, ValueError, SyntaxError) as e:  # what Pillow raises for unusable files
            print(f"skipped: {p}: {e}", file=sys.stderr)
    if not images:
        print("error: no usable image to score", file=sys.stderr)
        return 2
    patch = CFG.get("method") == "patch"
    reference = np.load(HERE / CFG["reference_file"], allow_pickle=False)
    reference = reference.astype(np.float64) if patch else unit(reference)
    op = np.load(HERE / CFG["map_operator_file"]) if CFG.get("map_operator_file") else None
    embed, step = embedder(), 16 if patch else 256
    out = csv.writer(sys.stdout)
    out.writerow(["path", "score", "decision"])
    for start in range(0, len(images), step):
        emb = embed(np.stack(images[start : start + step]))
        scores = patch_scores(emb, reference, op) if patch else knn_scores(emb, reference)
        for path, s in zip(kept[start : start + step], scores):
            out.writerow([path, f"{s:.9g}", "anomaly" if s > CFG["threshold"] else "normal"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
