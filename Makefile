# Two commands matter: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint proto proto-check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: setup
	$(PY) deploy/local/run.py

test: setup proto-check lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

proto: setup
	$(PY) proto/generate.py

proto-check: setup
	$(PY) proto/generate.py --check

bench: setup
	$(PY) tests/bench/bench_pipeline.py
	$(PY) tests/bench/bench.py

clean:
	rm -rf .run .pytest_cache .ruff_cache
