# DEE developer tasks. `make` alone lists the targets.

VENV ?= .venv
PY = $(VENV)/bin/python
PYTEST_ARGS ?=

# where the venv is first created from
PYTHON3 ?= python3

.DEFAULT_GOAL := help
.PHONY: help venv services test demo bench lint clean distclean

help: ## list the targets
	@echo 'DEE make targets (VENV=$(VENV)):'
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-10s %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## create the virtualenv and install dee with its test extras

$(PY):
	$(PYTHON3) -m venv $(VENV)

# order-only on the interpreter: its mtime says nothing about what is installed
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

services: ## make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) answer
	bash scripts/ensure-services.sh

test: venv services ## run the test suite (extra pytest arguments: PYTEST_ARGS=...)
	$(PY) -m pytest -q $(PYTEST_ARGS)

demo: venv services ## simulate the sales-outreach-v2 plan: 1000 contacts over 10 days
	$(VENV)/bin/dee simulate config/plans/sales-outreach-v2.yaml --contacts 1000 --days 10

bench: venv services ## dee bench: the outreach-v2 workload, 10,000 contacts (extra arguments: BENCH_ARGS=...)
	$(VENV)/bin/dee bench $(BENCH_ARGS)

lint: venv ## ruff if it is installed, and a byte-compile of everything
	@if $(PY) -m ruff --version >/dev/null 2>&1; then \
		$(PY) -m ruff check daemon plugins tests; \
	else \
		echo 'ruff is not installed in $(VENV); only byte-compiling'; \
	fi
	$(PY) -m compileall -q daemon plugins tests

clean: ## remove build output and caches (keeps the venv)
	rm -rf build dist .pytest_cache .hypothesis .ruff_cache *.egg-info
	find $(wildcard daemon plugins contrib tests scripts) -depth \
		\( -name __pycache__ -o -name '*.egg-info' \) -exec rm -rf {} +

distclean: clean ## clean, and remove the venv too
	rm -rf $(VENV)
