# FleetOps Live: `make run` serves the demo plant, `make test` runs every test.
# Every install step lives here, so a clean clone needs nothing but Python 3.12+.

# The first interpreter that runs and is 3.12+ (pyenv picks 3.12 from
# .python-version; pyenv shims of other versions fail to run and are passed over).
PYTHON ?= $(shell for p in python3 python3.12 python3.13 python3.14; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' extra on top (only `make bench` needs it).
BENCH_STAMP := $(VENV)/.installed-bench
HOST ?= 127.0.0.1
PORT ?= 8000
# The services profile of `make test` (override to point elsewhere).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/fleetops
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14

.PHONY: run test test-embedded test-services bench lint browser-deps services clean

$(STAMP): pyproject.toml
	@[ -n "$(PYTHON)" ] || { echo "FleetOps Live needs Python 3.12 or newer; none found on PATH. Install it, or run: make PYTHON=/path/to/python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo_plant --if-empty
	$(BIN)/python manage.py issue_demo_gateway
	@echo
	@echo "  FleetOps Live: http://$(HOST):$(PORT)/"
	@echo "  Demo logins (password: $${FLEETOPS_DEMO_PASSWORD:-fleetops-demo}):"
	@echo "    admin (superuser), operator1 (operates line 01), operator2 (lines 01, 02),"
	@echo "    viewer (watches every line), auditor (staff, reads the audit lists)"
	@echo
	@# The simulated gateway queues until the server answers, so start order does not matter.
	@trap 'kill $$gw 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python manage.py run_gateway --demo --server http://$(HOST):$(PORT) & gw=$$!; \
	DEBUG=$${DEBUG:-true} $(BIN)/python manage.py runserver $(HOST):$(PORT)

# Installs Debian's Chromium for the browser tests when it is missing.
browser-deps:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the browser tests"; \
		(apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "WARNING: no /usr/bin/chromium and no apt-get: browser tests will fail"; fi

# Makes sure PostgreSQL and Redis answer (starting them when they are local
# and stopped); under CI=true a missing service fails the run.
services: $(STAMP)
	@$(BIN)/python tests/support/check_services.py "$(TEST_DATABASE_URL)" "$(TEST_REDIS_URL)"

test: $(STAMP) browser-deps
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory test-embedded
	$(MAKE) --no-print-directory test-services

test-embedded: $(STAMP)
	@echo "== embedded profile: SQLite, in-memory channel layer, eager Celery"
	env -u DATABASE_URL -u REDIS_URL $(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

test-services: services
	@if [ -f var/services-skipped ]; then echo "!! services profile SKIPPED (PostgreSQL or Redis unreachable, CI is not set)"; exit 0; fi; \
	echo "== services profile: PostgreSQL, channels-redis, Celery workers on Redis"; \
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) CHANNEL_PREFIX=fleetops-test \
		$(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: $(BENCH_STAMP) services
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) $(BIN)/python -m bench --json var/bench.json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var db.sqlite3 .pytest_cache .ruff_cache
