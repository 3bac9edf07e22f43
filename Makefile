# Two commands do all the set-up from a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch. On this machine pip finds the 2.13.0 CPU wheel on disk; elsewhere
# use e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" (CPU),
# "torch" (CUDA on Linux, or macOS with MPS).
TORCH_SPEC ?= torch==2.13.0
FMNIST := $(BIN)/fmnist
APT_GET := $(shell command -v apt-get 2>/dev/null)
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

.PHONY: demo test test-unit bundled install install-test data browser postgres lint format notebook clean

demo: install data
	$(FMNIST) show --out samples.png
	$(FMNIST) train --preset default
	$(FMNIST) evaluate runs/latest
	@echo "run directory: $$(readlink -f runs/latest)"

test: install-test data browser postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

# The unit tests alone: no dataset, no trained run, seconds.
test-unit: install-test
	$(BIN)/pytest -q tests/unit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,serve,export]"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[train,serve,export,tune,tensorboard,test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Local sources first (cache, Debian); then Debian's package when we may install it; then
# the official mirrors.
data: install
	@$(FMNIST) data fetch --offline >/dev/null 2>&1 && echo "dataset: verified" || { \
	  if [ -n "$(APT_GET)" ] && [ -n "$(IS_ROOT)" ]; then \
	    apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  fi; \
	  $(FMNIST) data fetch; }

# The browser test drives Debian's chromium headless (a test tool's own browser download
# cannot work offline).
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then echo "browser: ok"; \
	elif [ -n "$(APT_GET)" ] && [ -n "$(IS_ROOT)" ]; then \
	  apt-get update -q && apt-get install -y -q chromium chromium-driver; \
	else echo "browser: install chromium and chromium-driver for tests/integration/test_browser.py"; fi

# The study tests start a throwaway PostgreSQL server of their own (initdb and pg_ctl in a
# temporary directory, tests/integration/pgserver.py): they need Debian's server binaries.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgres: ok"; \
	elif [ -n "$(APT_GET)" ] && [ -n "$(IS_ROOT)" ]; then \
	  apt-get update -q && apt-get install -y -q postgresql; \
	else echo "postgres: install postgresql for tests/integration/test_tune_workers.py"; fi

# Retrain the models that ship in the package from scratch, and bundle them (tools/bundle.py).
# In fp32: bf16 (auto's choice on chips with bf16 units) would score the test set a few
# images differently on chips without them, and the recorded accuracy must hold on all.
# Both train before either is bundled, so both record the clean commit that made them. The
# same weights come back on the same kind of CPU with the same number of threads (torch's
# default: all cores); another thread count sums in another order and ends elsewhere.
# The photo model's seed, 2, was chosen of seeds 0-2 by the development photos, by a rule
# written down before (README: "Choosing the seed again"); seed 1 until shift averaging.
bundled: install data
	$(BIN)/pip install -q -e ".[train,serve,export]"
	rm -rf runs/bundled-default runs/bundled-photo
	$(FMNIST) train --preset default --seed 0 --precision fp32 --out runs/bundled-default --no-report
	$(FMNIST) train --preset photo --seed 2 --precision fp32 --out runs/bundled-photo --no-report
	$(BIN)/python tools/bundle.py runs/bundled-default --name default
	$(BIN)/python tools/bundle.py runs/bundled-photo --name photo

notebook: install
	$(BIN)/pip install -q -e ".[train,notebook]"
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/jupyter lab notebooks/fashion_mnist_cnn.ipynb

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format:
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
