# DEE developer tasks. `make` alone lists the targets.

VENV ?= .venv
PY = $(VENV)/bin/python
UV = $(VENV)/bin/uv
PYTEST_ARGS ?=
BENCH_ARGS ?=

# where the venv is first created from
PYTHON3 ?= python3
# uv installs everything else from uv.lock; this is the one version bootstrapped with pip
# (the same as the lock's, which tests/unit/test_packaging.py checks)
UV_VERSION = 0.13.9
# uv puts the project's environment here instead of its default ./.venv
export UV_PROJECT_ENVIRONMENT = $(abspath $(VENV))
# compile .pyc at install, as pip does: processes that must not write them (PYTHONDONTWRITEBYTECODE)
# would otherwise compile every module at every start (a second per `dee` command)
export UV_COMPILE_BYTECODE = 1

.DEFAULT_GOAL := help
.PHONY: help venv lock upgrade services test test-floors demo bench lint dist clean distclean

help: ## list the targets
	@echo 'DEE make targets (VENV=$(VENV)):'
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-11s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create the virtualenv and install exactly what uv.lock pins (dee, test and dev extras)

$(PY):
	$(PYTHON3) -m venv $(VENV)

$(UV): | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

# order-only on the interpreter: its mtime says nothing about what is installed.
# --locked refuses a uv.lock that no longer matches pyproject.toml (run `make lock`)
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --inexact --extra test --extra dev
	@touch $@

lock: | $(UV) ## refresh uv.lock after a change to pyproject.toml (keeps every other pin)
	$(UV) lock

upgrade: | $(UV) ## move every pin in uv.lock to the newest release pyproject.toml allows
	$(UV) lock --upgrade

services: ## make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer
	bash scripts/ensure-services.sh

test: venv services ## run the test suite (extra pytest arguments: PYTEST_ARGS=...)
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-floors: services | $(UV) ## run the suite against the oldest releases pyproject.toml allows (downloads them)
	bash scripts/test-floors.sh $(PYTEST_ARGS)

demo: venv services ## simulate the sales-outreach-v2 plan: 1000 contacts over 10 days
	$(VENV)/bin/dee --config config/dee.toml simulate config/plans/sales-outreach-v2.yaml --contacts 1000 --days 10

bench: venv services ## dee bench: the outreach-v2 workload, 10,000 contacts (extra arguments: BENCH_ARGS=...)
	$(VENV)/bin/dee --config config/dee.toml bench $(BENCH_ARGS)

lint: venv ## ruff and mypy, as configured in pyproject.toml
	$(PY) -m ruff check daemon plugins tests contrib
	$(PY) -m mypy

dist: venv ## build the sdist and the wheel into dist/
	$(UV) build --out-dir dist

clean: ## remove build output and caches (keeps the venv)
	rm -rf build dist .pytest_cache .hypothesis .ruff_cache .mypy_cache *.egg-info
	find $(wildcard daemon plugins contrib tests scripts) -depth \
		\( -name __pycache__ -o -name '*.egg-info' \) -exec rm -rf {} +

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)
