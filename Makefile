# One command to run the indexer locally, one to run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: setup browser run demo test unit bench clean lint

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

# Seeds the stack of a running `make run` with a 240-task rendering job; prints the page to open.
demo: setup
	$(BIN)/python -m devtools.demo

# The browser tests drive Debian's Chromium through chromedriver (no download at test time).
# Installed when missing; as root (CI) directly, else through sudo.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver; }

# Lint, types and the layer contract (pyproject.toml), before every test run.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: setup browser lint
	$(BIN)/python -m pytest

# The unit tier alone (tests/unit/): Python only, no Node.js, no Azurite, no browser.
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# Benchmarks (SPEC §9), never part of make test: own Azurite, the app as make run serves it.
bench: setup
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) node_modules azurite-data .pytest_cache test-artifacts
