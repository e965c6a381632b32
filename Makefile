# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO := build/demo

.PHONY: setup demo test lint clean openvino-env genai-env web-env chromium

setup: $(VENV)/.installed

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -c constraints.txt torch==2.13.0
	$(PIP) install -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/fastattn create default -o $(DEMO)/model.pt
	$(VENV)/bin/fastattn-export $(DEMO)/model.pt -o $(DEMO)/out --force
	$(VENV)/bin/fastattn run $(DEMO)/out --random --size batch=1 --size sequence=16

test: setup openvino-env web-env chromium lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# Style, layers (import contracts, transitive) and types of the torch-free runtime.
lint: setup
	$(VENV)/bin/ruff check fastattn tests benchmarks examples
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

clean:
	rm -rf build .pytest_cache

# OpenVINO EP ships its own onnxruntime build: it lives in its own environment, reached by a
# torch-free worker (fastattn/exporter/environments.py).
openvino-env: .venv-openvino/.installed

.venv-openvino/.installed: constraints-openvino.txt
	test -x .venv-openvino/bin/python || $(PYTHON) -m venv .venv-openvino
	.venv-openvino/bin/python -m pip --disable-pip-version-check -q install -r constraints-openvino.txt
	touch $@

# ONNX Runtime GenAI and its model builder (transformers, torch, onnx-ir): the reference of the decoding
# benchmark (benchmarks/genai.py), in its own environment; not part of `make test` or `make demo`.
genai-env: .venv-genai/.installed

.venv-genai/.installed: constraints-genai.txt
	test -x .venv-genai/bin/python || $(PYTHON) -m venv .venv-genai
	.venv-genai/bin/python -m pip --disable-pip-version-check -q install -c constraints-genai.txt torch==2.13.0
	.venv-genai/bin/python -m pip --disable-pip-version-check -q install -r constraints-genai.txt
	touch $@

# onnxruntime-web (pinned by fastattn/runtime/web/package-lock.json) for the wasm provider and target:
# Node runs fastattn/runtime/web/worker.mjs with it. --ignore-scripts: nothing is fetched beyond npm.
web-env: .venv-web/.installed

.venv-web/.installed: fastattn/runtime/web/package.json fastattn/runtime/web/package-lock.json
	mkdir -p .venv-web
	cp fastattn/runtime/web/package.json fastattn/runtime/web/package-lock.json .venv-web/
	cd .venv-web && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

# Headless Chromium + chromedriver for the browser test of examples/web (Debian packages; root here).
chromium:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		(apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
