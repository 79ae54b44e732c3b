# Set-up and entry targets. `make demo` and `make test` create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= artifacts/demo_data

.PHONY: setup demo test clean-demo

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m lib.data.simulate --config config/sim/demo.yaml --out $(DEMO_DIR) --seed 1
	$(PY) -m lib.data.bench --input $(DEMO_DIR)/train

test: setup
	$(PY) -m pytest
