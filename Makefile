# cifarctl: `make demo` runs the offline main job, `make test` runs ruff and the test suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# This machine (and CI) can install exactly these builds from local disk; elsewhere the
# open ranges in pyproject.toml apply. Override with `make TORCH_PIN= test`.
TORCH_PIN ?= $(shell [ -d /etc/xdg/pip ] && echo "torch==2.14.1 torchvision==0.29.1")
STAMP  := $(VENV)/.installed

.PHONY: setup test lint demo bench clean-demo

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(if $(TORCH_PIN),$(BIN)/python -m pip install --quiet $(TORCH_PIN))
	# the ray extra lets the test suite run `sweep --backend ray` on a local Ray instance
	# (ray[default] from PyPI: about 60 s and 380 MB on Python 3.11); the server extra,
	# `cifarctl server` on PostgreSQL (tests/test_cluster.py)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,server]' $(TORCH_PIN)
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check cifarctl tests benchmarks

# two pytest workers (tests/conftest.py gives each one compute thread): the suite is full
# of subprocesses starting Python, which leaves a core idle when run one test at a time
test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

demo: $(STAMP)
	./experiments/demo.sh
