# Convenience targets; the scripts are the real entry points (they need only bash and Python 3.11).
.PHONY: venv run test lint format
venv:
	bash scripts/setup-venv.sh
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh $(PYTEST_ARGS)
lint: venv
	.venv/bin/ruff check .
format: venv
	.venv/bin/ruff format .
