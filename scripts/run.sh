#!/usr/bin/env bash
# Installs into .venv (first time only) and starts the app at http://127.0.0.1:8501 on the bundled MNIST.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup-venv.sh
exec .venv/bin/streamlit run app.py "$@"
