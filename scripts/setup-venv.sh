#!/usr/bin/env bash
# Creates .venv (once) and installs requirements-dev.txt; pip runs again only when a requirements
# file is newer than the last successful install. Needs only Python 3.11.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
stamp=.venv/.installed
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ requirements-dev.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install -r requirements-dev.txt
  touch "$stamp"
fi
