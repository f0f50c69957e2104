# Online Bank — every set-up step lives here, so `make run` and `make test` work on a fresh clone
# with Python 3.11+ and nothing else installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LINT_VENV := .venv-lint
LINT_BIN := $(LINT_VENV)/bin
SCAN_VENV := .venv-scan
WAPITI_VENV := .venv-wapiti
FLASK := $(BIN)/flask --app run.py
HOST ?= 127.0.0.1
PORT ?= 5000
# The browser suite (tests/e2e/browser) drives Debian's Chromium (BANK_CHROMIUM, default
# /usr/bin/chromium) through the playwright package's own driver: no browser is ever downloaded.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: help run serve test screenshots lint install install-dev migrate seed verify clean

help:
	@echo "make run    - install, migrate, seed the admin and serve on http://$(HOST):$(PORT)"
	@echo "make test   - install the test dependencies and run the whole test suite"
	@echo "make screenshots - the browser journeys, rewriting the README's pictures in docs/screenshots/"
	@echo "make lint   - bandit and the project's semgrep rules (lint/semgrep.yml) over app/, offline"
	@echo "make verify - check the ledger invariants and the audit hash chain"
	@echo "make scan   - sqlmap and wapiti3 against the app on a throw-away database (report in reports/)"
	@echo "make bench  - seed 1,000,000 ledger rows, load the app with wrk against its ceilings (bench/results.md)"

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

# Production-style server: gunicorn with gunicorn.conf.py (WEB_CONCURRENCY workers, default one per
# core, of WEB_THREADS threads, default 2 on PostgreSQL and 1 on SQLite, listening on BIND, default
# 127.0.0.1:8000) against DATABASE_URL, after applying the migrations. With more than one worker,
# set RATELIMIT_STORAGE_URI=redis://...: gunicorn warns about memory:// in development and refuses
# it in production.
serve: migrate
	$(BIN)/gunicorn -c gunicorn.conf.py

verify: install
	$(FLASK) verify-ledger
	$(FLASK) verify-audit

# The suite runs on SQLite, then again on PostgreSQL when TEST_DATABASE_URL names a server, e.g.
# postgresql+psycopg://postgres@127.0.0.1:5432/test (its user needs CREATEDB: each test gets its own
# database). REQUIRE_POSTGRES=1 (CI) makes the PostgreSQL run mandatory. Both runs always happen;
# the target fails if either does. PYTEST_ARGS is passed to both (e.g. PYTEST_ARGS="-x -q").
# The browser suite (tests/e2e/browser) runs in the SQLite pass when Chromium is installed and is
# skipped with the reason otherwise; REQUIRE_BROWSER=1 (CI) makes a missing Chromium a failure.
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

# The browser journeys alone, Chromium required (REQUIRE_BROWSER=1), writing the README's pictures
# (dashboard, transfer form, admin users, audit log) into docs/screenshots/; every journey's full
# set of screenshots goes to reports/screenshots/ as in any run.
screenshots: install-dev
	REQUIRE_BROWSER=1 BANK_README_SCREENSHOTS=docs/screenshots \
	    $(BIN)/python -m pytest --backend=sqlite tests/e2e/browser $(PYTEST_ARGS)

# Static checks, offline: bandit and semgrep live in their own venv (semgrep pins its own
# dependency versions, which must not meet the app's). Bandit fails on any finding of medium or
# high severity (-ll); low ones are listed after it but don't fail (--exit-zero): they are mostly
# deliberate (the spec's seeded admin password, the test config's fixed key) and a `# nosec` on
# each would be noise. Semgrep first proves every rule against the annotated files in lint/tests
# (each `ruleid:` line reported, no `ok:` line), then runs the same rules over app/ and run.py.
# It reads only the local rules file: no registry config, no metrics, no version check.
SEMGREP := SEMGREP_ENABLE_VERSION_CHECK=0 SEMGREP_SEND_METRICS=off $(LINT_BIN)/semgrep
SEMGREP_FLAGS := --metrics=off --disable-version-check

