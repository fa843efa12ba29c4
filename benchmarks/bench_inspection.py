"""Inspection benchmark (issue 10): training-free `knn` and `patch` methods on MVTec-layout sets made
from real photographs shipped with scikit-image (grass, gravel, brick), cut into 64-px patches with
drawn defects (scratch, spot, crack, colour stain, missing piece).

The sets are generated, written as PNGs into a temporary MVTec-layout folder (nothing is committed)
and read back through core.ingest, as an upload would be. Per set and method: AUROC, AUPR, the time to
build (features of the good images + memory bank) and the time to score 100 images. A second table
compares feature extraction (core.features.extract_features) with a bare torch forward pass of the
same network on the same batches. `metric` rows train an embedding head with each loss through
core.train on the frozen backbone's cached features (reference classes: crops of natural photographs);
their build time is the feature extraction (first run of a set; the others read the cache) plus the
head's training. A last line times training a head on cached features for 2,000 images.

    nice .venv/bin/python benchmarks/bench_inspection.py --quick      # smoke run, small sets
    .venv/bin/python benchmarks/bench_inspection.py --write           # full run, into RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_quality import machine, write_section  # noqa: E402

from core.anomaly import roc_pr  # noqa: E402
from core.backbones import EfficientNetLite0Features, default_device, resize_batch  # noqa: E402
from core.features import extract_features  # noqa: E402
from core.ingest import load_image  # noqa: E402
from core.methods import build_method  # noqa: E402
from core.synthetic_defects import DEFECT_KINDS, SPLITS, TEXTURES, make_inspection_set, write_mvtec  # noqa: E402

SCORE_BATCH = 100
# metric rows: (label, loss, alpha); "auto" is the paper's lower bound alpha_low for the set's classes
METRIC_CELLS = (
    ("softmax", "softmax", "16"),
    ("l2softmax a=low", "l2softmax", "auto"),
    ("l2softmax a=4", "l2softmax", "4"),
    ("l2softmax a=16", "l2softmax", "16"),
    ("l2softmax a=64", "l2softmax", "64"),
    ("triplet", "triplet", "16"),
)
HEAD_EPOCHS = 30


def load_mvtec(base: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, test kind: "good" or the defect's) read from PNG files through core.ingest."""
    train_files = sorted((base / "train" / "good").glob("*.png"))
    test_files = sorted((base / "test").glob("*/*.png"))
    train = np.stack([load_image(p, size, 3) for p in train_files])
    test = np.stack([load_image(p, size, 3) for p in test_files])
    return train, test, np.array([p.parent.name for p in test_files])


def auroc_per_kind(scores: np.ndarray, kinds: np.ndarray) -> dict[str, float]:
    """AUROC of the good test images against each defect kind alone: which kind holds a set back."""
    good = scores[kinds == "good"]
    out = {}
    for kind in DEFECT_KINDS:
        bad = scores[kinds == kind]
        if len(bad) and len(good):
            y = np.r_[np.zeros(len(good)), np.ones(len(bad))]
            out[kind] = roc_pr(np.r_[good, bad], y.astype(bool))["auroc"]
    return out


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_method(name: str, train: np.ndarray, test: np.ndarray, kinds: np.ndarray, image_size: int) -> dict:
    method = build_method(name, image_size=image_size)
    _, build_s = timed(method.fit, train)
    scores, _ = timed(method.score, test)
    scores = np.asarray(scores)
    batch = np.resize(test, (SCORE_BATCH, *test.shape[1:]))  # 100 images, repeating the test set
    _, score100_s = timed(method.score, batch)
    curves = roc_pr(scores, kinds != "good")
    return {
        "method": name,
        "auroc": curves["auroc"],
        "aupr": curves["aupr"],
        "per_kind": auroc_per_kind(scores, kinds),
        "build_s": build_s,
        "score100_s": score100_s,
        "notices": "; ".join(method.notices),
    }


