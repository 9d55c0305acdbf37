# One command to run the indexer locally, one to run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup run test bench clean

setup: $(STAMP) $(NODE_STAMP) local.settings.json

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Never overwrites an existing local.settings.json.
local.settings.json:
	cp -n local.settings.sample.json local.settings.json

run: setup
	$(BIN)/python -m devtools.run

test: setup
	$(BIN)/python -m pytest

# Benchmarks (SPEC §9), never part of make test: own Azurite, the app as make run serves it.
bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules azurite-data .pytest_cache test-artifacts
