# gmem: the two commands of the README. Both build the environment on first use (tools/env.sh).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV = $(shell bash tools/env.sh)
export PYTHONPATH := $(CURDIR)
# OpenMP threads sleep instead of spinning while they wait: with spinning, 2 torch threads on a 2-core machine that is
# doing anything else run ~5x slower than 1 thread (measured); with this they are as fast as the machine allows.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: quickstart quickstart-report test env sync lab docs

env:  ## build (once) the pinned environment and print where it is
	@echo $(VENV)

quickstart:  ## the main job: offline end-to-end GMem run on MNIST-5k -> quickstart/ (git-ignored)
	@v="$(VENV)"; "$$v/bin/gmem" quickstart --out quickstart

quickstart-report:  ## the same run, rewriting the committed report in reports/quickstart/
	@v="$(VENV)"; "$$v/bin/gmem" quickstart --out reports/quickstart

test:  ## the whole test suite: notebooks in sync with gmem/, the emoji data (fetched once: gmem data fetch emoji), nbdev_test (library notebooks), pytest (cross-module + report notebooks); both cores; prints the slowest
	@v="$(VENV)"; source "$$v/bin/activate"; \
	python tools/check_sync.py; \
	gmem data fetch emoji; \
	nbdev_test --n_workers 2 --path nbs/api --timing; \
	python -m pytest -q -n 2 --dist loadgroup --durations=10 tests

lab:  ## open the notebooks in JupyterLab
	@v="$(VENV)"; source "$$v/bin/activate"; jupyter lab nbs

docs:  ## the documentation site in _docs/ (nbdev_docs: nbs/index.ipynb is the front page, nbs/api/ the chapters); needs Quarto
	@v="$(VENV)"; source "$$v/bin/activate"; \
	command -v quarto >/dev/null || pip install -q quarto-cli==1.10.19 || { \
	  echo "gmem: make docs needs the Quarto CLI. The quarto-cli package downloads Quarto from GitHub while it installs;"; \
	  echo "      where GitHub is unreachable install Quarto (quarto.org) by hand and rerun make docs."; exit 1; }; \
	nbdev_docs
