# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO := build/demo

.PHONY: setup demo test clean openvino-env

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

test: setup openvino-env
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf build .pytest_cache

# OpenVINO EP ships its own onnxruntime build: it lives in its own environment, reached by a
# torch-free worker (fastattn/exporter/environments.py).
openvino-env: .venv-openvino/.installed

.venv-openvino/.installed: constraints-openvino.txt
	test -x .venv-openvino/bin/python || $(PYTHON) -m venv .venv-openvino
	.venv-openvino/bin/python -m pip --disable-pip-version-check -q install -r constraints-openvino.txt
	touch $@
