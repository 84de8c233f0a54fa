# Two commands for a newcomer: `make demo` runs the whole pipeline on synthetic data,
# `make test` runs the test suite. Both create the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: venv demo test lint clean

$(BIN)/unetflow: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: it comes from local disk (CPU build) instead of a multi-GB CUDA download
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	# elasticdeform's only wheels are built against numpy 1.x: build it here against numpy 2
	$(BIN)/pip install -q --no-binary elasticdeform -e '.[dev,slurm]'
	touch $@

venv: $(BIN)/unetflow

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores all --config preset=quick

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH pytest -q

lint: venv
	$(BIN)/ruff check src scripts tests tools
	$(BIN)/ruff format --check src scripts tests tools
	PATH=$(CURDIR)/$(BIN):$$PATH snakefmt --check Snakefile workflow
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --lint

clean:
	rm -rf $(VENV)
