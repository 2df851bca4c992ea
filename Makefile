# Two commands matter: `make run` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup run test lint proto proto-check k8s k8s-check bench soak clean chromium

setup: $(VENV)/.installed $(VENV)/bin/switchyard

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The `switchyard` command (pyproject's [project.scripts]) with no network and
# no PYTHONPATH: services/ goes on the environment's path (so `python -m
# switchyard` and `python -m switchyard.keys` work too) and a small script
# runs the CLI with the environment's interpreter.
$(VENV)/bin/switchyard: $(VENV)/.installed
	$(PY) -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "switchyard-services.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)/services"
	printf '#!/bin/sh\nexec "%s" -m switchyard "$$@"\n' "$(abspath $(PY))" > $@
	chmod +x $@

run: setup
	$(PY) deploy/local/run.py $(ARGS)

test: setup proto-check k8s-check lint chromium
	$(PY) -m pytest -q

# The dashboard test drives Debian's chromium (installed once, quietly; a
# mirror that drops a download is retried rather than failing the run).
APT := $(SUDO) apt-get -o Acquire::Retries=5
chromium:
	@command -v chromium >/dev/null 2>&1 || { $(APT) update -qq >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $(APT) install -y -qq chromium >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check .

proto: setup
	$(PY) proto/generate.py

proto-check: setup
	$(PY) proto/generate.py --check

# Kubernetes: regenerate the ConfigMaps rendered from envoy/ templates, the
# NATS users and the shipped config (deploy/k8s/generate.py), or check them.
k8s: setup
	$(PY) deploy/k8s/generate.py

k8s-check: setup
	$(PY) deploy/k8s/generate.py --check

soak: setup
	SWITCHYARD_SOAK_S=300 $(PY) -m pytest -q -s -p no:cacheprovider tests/fault/test_soak.py

bench: setup
	$(PY) tests/bench/bench_pipeline.py
	$(PY) tests/bench/bench_hops.py
	$(PY) tests/bench/bench_governance.py
	$(PY) tests/bench/bench.py
	$(PY) tests/bench/bench.py --observability
	$(PY) tests/bench/bench_cache.py

clean:
	rm -rf .run .pytest_cache .ruff_cache