$(LINT_BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is required")'
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_BIN)/python -m pip install --quiet --upgrade pip==26.3

$(LINT_VENV)/.installed: requirements-lint.txt | $(LINT_BIN)/python
	$(LINT_BIN)/python -m pip install --quiet -r requirements-lint.txt
	@touch $@

lint: $(LINT_VENV)/.installed
	@echo "== bandit over app/ (fails on medium or high severity)"
	$(LINT_BIN)/bandit -q -r app -ll
	@echo "== bandit: low-severity findings (listed, not failing)"
	@$(LINT_BIN)/bandit -q -r app -l --exit-zero -f custom \
	    --msg-template '{relpath}:{line}: {test_id} {severity}: {msg}'
	@echo "== semgrep rule tests (lint/tests)"
	$(SEMGREP) --test --quiet $(SEMGREP_FLAGS) --config lint lint/tests
	@echo "== semgrep rules over app/ and run.py"
	$(SEMGREP) scan $(SEMGREP_FLAGS) --error --config lint/semgrep.yml app run.py

# Outside scanners (scan/run_scan.py, which explains what runs and what fails): sqlmap and
# wapiti3, each in its own venv (wapiti3 pins old releases of libraries the app also uses;
# 3.2.3 runs on Python 3.10 to 3.12, WAPITI_PYTHON picks another interpreter), against the app
# served by gunicorn on a throw-away SQLite database. Writes reports/scan-<timestamp>.md and
# exits 1 on a failing finding. SCAN_ARGS is passed on (e.g. SCAN_ARGS="--only customer").
WAPITI_PYTHON ?= $(PYTHON)
SCAN_ARGS ?=

$(SCAN_VENV)/.installed: requirements-scan.txt
	$(PYTHON) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(SCAN_VENV)/bin/python -m pip install --quiet -r requirements-scan.txt
	@touch $@

$(WAPITI_VENV)/.installed: requirements-wapiti.txt
	$(WAPITI_PYTHON) -m venv $(WAPITI_VENV)
	$(WAPITI_VENV)/bin/python -m pip install --quiet --upgrade pip==26.3
	$(WAPITI_VENV)/bin/python -m pip install --quiet -r requirements-wapiti.txt
	@touch $@

.PHONY: scan
scan: install $(SCAN_VENV)/.installed $(WAPITI_VENV)/.installed
	$(BIN)/python -m scan.run_scan $(SCAN_ARGS)

# Benchmark (bench/README.md): seeds 10,000 customers, 20,000 accounts and 1,000,000 transfer rows
# on the local PostgreSQL (BENCH_DATABASE_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres;
# its user needs CREATEDB) and on SQLite, drives the app under gunicorn.conf.py with wrk against the
# machine's own ceilings, and writes bench/results.md (raw figures in reports/bench/). wrk and
# pgbench are Debian packages (wrk, postgresql-client): installed with apt-get when missing and
# run as root. BENCH_ARGS is passed on (e.g. BENCH_ARGS="--quick --reps 1" to try it in minutes).
BENCH_ARGS ?=

$(VENV)/.bench-installed: requirements.txt requirements-dev.txt requirements-bench.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	@touch $(VENV)/.runtime-installed $(VENV)/.dev-installed $@

.PHONY: bench
bench: $(VENV)/.bench-installed
	@if ! command -v wrk >/dev/null || ! command -v pgbench >/dev/null; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	        apt-get install -y -q wrk postgresql-client >/dev/null 2>&1 || \
	        { apt-get update -q >/dev/null && apt-get install -y -q wrk postgresql-client >/dev/null; }; \
	    else echo "make bench needs wrk and pgbench (Debian packages wrk and postgresql-client)" >&2; exit 1; fi; \
	fi
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LINT_VENV) $(SCAN_VENV) $(WAPITI_VENV) .pytest_cache .hypothesis
