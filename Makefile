# Two commands for a fresh machine: `make run` (the app, locally) and `make test` (the suite).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
AZURITE_VERSION := 3.37.0
SAMPLE_TENANTS  := samples/tenants.sandbox.json
SAMPLE_BUNDLE   := samples/halaxy-sample-bundle.json
export PYTHONPATH := $(CURDIR)

.PHONY: run test bench clean system-deps azurite

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# pyodbc (Azure SQL) links against unixODBC's libodbc; Debian's package provides it.
system-deps:
	@ldconfig -p | grep -q 'libodbc.so.2' || { \
	  echo "installing unixodbc (Debian) for pyodbc"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq unixodbc >/dev/null; }

# Azure Storage emulator for the queue tests; the tests start it (in memory, no telemetry).
azurite: .tools/node_modules/.bin/azurite
.tools/node_modules/.bin/azurite:
	npm install --prefix .tools --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

run: $(VENV)/.runtime
	$(PY) -m shared.cli migrate
	$(PY) -m shared.cli --tenants-file $(SAMPLE_TENANTS) load --tenant demo $(SAMPLE_BUNDLE)
	@echo "The local host (HTTP on 127.0.0.1:7071, timers, queues) arrives with the sync engine;"
	@echo "for now 'make run' migrates ./.data/mirror.db and imports the bundled sample."

test: $(VENV)/.dev system-deps azurite
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PY) -m bench.upsert
	$(PY) -m bench.load_memory
	$(PY) -m bench.sandbox
	$(PY) -m bench.reconcile

clean:
	rm -rf $(VENV) .tools .data .pytest_cache
