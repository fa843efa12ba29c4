#!/usr/bin/env bash
# Installs into .venv (first time only), installs Debian's Chromium if missing, runs every test.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -m "not browser".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-venv.sh
bash scripts/install-chromium.sh
exec .venv/bin/python -m pytest -q "$@"
