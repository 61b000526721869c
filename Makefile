# The project's jobs. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup services test test-fast demo serve bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m modeling.cpu_kernels  # builds the CPU decode kernel now (or says why not)
	touch $(STAMP)

services:
	bash scripts/ensure_services.sh

# The whole suite, slow tests included (CI runs this).
test: setup services
	bash scripts/ensure_browser.sh
	bash scripts/ensure_pacs.sh
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

# Everything but the tests marked slow.
test-fast: setup services
	bash scripts/ensure_pacs.sh
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: setup services
	$(BIN)/radreport demo

serve: setup services
	$(BIN)/radreport demo --serve

bench: setup
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/train_step.py

# ruff, the layer contracts of pyproject.toml (import-linter) and the private-name check.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q tests/test_architecture.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache var runs
