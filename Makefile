# Two commands for a newcomer: `make demo` runs the whole pipeline on synthetic data,
# `make test` runs the test suite. Both create the virtualenv first, from requirements.lock.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
EXTRAS := workflow,dev,remote
# The lock pins the slurm extra too (make slurm-plugin installs it beside the venv).
LOCK_EXTRAS := $(EXTRAS),slurm

.PHONY: venv demo test test-fast lint lock check-core clean slurm-plugin

# Every package at the version the lock pins (torch's CPU build included); elasticdeform is
# built from source against numpy 2, as the lock's --no-binary line says.
$(BIN)/unetflow: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $@

venv: $(BIN)/unetflow

# SLURM's executor plugin in a folder of its own, for PYTHONPATH=.slurm-plugin snakemake ...:
# in the venv, every snakemake call would pay its ~9 s import where no controller answers.
SLURM_PLUGIN := .slurm-plugin
$(SLURM_PLUGIN)/snakemake_executor_plugin_slurm: $(BIN)/unetflow $(LOCK)
	rm -rf $(SLURM_PLUGIN)
	$(BIN)/pip install -q -c $(LOCK) --no-deps --target $(SLURM_PLUGIN) \
	  snakemake-executor-plugin-slurm snakemake-executor-plugin-slurm-jobstep
	touch $@

slurm-plugin: $(SLURM_PLUGIN)/snakemake_executor_plugin_slurm

demo: venv
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --cores all --config preset=quick

# Tests run on WORKERS processes (pytest-xdist), a test file to a worker so that its fixtures are
# built once; tests/conftest.py hands out the engine tests first, the unit tests fill in after.
WORKERS ?= 2
PYTEST := pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

test: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(PYTEST)

# The edit loop: every test that does not run Snakemake or DVC (those are marked e2e).
test-fast: venv
	PATH=$(CURDIR)/$(BIN):$$PATH $(PYTEST) -m "not e2e"

lint: venv
	$(BIN)/ruff check src scripts tests tools
	$(BIN)/ruff format --check src scripts tests tools
	PATH=$(CURDIR)/$(BIN):$$PATH snakefmt --check Snakefile workflow
	PATH=$(CURDIR)/$(BIN):$$PATH snakemake --lint

# Re-pin every package: resolve pyproject.toml (all extras) in a fresh virtualenv and freeze it.
# pip sees the CPU build of torch on this machine's disk (its find-links); uv and poetry do not.
lock:
	rm -rf .lock-venv build
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q torch==2.13.0
	.lock-venv/bin/pip install -q --no-binary elasticdeform '.[$(LOCK_EXTRAS)]'
	{ echo "# Every package unetflow installs, pinned: make lock (pip freeze of a fresh venv)."; \
	  echo "# Used as constraints: pip install -c $(LOCK) -e '.[$(LOCK_EXTRAS)]' (or '.' for the core)."; \
	  echo "# elasticdeform's wheels are built against numpy 1.x: build it from source."; \
	  echo "--no-binary elasticdeform"; \
	  .lock-venv/bin/pip freeze --exclude-editable | grep -v '^unetflow' ; } > $(LOCK)
	rm -rf .lock-venv build

# The light core: a fresh virtualenv with `pip install -c requirements.lock .` (no extras) runs
# `unetflow predict` on a model trained in the full one, without snakemake, dvc or dvclive.
check-core: venv
	$(BIN)/python tools/check_core.py

clean:
	rm -rf $(VENV)
