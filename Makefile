# asyncio-pitfalls — `make` alone lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
VARIANT ?= broken
BASE_URL ?= http://127.0.0.1:8080

.DEFAULT_GOAL := help
.PHONY: help install run migrate test bench lint up down demo watch pitfall explore soak topology matrix ladder load-disconnect load-shield load-pubsub

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv with the pinned dependencies (fast when nothing changed)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ needed (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

run: install ## migrate, then serve on 127.0.0.1:8080 against local Postgres and Redis
	$(PY) -m app migrate
	$(PY) -m app

migrate: install ## apply pending migrations only
	$(PY) -m app migrate

test: install ## the whole test suite (needs local Postgres and Redis)
	$(PY) -m pytest

bench: install ## the benchmarks: bench/results/*.json, charts and bench/RESULTS.md (BENCH_SMOKE=1: tiny)
	$(PY) -m bench.run $(if $(BENCH_SMOKE),--smoke)

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

up: ## the stack under docker compose (ports on 127.0.0.1 only); without Docker it says what to use instead
	@$(PYTHON) -m scripts.compose up
	@echo "app on http://127.0.0.1:8080 — try: make load-disconnect VARIANT=broken"

down: ## stop the compose stack
	@$(PYTHON) -m scripts.compose down

demo: install ## conference mode: app + dashboard + aiomonitor, prints the URL and the talk (DEMO=compose: Docker)
	$(PY) -m scripts.demo $(if $(filter compose,$(DEMO)),--compose)

watch: install ## the dashboard's figures in the terminal
	$(PY) -m scripts.watch --base-url $(BASE_URL)

pitfall: install ## one gallery pitfall against a running app (NAME=swallowed-cancel VARIANT=broken; NAME=list)
	$(PY) -m scripts.pitfall $(if $(filter list,$(NAME)),--list,$(NAME) --variant $(VARIANT)) --base-url $(BASE_URL)

explore: install ## the cancellation map: each handler cancelled at each await (TARGET=all|orders|…, VARIANT=)
	$(PY) -m scripts.explore $(or $(TARGET),all) $(if $(filter command line,$(origin VARIANT)),--variant $(VARIANT))

soak: install ## every fixed scenario at a steady rate with disconnects, then the drift (MINUTES=2)
	$(PY) -m scripts.soak --minutes $(or $(MINUTES),2) --base-url $(BASE_URL)

topology: install ## the compose topology without Docker: 2 apps behind Debian's caddy (PROXY=bare, SET=NAME=VALUE)
	$(PY) -m scripts.topology $(if $(PROXY),--proxy $(PROXY)) $(foreach s,$(SET),--set $(s))

ladder: install ## a ladder against a running app: broken, its middle step, fixed (SCENARIO=disconnect|pubsub)
	$(PY) -m scripts.ladder $(or $(SCENARIO),disconnect) --base-url $(BASE_URL)

matrix: install ## the version matrix: every pyenv Python, aiohttp and redis-py versions -> docs/MATRIX.md (~1 min cached)
	$(PY) -m scripts.matrix

load-disconnect: install ## load scenario disconnect against a running app (VARIANT=broken|fixed)
	$(PY) -m scripts.load disconnect --variant $(VARIANT) --base-url $(BASE_URL)

load-shield: install ## load scenario shield: runs its own app, SIGTERMs it mid-load (KILL=1: SIGKILL)
	$(PY) -m scripts.load shield --variant $(VARIANT) --spawn-app $(if $(KILL),--kill)

load-pubsub: install ## load scenario pubsub against a running app (VARIANT=broken|fixed)
	$(PY) -m scripts.load pubsub --variant $(VARIANT) --base-url $(BASE_URL)
