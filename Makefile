# `make demo` and `make test` work on a fresh machine: they make .venv if it is
# missing and install the project with its dev tools into it, and `make test`
# installs buf from npm (package.json, pinned by package-lock.json) into node_modules.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed

.PHONY: demo test lint typecheck protos protos-check proto-baseline install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# --ignore-scripts: no package code runs at install; buf's launcher finds its binary without it.
$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $(NPM_STAMP)

install: $(STAMP) $(NPM_STAMP)

demo: $(STAMP)
	$(BIN)/exchange demo

test: $(STAMP) $(NPM_STAMP)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/buf_check.py
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --max-worker-restart=0

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

protos-check: $(STAMP) $(NPM_STAMP)
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/buf_check.py

# After a proto change: record it as the baseline `buf breaking` compares with (refused
# if it breaks the old one). A deliberate break: make proto-baseline BREAKING=yes
proto-baseline: $(STAMP) $(NPM_STAMP)
	$(BIN)/python scripts/buf_check.py --update-baseline $(if $(filter yes,$(BREAKING)),--allow-breaking)

clean:
	rm -rf $(VENV) node_modules var certs/out