def run_metric(
    label: str, loss: str, alpha: str, base: Path, tmp: Path, image_size: int, epochs: int = HEAD_EPOCHS
) -> dict:
    """One core.train run (frozen pretrained backbone, head on cached features) and its scoring time."""
    from core.method_scoring import score_images
    from core.runs import load_run
    from core.train import TrainConfig, train

    run_dir = tmp / "runs" / f"{base.name}-{label.replace(' ', '_').replace('=', '')}"
    cfg = TrainConfig(
        data=str(base),
        data_root=str(tmp / "root"),
        loss=loss,
        alpha=alpha,
        epochs=epochs,
        image_size=image_size,
        projection="none",
        run_dir=str(run_dir),
    )
    summary = train(cfg)
    run = load_run(run_dir)
    test_files = sorted((base / "test").glob("*/*.png"))
    batch = np.resize(
        np.stack([load_image(p, image_size, 3) for p in test_files]), (SCORE_BATCH, 3, image_size, image_size)
    )
    _, score100_s = timed(score_images, run, batch)
    return {
        "method": f"metric {label}",
        "auroc": summary["anomaly_auroc"],
        "aupr": summary["anomaly_aupr"],
        "build_s": summary["feature_seconds"] + summary["train_seconds"],
        "score100_s": score100_s,
        "notices": f"head {summary['train_seconds']:.1f}s, cache hits {summary['feature_cache_hits']}/3",
    }


def head_on_cached_features(n: int = 2000, epochs: int = 8) -> dict:
    """Seconds to train an L2-softmax embedding head on cached pooled features of n images (11 classes,
    like one normal class + 10 reference photographs), through core.fit's loop."""
    from core.data import DataBundle, Split
    from core.distributed import DistInfo
    from core.fit import fit
    from core.headfit import PooledFeatureInput
    from core.losses import build_head
    from core.models import MetricModel
    from core.rundir import NoWriter
    from core.train import TrainConfig

    rng = np.random.default_rng(0)
    classes = 11
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, 1280)).astype(np.float32)
    x = torch.from_numpy(np.abs(centres[y] + rng.normal(scale=2.0, size=(n, 1280)).astype(np.float32)))

    def split(rows: np.ndarray) -> Split:
        return Split(x[rows], y[rows], np.zeros(len(rows), bool), [f"f#{i}" for i in rows])

    bundle = DataBundle(
        "features",
        [str(c) for c in range(classes)],
        list(range(classes)),
        [0],
        3,
        224,
        split(np.arange(n)),
        split(np.arange(200)),
        split(np.arange(200)),
        [],
    )
    cfg = TrainConfig(loss="l2softmax", alpha="16", dim=64, epochs=epochs, augment=False)
    head = torch.nn.Sequential(torch.nn.Linear(1280, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64))
    model = MetricModel(PooledFeatureInput(head), build_head("l2softmax", 64, classes, alpha=16.0))
    fitted, seconds = timed(
        fit, model, bundle, cfg, torch.device("cpu"), DistInfo(), NoWriter(), lambda e: None, lambda: None
    )
    return {"n": n, "epochs": epochs, "seconds": seconds, "samples_per_s": fitted.samples_per_second}


