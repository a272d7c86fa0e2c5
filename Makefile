# UnTrac runner. `make demo` runs the default job, `make test` the whole test suite;
# both create the virtual environment on first use. `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCALE ?= cpu
# auto: joblib (one single-threaded job per core) at cpu scale, basic at paper scale (paper/targets.py)
LAUNCHER ?= auto
KRONFLUENCE := 'kronfluence>=1.0,<1.1'

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast bench standin clean

help: ## list the targets
	@grep -E '^[a-z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "The paper targets run python -m untrac.paper TARGET; rebuild a table from finished sweeps"
	@echo "with python -m untrac.paper aggregate SWEEP... (--help for either)."

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt --upgrade pip
	# The CPU wheel of torch 2.13.0 first; constraints.txt pins it for every later resolution.
	$(VENV)/bin/pip install -q -c constraints.txt torch==2.13.0
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,ekfac]'
	# kronfluence without its declared torchvision (never imported; its CUDA wheel breaks transformers).
	$(VENV)/bin/pip install -q -c constraints.txt --no-deps $(KRONFLUENCE)
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its test tools

demo: $(STAMP) ## the default job: tiny T5, synthetic data A, UnTrac
	$(PY) -m untrac.run

test: $(STAMP) ## every test, the slow end-to-end ones included
	$(PY) -m pytest -q

test-fast: $(STAMP) ## every test not marked slow (slow: over ~3 s on 2 shared cores)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP) ## UnTrac vs an HF-Trainer ascent loop (steps/s, ratio) and the default run's stage times
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[bench]'
	$(PY) scripts/bench.py $(BENCH_ARGS)

standin: $(STAMP) ## pretrain (or find cached) the stand-in T5 of model=t5_standin (the cpu model of table2, fig2, lds)
	$(PY) scripts/standin.py $(ARGS)

clean: ## remove outputs (results and cache)
	rm -rf outputs

# ---- The paper's results ---------------------------------------------------------------------
# Each target trains the models it needs (independent jobs that fill the shared cache), runs its
# Hydra sweep(s) `experiment=<name> scale=$(SCALE)` (conf/experiment/<name>.yaml + conf/scale/), and writes
# outputs/tables/<name>.{md,tex,csv}
# and outputs/figures/<name>.png with the paper's numbers beside ours (python -m untrac.paper).
#   make table2 SCALE=paper LAUNCHER=submitit_slurm ARGS="hydra.launcher.partition=gpu"
# ARGS: extra Hydra overrides for every job (e.g. cache_dir=..., runs=2). Measured times, with their
# commands and dates, are in docs/results.md.
ARGS ?=
PAPER_TARGET = $(PY) -m untrac.paper $@ --scale $(SCALE) --launcher $(LAUNCHER) -- $(ARGS)
.PHONY: table2 table3 table4 table5 fig2 fig3 fig4 lds

table2: $(STAMP) ## Table 2: standardised influence, synthetic A/B, 8 methods + ground truth
	$(PAPER_TARGET)

table3: $(STAMP) ## Table 3: Pearson, pile8 equal/different sizes × 3 test sets, 8 methods
	$(PAPER_TARGET)

table4: $(STAMP) ## Table 4: UnTrac/UnTrac-Inv across optimizers and learning rates, ToxiGen
	$(PAPER_TARGET)

table5: $(STAMP) ## Table 5: Spearman, the same sweep as Table 3 (reuses a finished `make table3`)
	$(PAPER_TARGET)

fig2: $(STAMP) ## Figure 2: influence over unlearning steps, synthetic A/B
	$(PAPER_TARGET)

fig3: $(STAMP) ## Figure 3: Pearson over unlearning epochs at batch 1 and 256, ToxiGen
	$(PAPER_TARGET)

fig4: $(STAMP) ## Figure 4: ground truth per corpus, all examples vs fixed steps, ToxiGen
	$(PAPER_TARGET)

lds: $(STAMP) ## every method against a bank of subset retrains: group LDS, Shapley, exact p-values (synthA/B, pile8)
	$(PAPER_TARGET)
