# Set-up and entry targets. `make demo` and `make test` create .venv if missing.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= artifacts/demo_data

.PHONY: setup demo-data demo demo-inpainter test bench-gpu

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

demo-data: setup
	test -d $(DEMO_DIR)/train || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(DEMO_DIR)/train --seed 1
	test -d $(DEMO_DIR)/val || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(DEMO_DIR)/val --events 1000 --shards 1 --seed 2

demo: demo-data
	$(DEMO_JOB) RUN_NAME=$(DEMO_RUN) ./jobs/run_chain.sh config/mae/mae_demo.yaml config/reg/reg_demo.yaml
	$(DEMO_JOB) RUN_NAME=$(DEMO_RUN)_scratch ./jobs/run_regressor.sh config/reg/reg_demo.yaml
	$(PY) macros/compare_runs.py artifacts/$(DEMO_RUN)_reg artifacts/$(DEMO_RUN)_scratch
	@echo "artifacts: artifacts/$(DEMO_RUN)_mae artifacts/$(DEMO_RUN)_reg artifacts/$(DEMO_RUN)_scratch; MLflow: sqlite:///$(CURDIR)/artifacts/mlflow.db"

# MAE -> dead-channel inpainter (runs demo_<time>_mae, _inp), then a pseudo-experiment on the validation events:
# 5 % of the sensors hidden, filled by the inpainter and the neighbour / solid-angle baselines, the table printed.
demo-inpainter: demo-data
	$(DEMO_JOB) RUN_NAME=$(DEMO_RUN) ./jobs/run_chain.sh config/mae/mae_demo.yaml config/inp/inpainter_demo.yaml --second inpainter
	$(PY) -m lib.inpaint validate --checkpoint artifacts/$(DEMO_RUN)_inp/checkpoints/best.pt --input $(DEMO_DIR)/val \
		--artificial-fraction 0.05 --out artifacts/$(DEMO_RUN)_inp/validation
	@echo "artifacts: artifacts/$(DEMO_RUN)_mae artifacts/$(DEMO_RUN)_inp; MLflow: sqlite:///$(CURDIR)/artifacts/mlflow.db"

test: setup
	$(PY) -m pytest

# GPU benchmark suite (docs/benchmarks.md): full-size MAE and regressor steps, bf16, eager and compiled, at the
# largest batch that fits; appends dated rows to docs/benchmarks.md. Meant to take under 5 minutes on one GPU.
BENCH_DATA ?= artifacts/bench_data/train

bench-gpu: setup
	test -d $(BENCH_DATA) || $(PY) -m lib.sim --config config/sim/demo.yaml --out $(BENCH_DATA) --events 16384 --shards 8 --seed 3
	$(PY) -m lib.bench_train --device cuda --suite --data $(BENCH_DATA)
