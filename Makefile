# Hypersphere Explorer — developer entry points.
#   make run    create .venv (once), start the app on http://127.0.0.1:8501
#   make test   create .venv (once), install Debian's chromium if missing, run the whole test suite
# pip may print warnings about file:// locations (local wheel mirrors on some machines): harmless.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv run test browser-deps lint format clean-venv

venv: $(STAMP)

# Re-runs pip only when a requirements file is newer than the last successful install.
$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements-dev.txt
	@touch $@

run: venv
	$(BIN)/streamlit run app.py

browser-deps:
	@scripts/install-chromium.sh

test: venv browser-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .

format: venv
	$(BIN)/ruff format .

clean-venv:
	rm -rf $(VENV)
