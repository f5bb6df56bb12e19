# make test      — set up .venv on a fresh clone (torch first, CPU wheel) and run the whole test suite
#                  (pytest-xdist: two workers, one per core of the 2-core machines it is sized for)
# make test-fast — the same without the tests marked slow (real CIFAR-10, torch.compile): no data needed
# make reproduce — the README's main job: `dainv reproduce --preset quick` (~10 min on 2 CPU cores)
# make bench     — performance records (benchmarks/), appended to benchmarks/results/
# make bench-gpu — the GPU benchmark (needs a CUDA GPU; refuses cleanly without one)
# make lint      — ruff
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Pin torch and install it first: a looser requirement pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Data: for developers whose checkout sits beside a shared data folder (../shared/data, holding
# cifar-10-batches-py/), the tests and `make reproduce` read CIFAR-10 from there. Anywhere else
# DAINV_DATA stays unset and dainv uses its own default, ~/.cache/dainv (README, "Quick start"),
# downloading CIFAR-10 there once. `make ... DAINV_DATA=DIR` (or the environment) overrides both.
export DAINV_DATA ?= $(if $(wildcard ../shared/data/cifar-10-batches-py),$(abspath ../shared/data))

.PHONY: setup test test-fast lint reproduce bench bench-gpu clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[dev,tensorboard]"
	touch $@

setup: $(BIN)/.installed

test: setup
	$(BIN)/python -m pytest -q -n 2

test-fast: setup
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks

reproduce: setup
	$(BIN)/dainv reproduce --preset quick

bench: setup
	$(BIN)/python benchmarks/run.py

bench-gpu: setup
	$(BIN)/python benchmarks/run.py --device cuda --only ops,gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache src/*.egg-info
