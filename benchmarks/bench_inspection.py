"""Inspection benchmark (issue 10): training-free `knn` and `patch` methods on MVTec-layout sets made
from real photographs shipped with scikit-image (grass, gravel, brick), cut into 64-px patches with
drawn defects (scratch, spot, crack, colour stain, missing piece).

The sets are generated, written as PNGs into a temporary MVTec-layout folder (nothing is committed)
and read back through core.ingest, as an upload would be. Per set and method: AUROC, AUPR, the time to
build (features of the good images + memory bank) and the time to score 100 images. A second table
compares feature extraction (core.features.extract_features) with a bare torch forward pass of the
same network on the same batches. `metric` rows (trained heads) come once the trainer takes --arch
efficientnet-lite0 and --method.

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
from core.synthetic_defects import TEXTURES, make_inspection_set, write_mvtec  # noqa: E402

SCORE_BATCH = 100


def load_mvtec(base: Path, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, test, test_is_defect) read from PNG files through core.ingest."""
    train_files = sorted((base / "train" / "good").glob("*.png"))
    test_files = sorted((base / "test").glob("*/*.png"))
    train = np.stack([load_image(p, size, 3) for p in train_files])
    test = np.stack([load_image(p, size, 3) for p in test_files])
    return train, test, np.array([p.parent.name != "good" for p in test_files])


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def run_method(name: str, train: np.ndarray, test: np.ndarray, y: np.ndarray, image_size: int) -> dict:
    method = build_method(name, image_size=image_size)
    _, build_s = timed(method.fit, train)
    scores, _ = timed(method.score, test)
    batch = np.resize(test, (SCORE_BATCH, *test.shape[1:]))  # 100 images, repeating the test set
    _, score100_s = timed(method.score, batch)
    curves = roc_pr(scores, y)
    return {
        "method": name,
        "auroc": curves["auroc"],
        "aupr": curves["aupr"],
        "build_s": build_s,
        "score100_s": score100_s,
        "notices": "; ".join(method.notices),
    }


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
    ap.add_argument("--methods", default="knn,patch")
    ap.add_argument("--quick", action="store_true", help="smoke run: 30 train, 10+10 test, 128 px")
    ap.add_argument("--write", action="store_true", help="write the tables into benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_test_good, args.n_test_defect, args.image_size = 30, 10, 10, 128

    rows, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_inspection_") as tmp:
        for i, photo in enumerate(args.photos.split(",")):
            data = make_inspection_set(
                photo, args.n_train, args.n_test_good, args.n_test_defect, args.patch_size, seed=i
            )
            base = write_mvtec(data, Path(tmp))
            train, test, y = load_mvtec(base, args.patch_size)
            for name in args.methods.split(","):
                row = {"set": photo, **run_method(name, train, test, y, args.image_size)}
                rows.append(row)
                print(
                    f"{photo:8s} {name:6s} AUROC {row['auroc']:.3f} AUPR {row['aupr']:.3f} "
                    f"build {row['build_s']:.1f}s score100 {row['score100_s']:.1f}s",
                    flush=True,
                )
        speed = extraction_vs_bare(train, args.image_size)
    print(
        f"extraction {speed['ours_img_s']:.1f} img/s, bare forward {speed['bare_img_s']:.1f} img/s, "
        f"ratio {speed['ratio']:.2f}"
    )
    if args.write:
        write_section("Inspection methods (issue 10)", report(rows, speed, args, time.perf_counter() - t0))


def report(rows: list[dict], speed: dict, args: argparse.Namespace, wall_s: float) -> str:
    lines = [
        f"Sets: {args.photos} (scikit-image photographs), {args.patch_size}-px crops, {args.n_train} good "
        f"training images, {args.n_test_good} good + {args.n_test_defect} defect test images (scratch, spot, "
        f"crack, colour stain, missing piece), backbone input {args.image_size} px, "
        "ImageNet-pretrained EfficientNet-Lite0.",
        "",
        "| set | method | AUROC | AUPR | build (s) | score 100 images (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} | {r['method']} | {r['auroc']:.3f} | {r['aupr']:.3f} | "
            f"{r['build_s']:.1f} | {r['score100_s']:.1f} |"
        )
    lines += [
        "",
        f"Feature extraction: {speed['ours_img_s']:.1f} images/s against {speed['bare_img_s']:.1f} images/s "
        f"for a bare forward pass on the same {speed['n']} images (ratio {speed['ratio']:.2f}).",
        "",
        f"- Machine: {machine()}; wall time {wall_s / 60:.1f} min",
        f"- Command: `python benchmarks/bench_inspection.py{' --quick' if args.quick else ''} --write`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
