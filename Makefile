# durable-chat: `make up` runs the whole stack, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test lint bench chaos load clean venv browser

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## up: start PostgreSQL, Temporal, the LLM simulator, WORKERS workers and the gateway
up: venv
	$(BIN)/python -m devstack up

## browser: Debian's Chromium for the UI tests (Playwright's own download is not used)
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## test: run the whole test suite against real servers
test: venv browser
	$(BIN)/pytest

## bench: every benchmark at full size, each beside its baseline (docs/benchmarks.md)
bench: venv
	$(BIN)/python -m bench.run_all --size $(or $(SIZE),full)

## chaos: every fault of the seed's table on CHATS chats (docs/reliability.md)
CHATS ?= 20
chaos: venv
	$(BIN)/python -m chaos --chats $(CHATS)

## load: 200 concurrent chats through the gateway (docs/reliability.md)
load: venv
	$(BIN)/python -m chaos.load --chats 200

## lint: ruff and mypy
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

clean:
	rm -rf .data
