# Online Bank — every set-up step lives here, so `make run` and `make test` work on a fresh clone
# with Python 3.11+ and nothing else installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app run.py
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: help run serve test install install-dev migrate seed verify clean

help:
	@echo "make run    - install, migrate, seed the admin and serve on http://$(HOST):$(PORT)"
	@echo "make test   - install the test dependencies and run the whole test suite"
	@echo "make verify - check the ledger invariants and the audit hash chain"

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3

$(VENV)/.runtime-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	@touch $(VENV)/.runtime-installed $@

install: $(VENV)/.runtime-installed

install-dev: $(VENV)/.dev-installed

migrate: install
	$(FLASK) db upgrade

seed: migrate
	$(FLASK) seed-admin

run: seed
	$(FLASK) run --host $(HOST) --port $(PORT)

# Production-style server: gunicorn with gunicorn.conf.py (WEB_CONCURRENCY sync workers, default
# 4, listening on BIND, default 127.0.0.1:8000) against DATABASE_URL, after applying the migrations.
serve: migrate
	$(BIN)/gunicorn -c gunicorn.conf.py

verify: install
	$(FLASK) verify-ledger
	$(FLASK) verify-audit

# The suite runs on SQLite, then again on PostgreSQL when TEST_DATABASE_URL names a server, e.g.
# postgresql+psycopg://postgres@127.0.0.1:5432/test (its user needs CREATEDB: each test gets its own
# database). REQUIRE_POSTGRES=1 (CI) makes the PostgreSQL run mandatory. Both runs always happen;
# the target fails if either does. PYTEST_ARGS is passed to both (e.g. PYTEST_ARGS="-x -q").
PYTEST_ARGS ?=

test: install-dev
	@case "$${REQUIRE_POSTGRES:-0}" in 0|false|no|off) ;; *) if [ -z "$$TEST_DATABASE_URL" ]; then \
	    echo "REQUIRE_POSTGRES is set but TEST_DATABASE_URL is not: the PostgreSQL suite can't be skipped" >&2; \
	    exit 1; fi ;; esac; \
	status=0; \
	echo "== Test suite on SQLite"; \
	$(BIN)/python -m pytest --backend=sqlite $(PYTEST_ARGS) || status=1; \
	if [ -n "$$TEST_DATABASE_URL" ]; then \
	    echo "== Test suite on PostgreSQL (TEST_DATABASE_URL)"; \
	    $(BIN)/python -m pytest --backend=postgresql $(PYTEST_ARGS) || status=1; \
	else \
	    echo "PostgreSQL suite skipped: TEST_DATABASE_URL is not set"; \
	fi; \
	exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
