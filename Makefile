# Lepton — developer commands. `make quickstart` and `make test` work on a fresh machine
# (Python 3.11 + pip): they create .venv, install the CPU build of PyTorch first (so that no
# CUDA build is pulled), then the package with its dev extras.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
# Where pip looks for that wheel: empty = the configured index (a local CPU wheel here). On a
# machine that reaches pypi.org, `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`
# takes the CPU build from PyTorch's own index instead of PyPI's CUDA build.
TORCH_INDEX ?=
STAMP := $(VENV)/.lepton-installed
PYTEST_ARGS ?=

.PHONY: setup quickstart test lint format docs clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)") "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

quickstart: setup
	$(VENV)/bin/lepton train examples/penguins.yaml --run-dir runs/quickstart --overwrite --baselines

test: setup
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

docs: setup
	$(PY) -m lepton._docgen > docs/configuration.md

clean:
	rm -rf runs .pytest_cache build dist src/*.egg-info
