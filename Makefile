# prefect-memory developer tasks. `make test` works on a fresh machine (as root):
# it creates .venv, installs the test servers (redis-server, .venv-mongo) and runs pytest.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        ?= .venv
VENV_PY     := $(VENV)/bin/python
VENV_STAMP  := $(VENV)/.installed.stamp
PYTEST_ARGS ?=
BENCH_ARGS  ?=
# make demo PROFILE=services: Redis, MongoDB (wire server) and S3 instead of the embedded stores
PROFILE     ?= embedded
DEMO_ARGS   ?=

# Settings for anything that runs Prefect (tests, demo, benchmarks).
test test-slow demo bench: export DO_NOT_TRACK := 1
test test-slow demo bench: export PREFECT_SERVER_ANALYTICS_ENABLED := false
test test-slow demo bench: export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

# A Python >= 3.10 to build .venv with; the first candidate that really runs wins
# (a pyenv shim for a version that is not selected refuses to run, so try them all).
define FIND_PYTHON
for c in "$${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10 \
         $$(ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.1[0-9]*/bin/python3 2>/dev/null | sort -rV); do \
    [ -n "$$c" ] || continue; \
    if "$$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' </dev/null >/dev/null 2>&1; then \
        command -v "$$c"; exit 0; \
    fi; \
done; \
echo "no Python >= 3.10 found (set PYTHON=...)" >&2; exit 1
endef

.PHONY: help venv servers test test-slow demo lint bench clean

help:
	@echo "make venv     - create $(VENV) and pip install -e '.[dev]' (again when pyproject.toml changes)"
	@echo "make servers  - install the test servers (redis-server, .venv-mongo with mongoeco)"
	@echo "make test     - venv + servers, then pytest (extra args: PYTEST_ARGS=...)"
	@echo "make test-slow - the large scale variants (marked slow, skipped by make test)"
	@echo "make demo     - the ML pipeline demo, no servers (PROFILE=services: Redis, MongoDB, S3;"
	@echo "                extra args: DEMO_ARGS='--users 2000 --requests 500')"
	@echo "make lint     - ruff check"
	@echo "make bench    - run every benchmark, write benchmarks/RESULTS.md (BENCH_ARGS=--quick)"

venv: $(VENV_STAMP)

$(VENV_STAMP): pyproject.toml constraints-dev.txt
	@if [ ! -x "$(VENV_PY)" ]; then \
	    py="$$($(FIND_PYTHON))"; \
	    echo "creating $(VENV) with $$py ($$("$$py" --version 2>&1))"; \
	    "$$py" -m venv "$(VENV)"; \
	fi
	$(VENV_PY) -m pip install -q --disable-pip-version-check --upgrade pip </dev/null
	$(VENV_PY) -m pip install -q --disable-pip-version-check -c constraints-dev.txt -e '.[dev]' </dev/null
	@touch "$@"

servers:
	bash scripts/install-servers.sh

test: venv servers
	$(VENV_PY) -m pytest $(PYTEST_ARGS)

test-slow: venv servers
	PREFECT_MEMORY_SLOW=1 $(VENV_PY) -m pytest -m slow $(PYTEST_ARGS)

demo: venv
	@if [ "$(PROFILE)" = services ]; then bash scripts/install-servers.sh redis mongo; fi
	$(VENV_PY) -m prefect_memory.demo --profile $(PROFILE) $(DEMO_ARGS)

lint: venv
	$(VENV_PY) -m ruff check

bench: venv servers
	$(VENV_PY) benchmarks/run_all.py $(BENCH_ARGS)

clean:
	rm -rf .pytest_cache .ruff_cache build dist src/*.egg-info
	find . -name __pycache__ -type d -not -path './.venv*' -prune -exec rm -rf {} +
