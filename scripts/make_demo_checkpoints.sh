#!/usr/bin/env bash
# Regenerates the small demo runs shipped in checkpoints/ (each under 2 MB), with the project's own CLI.
# Usage: bash scripts/make_demo_checkpoints.sh   (about 6 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
common=(--data mnist-5k --holdout-classes 6,7,8,9 --epochs 8 --seed 0)
rm -rf checkpoints/demo-softmax-2d checkpoints/demo-l2softmax-2d checkpoints/demo-l2softmax-3d
$PY -m core.train "${common[@]}" --loss softmax --dim 2 --name demo-softmax-2d --run-dir checkpoints/demo-softmax-2d
$PY -m core.train "${common[@]}" --loss l2softmax --alpha 16 --dim 2 --name demo-l2softmax-2d \
    --run-dir checkpoints/demo-l2softmax-2d
$PY -m core.train "${common[@]}" --loss l2softmax --alpha 16 --dim 3 --name demo-l2softmax-3d \
    --run-dir checkpoints/demo-l2softmax-3d
if [ "${SKIP_SWEEP:-0}" != 1 ]; then
  rm -rf checkpoints/demo-sweep
  $PY -m core.sweep "${common[@]}" --loss softmax,l2softmax --alphas 1,4,16,64,auto --dim 2 --seeds 0 \
      --projection none --out checkpoints/demo-sweep --root checkpoints/demo-sweep/runs
fi
# the patch (PatchCore) demo on defects drawn into scikit-image's brick photograph, images included
$PY scripts/make_demo_patch_run.py --photo brick
du -sh checkpoints/demo-*
