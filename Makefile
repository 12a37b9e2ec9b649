# Set-up is `make train` or `make test`: both create the environment when it is missing or stale.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# installed without their declared dependencies (constraints.txt says why), so not in pyproject.toml
NO_DEPS := torchattacks

.PHONY: install test test-fast lint bench train robustness clean

install: $(STAMP)

# Re-installs only when the declared dependencies change, so repeated `make` calls cost nothing.
# pip byte-compiles what it installs (~50 s here): keep it, where PYTHONDONTWRITEBYTECODE is set (as on this
# project's machines) Python would otherwise compile every imported module again in every process.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	$(PIP_INSTALL) --no-deps $(NO_DEPS)
	touch $(STAMP)

# everything, slow tests included: what .ci/run calls
test: install
	$(BIN)/python -m pytest --durations=15

# the edit-run loop: tests under ~2 s each
test-fast: install
	$(BIN)/python -m pytest -m "not slow" --durations=10

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: install
	$(BIN)/python bench/refinement.py --plot bench/refinement_cost.png
	$(BIN)/python bench/lightning_overhead.py --extractor mlp --epochs 12
	$(BIN)/python bench/lightning_overhead.py --extractor cnn --epochs 12
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/evaluation_memory.py

# a robustness comparison (docs/results.md): `make robustness` on digits (5 seeds, ~25-35 min on 2 cores),
# `make robustness-mnist5k` on 5,000 real MNIST digits (3 seeds, ~51 min), the stage-2 comparisons
# `make robustness-digits_frozen` (~8 min), `-mnist5k_frozen` (~20 min), `-mnist5k_frozen_confirm` (~16 min); each is recorded in
# results/robustness_<data>/ with the commit, the command and the machine, and the pages' tables are
# rendered from it; the sentinel is the default recipe's DPN. Run again after a kill, the same command keeps
# the jobs that finished with the same code and overrides, continues a killed job from its last.ckpt and
# runs the rest; `make robustness-fresh-<data>` starts from nothing.
robustness: robustness-digits
# the job each recording's test reruns (tests/robustness/test_committed.py); the frozen comparisons' is a stage-2 job
SENTINEL := recipe=robust_extractor variant=dpn seed=0
SENTINEL_digits_frozen := recipe=frozen_denoiser variant=tweedie seed=0
SENTINEL_mnist5k_frozen := recipe=frozen_denoiser variant=tweedie seed=0
SENTINEL_mnist5k_frozen_confirm := recipe=frozen_denoiser variant=tweedie seed=3
SENTINEL_digits_held_out_frozen := recipe=frozen_denoiser variant=density seed=0
robustness-fresh-%:
	rm -rf outputs/results/robustness_$*
	$(MAKE) robustness-$*
robustness-%: install
	start=$$(date +%s) && commit=$$(git rev-parse HEAD)$$(git status --porcelain -- src conf | grep -q . && echo +dirty || true) && \
	$(BIN)/python -m dpn_lab.train experiment=robustness_$* hydra.sweep.dir=outputs/results/robustness_$* && \
	$(BIN)/python -m dpn_lab.results record robustness_$* outputs/results/robustness_$* --command "make $@" \
		--sentinel "$(or $(SENTINEL_$*),$(SENTINEL))" --seconds $$(( $$(date +%s) - start )) --commit $$commit

train: install
	$(BIN)/python -m dpn_lab.train $(ARGS)

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
