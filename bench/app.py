"""The bank plus four ceiling routes, built only for the benchmark (`gunicorn ... bench.wsgi:app`).

The ceiling routes measure what this machine, this gunicorn configuration and Flask can serve
at all, in the same run as the bank's own pages:

* `/bench/text`: a short text, nothing else (the framework's ceiling);
* `/bench/pk`: one indexed primary-key SELECT through the ORM (the ceiling of a page that
  reads one row);
* `/bench/audit-append`: one durable append to the audit chain and nothing else, the write
  DESIGN.md section 4 makes every audit view do (an `AUDIT_VIEWED` row, `{"view": "bench"}`,
  hashed under the chain head's lock and committed before the answer): the ceiling of a page
  that must write one audit row;
* `/bench/signed-in`: the floor of every signed-in page, what DESIGN.md makes each of them do
  before any work of its own: the session cookie checked, the user loader's SELECT with its
  session-token comparison, the session rules, the security headers, and the Bootstrap layout
  with its navigation and the logout form's CSRF token, around an empty page.

With `BENCH_SQLITE_UNSYNCED=1` in its environment, the factory's SQLite connections also skip
the sync of each commit (`PRAGMA synchronous = OFF`). `make bench` starts one such server, for one
diagnostic figure only: the same transfers with and without the wait for the disk, so the report
can say how much of a SQLite transfer's cost is the durability the app never gives up
(`synchronous = FULL`, app/extensions.py). No deployment and no other server sets it; one test
does, to check that it works and stays out of the production factory.

They are registered by this factory only, which wraps the production factory unchanged and
refuses to run with `APP_ENV=production`: `run.py`, `make serve` and the container never import
this package, so the routes can't be reached there (tests/perf/test_bench_support.py checks
both). `/bench/pk` reads one account row by a random id and shows nothing secret (its type),
but it answers anonymous requests, which no production route should do for database reads.
"""

from __future__ import annotations

import os
import random
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template
from flask_login import login_required
from sqlalchemy import event, func, select

from app import create_app
from app.config import ConfigurationError
from app.extensions import db, limiter
from app.models import Account
from app.security import log_standalone_event

# The environment variable of the unsynced diagnostic server (module docstring).
UNSYNCED_SETTING = "BENCH_SQLITE_UNSYNCED"

bench_bp = Blueprint("bench", __name__, url_prefix="/bench", template_folder="templates")


@bench_bp.route("/text")
@limiter.exempt
def text() -> Response:
    """The framework's ceiling: a short text, no database, no session."""
    return Response("ok\n", mimetype="text/plain")


@bench_bp.route("/pk")
@limiter.exempt
def primary_key() -> Response:
    """One indexed primary-key SELECT through the ORM (`session.get`) for a random account id."""
    highest = current_app.extensions.get("bench_max_account_id")
    if highest is None:  # once per worker, before the first measured request (warm-up)
        highest = db.session.scalar(select(func.max(Account.id))) or 1
        current_app.extensions["bench_max_account_id"] = highest
    account = db.session.get(Account, random.randint(1, highest))  # nosec B311 - load spread, not security
    return Response(f"{account.type if account else 'none'}\n", mimetype="text/plain")


@bench_bp.route("/audit-append")
@limiter.exempt
def audit_append() -> Response:
    """One AUDIT_VIEWED row appended to the hash chain in its own transaction (the audit
    service's log_standalone_event, as every audit view does), then a short text. A GET that
    writes: the benchmark's load tool only sends GETs, and this route never exists outside it."""
    log_standalone_event("AUDIT_VIEWED", {"view": "bench"})
    return Response("appended\n", mimetype="text/plain")


@bench_bp.route("/signed-in")
@limiter.exempt
@login_required
def signed_in() -> str:
    """The signed-in floor: the base layout around an empty page, for any signed-in user."""
    return render_template("bench/signed_in.html")


def create_bench_app(test_config: dict[str, Any] | None = None) -> Flask:
    """The production factory's app with the ceiling routes added.

    Raises ConfigurationError when APP_ENV (environment or `test_config`) is `production`:
    the benchmark's routes must never be served by a production deployment.
    """
    wanted = (test_config or {}).get("APP_ENV") or os.environ.get("APP_ENV") or "development"
    if wanted.strip().lower() == "production":
        raise ConfigurationError("bench routes are never served with APP_ENV=production")
    application = create_app(test_config)
    if application.config["APP_ENV"] == "production":  # pragma: no cover - guarded above
        raise ConfigurationError("bench routes are never served with APP_ENV=production")
    application.register_blueprint(bench_bp)
    if os.environ.get(UNSYNCED_SETTING) == "1":
        skip_sqlite_sync(application)
    return application


def skip_sqlite_sync(application: Flask) -> None:
    """Make every SQLite connection of `application` commit without syncing the disk
    (`PRAGMA synchronous = OFF`, set after the app's own pragmas), for the benchmark's unsynced
    diagnostic server only. Raises ConfigurationError when the database is not SQLite."""
    with application.app_context():
        engine = db.engine
        if engine.dialect.name != "sqlite":
            raise ConfigurationError(f"{UNSYNCED_SETTING} is a SQLite measurement")

        @event.listens_for(engine, "connect")
        def _no_sync(dbapi_connection, _record) -> None:  # pragma: no cover - driver callback
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.close()

        engine.dispose()  # a connection opened before the listener existed would still sync
