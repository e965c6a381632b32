# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
DEMO := build/demo

.PHONY: setup demo test clean

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

test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf build .pytest_cache