def extraction_vs_bare(images: np.ndarray, image_size: int, batch_size: int = 32, repeats: int = 2) -> dict:
    """Throughput of extract_features against a bare forward of the same network on the same batches
    (the bare loop gets batches already resized and on the device, so it is an upper bound)."""
    device = default_device()
    net = EfficientNetLite0Features(True, image_size).to(device).eval()
    x = torch.from_numpy(images)
    batches = [
        resize_batch(x[i : i + batch_size], image_size).to(device) for i in range(0, len(x), batch_size)
    ]

    @torch.inference_mode()
    def bare() -> None:
        for b in batches:
            net(b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours() -> None:
        extract_features(images, "global", image_size, extractor=net, batch_size=batch_size, device=device)

    bare()  # warm-up
    t_bare = min(timed(bare)[1] for _ in range(repeats))
    t_ours = min(timed(ours)[1] for _ in range(repeats))
    n = len(images)
    return {"n": n, "bare_img_s": n / t_bare, "ours_img_s": n / t_ours, "ratio": t_bare / t_ours}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=",".join(TEXTURES))
    ap.add_argument("--n-train", type=int, default=300)
    ap.add_argument("--n-test-good", type=int, default=70)
    ap.add_argument("--n-test-defect", type=int, default=70)
    ap.add_argument("--patch-size", type=int, default=64, help="side of the crops cut from each photograph")
    ap.add_argument("--image-size", type=int, default=224, help="backbone input size")
    ap.add_argument("--methods", default="metric,knn,patch")
    ap.add_argument(
        "--split",
        default="stripes",
        choices=SPLITS,
        help="training vs test crops: alternate bands of the photo (default) or its two halves",
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 train, 10+10 test, 128 px")
    ap.add_argument("--head-epochs", type=int, default=HEAD_EPOCHS, help="epochs of the metric runs' heads")
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test_good, args.n_test_defect, args.image_size = 30, 10, 10, 128

    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_inspection_") as tmp:
        for i, photo in enumerate(args.photos.split(",")):
            data = make_inspection_set(
                photo,
                args.n_train,
                args.n_test_good,
                args.n_test_defect,
                args.patch_size,
                seed=i,
                split=args.split,
            )
            base = write_mvtec(data, Path(tmp))
            train, test, kinds = load_mvtec(base, args.patch_size)
            methods = args.methods.split(",")
            cells = [("metric", *cell) for cell in METRIC_CELLS] if "metric" in methods else []
            cells += [(m,) for m in methods if m != "metric"]
            for cell in cells:
                if cell[0] == "metric":
                    row = {
                        "set": photo,
                        **run_metric(*cell[1:], base, Path(tmp), args.image_size, args.head_epochs),
                    }
                else:
                    row = {"set": photo, **run_method(cell[0], train, test, kinds, args.image_size)}
                name = row["method"]
                rows.append(row)
                print(
                    f"{photo:8s} {name:18s} AUROC {row['auroc']:.3f} AUPR {row['aupr']:.3f} "
                    f"build {row['build_s']:.1f}s score100 {row['score100_s']:.1f}s",
                    flush=True,
                )
        speed = extraction_vs_bare(train, args.image_size)
    speed["head"] = head_on_cached_features()
    print(
        f"extraction {speed['ours_img_s']:.1f} img/s, bare forward {speed['bare_img_s']:.1f} img/s, "
        f"ratio {speed['ratio']:.2f}; head on cached features, 2,000 images x {speed['head']['epochs']} "
        f"epochs: {speed['head']['seconds']:.1f}s",
        flush=True,
    )
    body = report(rows, speed, args, time.perf_counter() - t0)
    print(body)
    if args.write:
        write_section("Inspection methods (issue 10)", body)


def report(rows: list[dict], speed: dict, args: argparse.Namespace, wall_s: float) -> str:
    lines = [
        f"Sets: {args.photos} (scikit-image photographs), {args.patch_size}-px crops, {args.n_train} good "
        f"training images, {args.n_test_good} good + {args.n_test_defect} defect test images (scratch, spot, "
        f"crack, colour stain, missing piece), backbone input {args.image_size} px, "
        "ImageNet-pretrained EfficientNet-Lite0. Training and test crops come from "
        + ("alternate 2-crop-wide bands" if args.split == "stripes" else "the left and right halves")
        + " of each photograph.",
        "",
        f"`metric` rows: core.train, frozen pretrained backbone, head trained {args.head_epochs} epochs "
        "on cached features; reference classes = crops of natural photographs (one-class upload).",
        "",
        "| set | method | AUROC | AUPR | build (s) | score 100 images (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['method']} | {r['auroc']:.3f} | {r['aupr']:.3f} | "
            f"{r['build_s']:.1f} | {r['score100_s']:.1f} |"
        )
    kinds_rows = [r for r in rows if r.get("per_kind")]
    if kinds_rows:
        lines += ["", "AUROC of the good test images against one defect kind at a time:", ""]
        lines += [
            "| set | method | " + " | ".join(DEFECT_KINDS) + " |",
            "|---|---|" + "---|" * len(DEFECT_KINDS),
        ]
        for r in kinds_rows:
            cells = " | ".join(f"{r['per_kind'].get(k, float('nan')):.3f}" for k in DEFECT_KINDS)
            lines.append(f"| {r['set']} | {r['method']} | {cells} |")
    lines += [
        "",
        f"Feature extraction: {speed['ours_img_s']:.1f} images/s against {speed['bare_img_s']:.1f} images/s "
        f"for a bare forward pass on the same {speed['n']} images (ratio {speed['ratio']:.2f}).",
        "",
        f"Training an L2-softmax head (1280 -> 512 -> 64, alpha 16) on cached features of "
        f"{speed['head']['n']:,} images for {speed['head']['epochs']} epochs: "
        f"{speed['head']['seconds']:.1f} s "
        f"({speed['head']['samples_per_s']:.0f} samples/s in the optimiser steps).",
        "",
        f"- Machine: {machine()}; wall time {wall_s / 60:.1f} min",
        f"- Command: `python benchmarks/bench_inspection.py{' --quick' if args.quick else ''} "
        f"--split {args.split} --image-size {args.image_size} --methods {args.methods} --write`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
