# Set-up and entry targets. `make demo` and `make test` create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= artifacts/demo_data

.PHONY: setup demo test bench-gpu

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Each `make demo` makes new runs (demo_<time>_mae, _reg, _scratch); the data set is simulated once.
DEMO_RUN := demo_$(shell date -u +%Y%m%d_%H%M%S)
DEMO_JOB := PYTHON=$(PY) EXECUTOR=auto CPU_PROCS=1 WAIT=1

demo: setup
	test -d $(DEMO_DIR)/train || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(DEMO_DIR)/train --seed 1
	test -d $(DEMO_DIR)/val || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(DEMO_DIR)/val --events 1000 --shards 1 --seed 2
	$(DEMO_JOB) RUN_NAME=$(DEMO_RUN) ./jobs/run_chain.sh config/mae/mae_demo.yaml config/reg/reg_demo.yaml
	$(DEMO_JOB) RUN_NAME=$(DEMO_RUN)_scratch ./jobs/run_regressor.sh config/reg/reg_demo.yaml
	$(PY) macros/compare_runs.py artifacts/$(DEMO_RUN)_reg artifacts/$(DEMO_RUN)_scratch
	@echo "artifacts: artifacts/$(DEMO_RUN)_mae artifacts/$(DEMO_RUN)_reg artifacts/$(DEMO_RUN)_scratch; MLflow: sqlite:///$(CURDIR)/artifacts/mlflow.db"

test: setup
	$(PY) -m pytest

# GPU benchmark suite (docs/benchmarks.md): full-size MAE and regressor steps, bf16, eager and compiled, at the
# largest batch that fits; appends dated rows to docs/benchmarks.md. Meant to take under 5 minutes on one GPU.
BENCH_DATA ?= artifacts/bench_data/train

bench-gpu: setup
	test -d $(BENCH_DATA) || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(BENCH_DATA) --events 16384 --shards 8 --seed 3
	$(PY) -m lib.bench_train --device cuda --suite --data $(BENCH_DATA)
