"""Rebuild the shipped demo patch run, ``checkpoints/demo-patch-brick``, reproducibly:

    .venv/bin/python scripts/make_demo_patch_run.py [--photo brick]

1. Cuts an MVTec-layout set from scikit-image's real ``brick`` photograph (core.synthetic_defects):
   40 good training crops of 128 px; 8 good and 10 defect test crops (scratch, spot, crack, rust
   stain, missing piece), all from the whole photograph (``disjoint=False``: the photograph's two
   halves differ in perspective, and good crops of one half would all score as anomalies against a
   memory bank of the other). They are stored as JPEGs inside the run, under ``images/``, so its
   galleries show them on a fresh clone.
2. Trains ``python -m core.train --method patch --patch-bank 600`` on it: a PatchCore memory bank of
   600 pretrained EfficientNet-Lite0 patch features (about 0.4 MB) instead of the default 5,000.
3. Stores the images' paths relative to the repository root (the app runs from there), not as this
   machine's absolute paths, and names the data as a user would read it ("brick photo, drawn defects").

The whole run directory stays well under 1 MB. Deterministic (seed 0); about a minute on 2 cores."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from core.fsutil import read_json, write_json, write_npz  # noqa: E402
from core.rundir import EMBEDDINGS_FILE, SUMMARY_FILE  # noqa: E402
from core.synthetic_defects import make_inspection_set, write_mvtec  # noqa: E402

N_TRAIN, N_TEST_GOOD, N_TEST_DEFECT = 40, 8, 10
CROP_SIDE = 128
PATCH_BANK = 600
SEED = 0


def relative_sources(run_dir: Path, repo: Path = REPO) -> int:
    """Rewrite embeddings.npz's ``source`` column from absolute paths under ``repo`` to paths relative
    to it; returns how many changed."""
    path = run_dir / EMBEDDINGS_FILE
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    prefix = f"{repo}/"
    sources = [str(s) for s in arrays["source"]]
    arrays["source"] = np.array([s.removeprefix(prefix) for s in sources])
    write_npz(path, **arrays)
    return sum(s.startswith(prefix) for s in sources)


def name_the_data(run_dir: Path, photo: str) -> str:
    """Record the data's name for the pages (``data_name``, read by core.catalog.data_label) in the
    run's summary, instead of the images' folder path (config.json takes only TrainConfig's fields)."""
    name = f"{photo} photo (scikit-image), drawn defects"
    write_json(run_dir / SUMMARY_FILE, {**read_json(run_dir / SUMMARY_FILE), "data_name": name})
    return name


def build(photo: str, run_dir: Path) -> Path:
    """The demo run of ``photo`` in ``run_dir`` (replaced); returns the run directory."""
    shutil.rmtree(run_dir, ignore_errors=True)
    dataset = make_inspection_set(
        photo, N_TRAIN, N_TEST_GOOD, N_TEST_DEFECT, size=CROP_SIDE, seed=SEED, disjoint=False
    )
    images = write_mvtec(dataset, run_dir / "images", suffix=".jpg")
    cmd = [sys.executable, "-m", "core.train", "--data", str(images.relative_to(REPO)),
           "--method", "patch", "--patch-bank", str(PATCH_BANK), "--seed", str(SEED),
           "--name", run_dir.name, "--run-dir", str(run_dir.relative_to(REPO))]  # fmt: skip
    subprocess.run(cmd, cwd=REPO, check=True)
    changed = relative_sources(run_dir)
    if not changed:
        raise SystemExit(f"{run_dir / EMBEDDINGS_FILE}: no source path under {REPO} to make relative")
    name_the_data(run_dir, photo)
    return run_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", default="brick", help="a scikit-image photograph (brick, grass, gravel)")
    args = ap.parse_args()
    run_dir = build(args.photo, REPO / "checkpoints" / f"demo-patch-{args.photo}")
    size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file())
    print(f"{run_dir.relative_to(REPO)}: {size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
