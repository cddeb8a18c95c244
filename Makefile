# gmem: the two commands of the README. Both build the environment on first use (tools/env.sh).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV = $(shell bash tools/env.sh)
export PYTHONPATH := $(CURDIR)

.PHONY: quickstart test env sync lab

env:  ## build (once) the pinned environment and print where it is
	@echo $(VENV)

quickstart:  ## the main job: offline end-to-end GMem run on MNIST-5k -> reports/quickstart/
	@v="$(VENV)"; "$$v/bin/gmem" quickstart --out reports/quickstart

test:  ## the whole test suite: notebooks in sync with gmem/, nbdev_test (library notebooks), pytest (cross-module + report notebooks)
	@v="$(VENV)"; source "$$v/bin/activate"; \
	python tools/check_sync.py; \
	nbdev_test --n_workers 1 --skip_file_re '^[a-z]'; \
	python -m pytest -q tests

lab:  ## open the notebooks in JupyterLab
	@v="$(VENV)"; source "$$v/bin/activate"; jupyter lab nbs
