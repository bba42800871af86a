# Two commands for a fresh machine: `make run` (the app, locally) and `make test` (the suite).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
AZURITE_VERSION := 3.37.0
export PYTHONPATH := $(CURDIR)

INFRA_VENV := .venv-infra

.PHONY: run test lint bench faults clean system-deps azurite infra-tools

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# pyodbc (Azure SQL) links against unixODBC's libodbc; Debian's package provides it. The status
# page's browser test drives Debian's Chromium (headless, through Playwright).
system-deps:
	@ldconfig -p | grep -q 'libodbc.so.2' || { \
	  echo "installing unixodbc (Debian) for pyodbc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unixodbc >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "installing chromium (Debian) for the status page's browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Azure Storage emulator for the queue tests; the tests start it (in memory, no telemetry).
azurite: .tools/node_modules/.bin/azurite
.tools/node_modules/.bin/azurite:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

# checkov (the Bicep security scan) in its own environment: it pins dozens of packages the app
# does not need and some the app pins differently.
infra-tools: $(INFRA_VENV)/.installed
$(INFRA_VENV)/.installed: requirements-infra.txt
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
	touch $@

# The local host on 127.0.0.1:7071 with SQLite (./.data/mirror.db) and the bundled sandbox as tenant
# "demo". `make run ARGS=--once` runs one bounded cycle and exits 0 only if mirror == source.
run: $(VENV)/.runtime
	$(PY) -m shared.cli serve $(ARGS)

# Lint and types before the suite: ruff (rules in pyproject.toml) and mypy (strict on the pure
# modules). A new violation fails `make test`, so CI.
lint: $(VENV)/.dev
	$(VENV)/bin/ruff check shared devtools bench tests db function_app.py
	$(VENV)/bin/mypy

test: $(VENV)/.dev lint system-deps azurite infra-tools
	$(PY) -m pytest

bench: $(VENV)/.dev azurite
	$(PY) -m bench.upsert
	$(PY) -m bench.load_memory
	$(PY) -m bench.sandbox
	$(PY) -m bench.reconcile
	$(PY) -m bench.rest
	$(PY) -m bench.webhooks
	$(PY) -m bench.notification
	$(PY) -m bench.dashboard

# The whole fault matrix: 18 faults x 20 runs x 2,000 events on PostgreSQL (hours; ARGS to narrow it).
faults: $(VENV)/.dev azurite
	$(PY) -m bench.faults $(ARGS)

clean:
	rm -rf $(VENV) $(INFRA_VENV) .tools .data .pytest_cache .mypy_cache .ruff_cache
