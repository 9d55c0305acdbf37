# One command to run the indexer locally, one to run the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
CHECKOV_VENV  := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed

.PHONY: setup browser run demo test unit bench clean lint dist batch-package checkov docs

setup: $(STAMP) $(NODE_STAMP) $(CHECKOV_STAMP) local.settings.json

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

# checkov in its own venv: its pins clash with the server's (requirements-checkov.txt).
$(CHECKOV_STAMP): requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-checkov.txt
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

# Lint, types, the layer contract (pyproject.toml) and checkov over infra/, before every test run.
lint: $(STAMP) checkov
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Offline (no guideline download); fails on any failed check or any .bicep checkov cannot
# parse. Skipped checks: infra/.checkov.yaml only, each with its reason.
checkov: $(CHECKOV_STAMP)
	BC_SKIP_MAPPING=TRUE $(CHECKOV_VENV)/bin/checkov --config-file infra/.checkov.yaml --output json 2>checkov.log \
	  | $(CHECKOV_VENV)/bin/python devtools/checkov_gate.py || { tail -20 checkov.log; exit 1; }

test: setup browser lint
	$(BIN)/python -m pytest

# The unit tier alone (tests/unit/): Python only, no Node.js, no Azurite, no browser.
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

# Benchmarks (SPEC §9), never part of make test: own Azurite, the app as make run serves it.
bench: setup
	$(BIN)/python -m bench.run

# The compute-node client as its own wheel: batch_outputs only, with client dependencies only.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' batch_outputs/__init__.py)
WHEEL   := dist/batch_outputs-$(VERSION)-py3-none-any.whl
dist: $(STAMP)
	rm -f dist/batch_outputs-*.whl
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .
	@echo "built $(WHEEL)"

# A Batch application package that installs without internet: the wheel, every wheel it needs
# for CPython 3.10 and 3.12 on manylinux x86_64 (Ubuntu 22.04 and 24.04 images), pip's own
# wheel, and install.sh. Downloads from PyPI when it is built, never on the node.
PACKAGE_PYTHONS   ?= 3.10 3.12
PACKAGE_PLATFORMS := manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64
PACKAGE_ZIP       := dist/batch-outputs-$(VERSION)-batch-package.zip
batch-package: dist
	rm -rf build/batch-package $(PACKAGE_ZIP)
	mkdir -p build/batch-package/wheels
	cp packaging/batch-package/install.sh build/batch-package/
	cp $(WHEEL) build/batch-package/wheels/
	for py in $(PACKAGE_PYTHONS); do \
	  $(BIN)/pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
	    --python-version $$py $(foreach p,$(PACKAGE_PLATFORMS),--platform $(p)) \
	    --dest build/batch-package/wheels $(WHEEL) pip || exit 1; \
	  $(BIN)/python packaging/batch-package/complete.py --dest build/batch-package/wheels --python-version $$py \
	    $(foreach p,$(PACKAGE_PLATFORMS),--platform $(p)) || exit 1; \
	done
	cd build/batch-package && $(abspath $(BIN))/python -m zipfile -c $(CURDIR)/$(PACKAGE_ZIP) install.sh wheels
	@echo "built $(PACKAGE_ZIP)"

# The API reference of the client and the library (batch_outputs), from its docstrings, offline:
# open build/docs/batch_outputs.html. The CLI's modules are left out (docs/cli.md covers the CLI).
docs: $(STAMP)
	rm -rf build/docs
	$(BIN)/pdoc --docformat restructuredtext --no-search --footer-text "batch-outputs $(VERSION)" -o build/docs \
	  batch_outputs batch_outputs.aio '!batch_outputs.cli' '!batch_outputs.display' '!batch_outputs.follow'
	@echo "built build/docs/batch_outputs.html"

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) checkov.log node_modules azurite-data .pytest_cache test-artifacts build dist
