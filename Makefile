# Tally: the commands a newcomer needs. `make up`, `make test`, `make down`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := python3 -m uv
TALLY := .venv/bin/tally

.PHONY: up down status test lint unit install

## up: install what is missing, start Kafka, ClickHouse, schema, ingest and a worker
up: install
	$(TALLY) up

## down: stop everything `make up` started
down:
	@if [ -x $(TALLY) ]; then $(TALLY) down; fi

## status: what runs, and where
status: install
	$(TALLY) status

## test: lint, then the whole suite (starts the servers it needs, or reuses running ones)
test: install lint
	.venv/bin/pytest

## unit: the tests that need no server
unit: install
	.venv/bin/pytest tests/unit

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

install: .venv/.installed node_modules/.installed

.venv/.installed: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	$(UV) sync --frozen
	@touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@
