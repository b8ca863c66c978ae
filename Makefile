# The two entry points of the README: `make run` (set up, then the main job: a small GPT-2
# trained with DDP on 2 processes, examples/train_gpt.py) and
# `make test` (set up, then the whole test suite). Both create the virtual environment
# on first use, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.axonml-installed

.PHONY: setup run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/axonml-launch --standalone --nproc-per-node 2 examples/train_gpt.py

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile tests

lint: $(STAMP)
	$(PY) -m ruff check axonml tests bench examples

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) bench/ops.py
	OMP_NUM_THREADS=1 $(PY) bench/train_step.py
	OMP_NUM_THREADS=1 $(PY) bench/collectives.py
	OMP_NUM_THREADS=1 $(PY) bench/ddp.py
	OMP_NUM_THREADS=1 $(PY) bench/fsdp.py
	OMP_NUM_THREADS=1 $(PY) bench/launch.py
	OMP_NUM_THREADS=1 $(PY) bench/gpt.py

clean:
	rm -rf $(VENV) build *.egg-info
