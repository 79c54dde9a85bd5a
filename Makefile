# Tally: the commands a newcomer needs. `make up`, `make test`, `make down`.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := python3 -m uv
TALLY := .venv/bin/tally
SOAK_SECONDS ?= 600

.PHONY: up down status test test-current lint unit install bench-worker bench-replay bench-system browser bench-ingest tally-js zookeeper prometheus docker image dashboard-picture soak

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
test: install browser zookeeper prometheus docker lint
	.venv/bin/pytest

## test-current: the integration suite on the other version pair, Kafka 4.4.0 + ClickHouse 26.9 (docs/testing.md),
## on ports of its own so that it never reuses the default pair's servers
CURRENT_PAIR := TALLY_STACK_VERSIONS=current TALLY_KAFKA_BOOTSTRAP=127.0.0.1:19092 \
	TALLY_CLICKHOUSE_PORT=19000 TALLY_CLICKHOUSE_HTTP_PORT=18123
test-current: install browser zookeeper prometheus docker lint
	$(CURRENT_PAIR) .venv/bin/pytest tests/integration

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

## browser: Debian's chromium, which the stats page test drives headless (never a downloaded browser)
browser: /usr/bin/chromium

/usr/bin/chromium:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -E) apt-get install -y -qq --no-install-recommends chromium

## tally-js: minify web/tally.js into web/tally.min.js (what /tally.js serves) with terser, and print its size
tally-js: web/tally.min.js
	@echo "web/tally.min.js: $$(wc -c < web/tally.min.js) bytes minified, $$(gzip -9c web/tally.min.js | wc -c) gzipped"

web/tally.min.js: web/tally.js node_modules/.installed
	node_modules/.bin/terser web/tally.js --compress --mangle --comments '/^!/' --output $@

## zookeeper: Debian's ZooKeeper, for the test of the replicated, sharded ClickHouse layout (tests/integration/schema/test_cluster.py)
zookeeper: /usr/share/zookeeper/bin/zkServer.sh

/usr/share/zookeeper/bin/zkServer.sh:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -E) apt-get install -y -qq --no-install-recommends zookeeper

## prometheus: Debian's Prometheus and promtool, for the tests of deploy/prometheus/ (they run their own process, never the package's service)
prometheus: /usr/bin/prometheus /usr/bin/promtool

/usr/bin/prometheus /usr/bin/promtool &:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -E) apt-get install -y -qq --no-install-recommends prometheus

## docker: Debian's docker.io and debootstrap, for the image and its test (a Docker engine of the stack's own
## under .stack/docker, never the package's service; stack/docker.py)
docker: /usr/sbin/dockerd /usr/bin/docker /usr/sbin/debootstrap

/usr/sbin/dockerd /usr/bin/docker /usr/sbin/debootstrap &:
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo -E) apt-get install -y -qq --no-install-recommends docker.io debootstrap

## image: deploy/Dockerfile built as tally:local on a Debian 12 base made here (docs/operations.md); leaves the
## stack's Docker engine running for `docker run` (make down stops it)
image: install docker
	.venv/bin/python -m stack.docker build

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## bench-worker: the worker benchmark (about 2 minutes; docs/performance.md)
bench-worker: install
	flock /tmp/tally-bench.lock .venv/bin/python -m bench.worker $(BENCH_ARGS)

## bench-replay: replay throughput on one core beside raw consumers (about a minute; docs/replay.md)
bench-replay: install
	flock /tmp/tally-bench.lock .venv/bin/python -m bench.replay $(BENCH_ARGS)

## bench-ingest: ingest on one core beside nginx and the app without Kafka (about 2 minutes; docs/performance.md)
bench-ingest: install
	flock /tmp/tally-bench.lock .venv/bin/python -m bench.ingest $(BENCH_ARGS)

## bench-system: ingest, Kafka, a worker and ClickHouse on this box under stepped load, beside ClickHouse's
## Kafka engine, on both version pairs (about 10 minutes; docs/performance.md)
bench-system: install
	flock /tmp/tally-bench.lock .venv/bin/python -m bench.system $(BENCH_ARGS)

## dashboard-picture: docs/dashboard-overview.png, the overview dashboard drawn from its own queries (needs ClickHouse: `make up`)
dashboard-picture: install
	.venv/bin/python -m stack.render_dashboard

## soak: the whole system under mixed load and faults, reconciled (SOAK_SECONDS, default 600; docs/reliability.md)
soak: install
	flock /tmp/tally-bench.lock .venv/bin/python -m soak --seconds $(SOAK_SECONDS) $(SOAK_ARGS)
