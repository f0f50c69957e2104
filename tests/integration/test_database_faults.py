"""Database faults on PostgreSQL (issue 4, item 6; DESIGN.md section 6: unreachable database → 503).

A TCP proxy (tests/support/tcp_proxy.py) sits between the app and the PostgreSQL server named by
TEST_DATABASE_URL; the test switches it off and on. The app is built once per test with its
database URL pointing at the proxy and is never rebuilt or reconfigured while the database is
away, so a 200 after the proxy returns shows that the app recovered by itself (the pre-pinged
pool throws away the dead connections and opens new ones).

Each module run creates its own database `bank_faults_<pid>` on that server, migrates it with
the committed migrations and drops it afterwards WITH (FORCE). The database's own view of the
money is always read through a second, direct app (not through the proxy).

Skipped with a reason when TEST_DATABASE_URL is unset (or not PostgreSQL); fails instead when
REQUIRE_POSTGRES=1, so CI cannot pass by skipping them. They carry the `postgres` marker, so the
suite's conftest runs them in the PostgreSQL pass (`--backend=postgresql`) and skips them in the
SQLite one.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import URL, make_url

from app import create_app
from app.audit.services import verify_chain
from app.banking.services import verify_ledger
from app.config import database_engine_options, env_bool
from app.errors import ERROR_TITLES
from app.extensions import db
from app.models import Account, AuditLog, Transaction
from tests import factories
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

MIGRATIONS = str(Path(__file__).resolve().parents[2] / "migrations")
# psycopg's smallest connect timeout (it raises anything lower to 2 s, like libpq); production
# keeps 5 s. Only this option is lowered: the rest of the app's PostgreSQL options stay as they are.
CONNECT_TIMEOUT_SECONDS = 2
# A refused connection fails at once; allow generous slack for a loaded CI machine.
REFUSED_BOUND_SECONDS = 2.0
UNANSWERED_BOUND_SECONDS = CONNECT_TIMEOUT_SECONDS + 2.0
PASSWORD = factories.DEFAULT_PASSWORD
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')
KEY_INPUT = re.compile(r'name="idempotency_key" type="hidden" value="([^"]+)"')
# Nothing of the driver, the SQL, the server or the stack may reach the page.
INTERNALS = ("Traceback", "psycopg", "OperationalError", "InterfaceError", "sqlalchemy", "SQLAlchemy",
             "server closed", "connection", "timeout expired", "127.0.0.1", "5432", "SELECT", "UPDATE",
             "INSERT", "bank_faults", "File \"", "Exception")
# The headers app/headers.py sets on every response; a 503 must carry the same values.
SECURITY_HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
                    "Cross-Origin-Opener-Policy", "Permissions-Policy", "Cache-Control")
_emails = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# The server, the private database, the proxy and the app
# ---------------------------------------------------------------------------------------------


def _postgres_url() -> URL:
    """TEST_DATABASE_URL as a psycopg 3 URL; skips (or fails under REQUIRE_POSTGRES=1) without it."""
    raw = os.environ.get("TEST_DATABASE_URL", "").strip()
    reason = None
    if not raw:
        reason = ("TEST_DATABASE_URL is not set: the database fault tests need a PostgreSQL server, e.g. "
                  "TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test")
    elif make_url(raw).get_backend_name() != "postgresql":
        reason = "TEST_DATABASE_URL is not a PostgreSQL URL: the database fault tests need PostgreSQL"
    if reason:
        if env_bool("REQUIRE_POSTGRES", False):
            pytest.fail(f"REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return make_url(raw).set(drivername="postgresql+psycopg")


@dataclass
class FaultDatabase:
    direct_url: URL  # the private database, reached straight at the server
    direct_app: Flask  # an app on direct_url, used to arrange data and to read the truth

    def run(self, work: Callable[[], object]):
        """Call `work()` inside the direct app's context and return its result."""
        with self.direct_app.app_context():
            try:
                return work()
            finally:
                db.session.rollback()


@pytest.fixture(scope="module")
def fault_db() -> Iterator[FaultDatabase]:
    """`bank_faults_<pid>` on the TEST_DATABASE_URL server, migrated, and dropped afterwards."""
    server_url = _postgres_url()
    name = f"bank_faults_{os.getpid()}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    direct_app = None
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        direct_url = server_url.set(database=name)
        direct_app = create_app({
            "APP_ENV": "testing",
            "SQLALCHEMY_DATABASE_URI": direct_url.render_as_string(hide_password=False),
        })
        with direct_app.app_context():
            upgrade(directory=MIGRATIONS)
        yield FaultDatabase(direct_url, direct_app)
    finally:
        if direct_app is not None:
            with direct_app.app_context():
                db.engine.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def proxy(fault_db: FaultDatabase) -> Iterator[TcpProxy]:
    """A running proxy to the PostgreSQL server; always stopped at the end of the test."""
    url = fault_db.direct_url
    tcp_proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    tcp_proxy.start()
    try:
        yield tcp_proxy
    finally:
        tcp_proxy.stop()


@pytest.fixture
def bank(fault_db: FaultDatabase, proxy: TcpProxy) -> Iterator[Flask]:
    """The app under test: testing configuration with CSRF on, its database reached only
    through the proxy, and the app's own PostgreSQL engine options (pre-pinged pool, lock and
    statement timeouts) with the connect timeout lowered to CONNECT_TIMEOUT_SECONDS."""
    url = fault_db.direct_url.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    defaults = {"SQLALCHEMY_DATABASE_URI": url}
    database_engine_options(defaults)
    connect_args = dict(defaults["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"], connect_timeout=CONNECT_TIMEOUT_SECONDS)
    application = create_app({
        "APP_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"connect_args": connect_args},
        "WTF_CSRF_ENABLED": True,
    })
    yield application
    with application.app_context():
        db.engine.dispose()


def _engine_of(application: Flask):
    with application.app_context():
        return db.engine


# ---------------------------------------------------------------------------------------------
# Data and pages
# ---------------------------------------------------------------------------------------------


def _customer_with_two_accounts(fault_db: FaultDatabase, first: str = "500.00", second: str = "0") -> SimpleNamespace:
    """A customer with a checking and a savings account, written straight to the database."""

    def arrange():
        user = factories.make_user("customer", email=f"faults{next(_emails)}-{os.getpid()}@example.com")
        checking = factories.make_account(user, first, type="checking")
        savings = factories.make_account(user, second, type="savings")
        return SimpleNamespace(user=user, checking=checking, savings=savings)

    return fault_db.run(arrange)


def _balances(fault_db: FaultDatabase, *account_ids: int) -> tuple[Decimal, ...]:
    """The balances the database holds (read directly, not through the proxy)."""

    def read():
        rows = dict(db.session.execute(select(Account.id, Account.balance).where(Account.id.in_(account_ids))).all())
        return tuple(rows[account_id] for account_id in account_ids)

    return fault_db.run(read)


def _counts(fault_db: FaultDatabase) -> SimpleNamespace:
    """How many ledger rows, audit rows and TRANSFER_CREATED rows the database holds."""

    def read():
        return SimpleNamespace(
            ledger=db.session.scalar(select(func.count(Transaction.id))),
            audit=db.session.scalar(select(func.count(AuditLog.id))),
            transfers=db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "TRANSFER_CREATED")),
        )

    return fault_db.run(read)


def _assert_books_balance(fault_db: FaultDatabase) -> None:
    """verify_ledger() and the audit chain check both pass on what the database holds."""
    ledger = fault_db.run(verify_ledger)
    assert ledger.ok, ledger.problems
    chain = fault_db.run(lambda: verify_chain(db.session))
    assert chain.ok, (chain.first_broken_id, chain.reason)


def _csrf_token(page: str) -> str:
    match = CSRF_INPUT.search(page)
    assert match, "no csrf_token in the page"
    return match.group(1) or match.group(2)


def _login_form(client: FlaskClient) -> dict[str, str]:
    page = client.get("/auth/login")
    assert page.status_code == 200
    return {"csrf_token": _csrf_token(page.get_data(as_text=True))}


def _log_in(client: FlaskClient, email: str) -> None:
    response = client.post("/auth/login", data={**_login_form(client), "email": email, "password": PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]


def _transfer_form(client: FlaskClient, customer: SimpleNamespace, amount: str) -> dict[str, str]:
    """The fields of an internal transfer checking → savings, from the form the server issued
    (its CSRF token and its one-time idempotency key)."""
    page = client.get("/banking/transfer/internal")
    assert page.status_code == 200, page.status_code
    html = page.get_data(as_text=True)
    return {"csrf_token": _csrf_token(html), "idempotency_key": KEY_INPUT.search(html).group(1),
            "source_account": str(customer.checking.id), "target_account": str(customer.savings.id),
            "amount": amount, "description": "Fault test"}


def _timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def _assert_plain_503(response, elapsed: float, bound: float, reference_headers) -> None:
    """503, the plain page with its fixed message, no internals, the security headers, in time."""
    body = response.get_data(as_text=True)
    assert response.status_code == 503, (response.status_code, body[:2000])
    assert elapsed < bound, f"the 503 took {elapsed:.2f} s (bound {bound} s)"
    assert response.mimetype == "text/html"
    title, message = ERROR_TITLES[503]
    assert f"503 · {title}" in body and message in body
    leaked = [word for word in INTERNALS if word in body]
    assert not leaked, f"internals on the 503 page: {leaked}"
    # The transaction may have committed before the connection died; the page must not promise otherwise.
    assert "Nothing was changed" not in body
    for name in SECURITY_HEADERS:
        assert response.headers.get(name) == reference_headers.get(name), name
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "no-store" in response.headers["Cache-Control"]


def _pool_idle(application: Flask) -> None:
    """No request left a pooled connection checked out."""
    assert _engine_of(application).pool.checkedout() == 0


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def test_pages_answer_503_while_the_database_is_down_and_recover_by_themselves(fault_db, proxy, bank):
    """With the database unreachable, do the login POST, the dashboard, a transfer POST and the
    transactions list each answer a plain 503 (no internals, security headers on) at once, while
    the login page itself still works, is the money left alone, and does the same app serve them
    again by itself once the database is back?"""
    customer = _customer_with_two_accounts(fault_db)
    signed_in, visitor = bank.test_client(), bank.test_client()
    _log_in(signed_in, customer.user.email)
    healthy = signed_in.get("/banking/dashboard")
    assert healthy.status_code == 200
    transfer = _transfer_form(signed_in, customer, "125.00")
    login = {**_login_form(visitor), "email": customer.user.email, "password": PASSWORD}
    before = _balances(fault_db, customer.checking.id, customer.savings.id)
    counts_before = _counts(fault_db)

    proxy.stop()
    timings = {}
    for name, call in (
        ("dashboard", lambda: signed_in.get("/banking/dashboard")),
        ("transfer POST", lambda: signed_in.post("/banking/transfer/internal", data=transfer)),
        ("login POST", lambda: visitor.post("/auth/login", data=login)),
        ("transactions", lambda: signed_in.get("/banking/transactions")),
    ):
        response, timings[name] = _timed(call)
        _assert_plain_503(response, timings[name], REFUSED_BOUND_SECONDS, healthy.headers)
    _pool_idle(bank)
    assert visitor.get("/auth/login").status_code == 200, "a page that needs no database should keep working"

    assert _balances(fault_db, customer.checking.id, customer.savings.id) == before
    assert _counts(fault_db) == counts_before
    _assert_books_balance(fault_db)

    proxy.start()
    (recovered, timings["first page back"]) = _timed(lambda: signed_in.get("/banking/dashboard"))
    assert recovered.status_code == 200
    moved = signed_in.post("/banking/transfer/internal", data=transfer, follow_redirects=True)
    assert moved.status_code == 200 and "Transfer complete." in moved.get_data(as_text=True)
    assert visitor.post("/auth/login", data=login).status_code == 302
    assert _balances(fault_db, customer.checking.id, customer.savings.id) == (before[0] - Decimal("125.00"),
                                                                               before[1] + Decimal("125.00"))
    _assert_books_balance(fault_db)
    _pool_idle(bank)
    print("timings (s): " + ", ".join(f"{name} {seconds:.3f}" for name, seconds in timings.items()))


def test_an_unanswering_database_is_a_503_within_the_connect_timeout(fault_db, proxy, bank):
    """When the database accepts connections but never answers (a hung server or a dropped
    network), does the page still answer a plain 503, bounded by the connect timeout instead of
    hanging, and does the app recover once the database answers again?"""
    customer = _customer_with_two_accounts(fault_db)
    client = bank.test_client()
    _log_in(client, customer.user.email)
    healthy = client.get("/banking/dashboard")
    assert healthy.status_code == 200

    proxy.stop()
    proxy.start(mode="blackhole")
    response, elapsed = _timed(lambda: client.get("/banking/dashboard"))
    _assert_plain_503(response, elapsed, UNANSWERED_BOUND_SECONDS, healthy.headers)
    assert elapsed >= CONNECT_TIMEOUT_SECONDS * 0.9, "expected the connect timeout to be what ended the wait"
    _pool_idle(bank)

    proxy.stop()
    proxy.start()
    assert client.get("/banking/dashboard").status_code == 200
    print(f"unanswered database: 503 after {elapsed:.3f} s (connect timeout {CONNECT_TIMEOUT_SECONDS} s)")


# The statement that writes the audit rows: a plain INSERT, or on PostgreSQL an INSERT carrying
# the chain head's UPDATE in a WITH clause (app/audit/services.py _write_pending).
AUDIT_WRITE = ("INSERT INTO AUDIT_LOG", "WITH NEW_HEAD AS")


def _cut_at(application: Flask, when: str, statement_start: str | tuple[str, ...], action: Callable[[], None]) -> dict:
    """Call `action()` once, from inside the app's own database work, `when` ("before" or
    "after") the first statement starting with `statement_start` (or any of several; quotes
    ignored, any case)."""
    engine = _engine_of(application)
    state = {"fired": False}

    def listener(conn, cursor, statement, parameters, context, executemany):
        if not state["fired"] and statement.replace('"', "").lstrip().upper().startswith(statement_start):
            state["fired"] = True
            action()

    event.listen(engine, f"{when}_cursor_execute", listener)
    state["remove"] = lambda: event.remove(engine, f"{when}_cursor_execute", listener)
    return state


@pytest.mark.parametrize(
    ("when", "statement_start"),
    [
        pytest.param("after", "UPDATE ACCOUNT", id="after-the-first-balance-update"),
        pytest.param("before", "INSERT INTO TRANSACTION", id="before-the-ledger-rows"),
        pytest.param("before", AUDIT_WRITE, id="before-the-audit-rows"),
    ],
)
def test_a_transfer_cut_midway_leaves_nothing_half_written(fault_db, proxy, bank, when, statement_start):
    """When the database connection dies in the middle of a transfer (after one balance moved,
    before the ledger rows, or before the audit rows), is the answer a plain 503 with nothing
    written at all — balances, ledger and audit as before, the books still balancing — and
    does the same form go through once the database is back?"""
    customer = _customer_with_two_accounts(fault_db)
    accounts = (customer.checking.id, customer.savings.id)
    client = bank.test_client()
    _log_in(client, customer.user.email)
    healthy = client.get("/banking/dashboard")
    form = _transfer_form(client, customer, "200.00")
    before, counts_before = _balances(fault_db, *accounts), _counts(fault_db)

    cut = _cut_at(bank, when, statement_start, proxy.stop)
    try:
        response, elapsed = _timed(lambda: client.post("/banking/transfer/internal", data=form))
    finally:
        cut["remove"]()
    assert cut["fired"], f"the transfer never ran a statement starting {statement_start!r}"
    _assert_plain_503(response, elapsed, REFUSED_BOUND_SECONDS, healthy.headers)
    _pool_idle(bank)

    assert _balances(fault_db, *accounts) == before
    assert _counts(fault_db) == counts_before
    _assert_books_balance(fault_db)

    proxy.start()
    done = client.post("/banking/transfer/internal", data=form, follow_redirects=True)
    assert done.status_code == 200 and "Transfer complete." in done.get_data(as_text=True)
    assert _balances(fault_db, *accounts) == (before[0] - Decimal("200.00"), before[1] + Decimal("200.00"))
    after = _counts(fault_db)
    assert (after.ledger, after.transfers) == (counts_before.ledger + 2, counts_before.transfers + 1)
    _assert_books_balance(fault_db)


def test_a_commit_whose_answer_is_lost_moves_the_money_once_at_most(fault_db, proxy, bank):
    """When the connection dies after the transfer's COMMIT reached the server but before its
    answer came back (the one case where the app cannot know the outcome), is the answer a
    plain 503 that does not claim nothing changed, are the balances either untouched or fully
    moved — never half — and does sending the same form again after the database returns move
    the money exactly once in total?"""
    customer = _customer_with_two_accounts(fault_db)
    accounts = (customer.checking.id, customer.savings.id)
    client = bank.test_client()
    _log_in(client, customer.user.email)
    healthy = client.get("/banking/dashboard")
    form = _transfer_form(client, customer, "75.00")
    before, counts_before = _balances(fault_db, *accounts), _counts(fault_db)
    moved = (before[0] - Decimal("75.00"), before[1] + Decimal("75.00"))

    # Armed while the transfer's own transaction writes its audit rows, so the next COMMIT on
    # the wire is that transaction's (earlier read-only transactions commit too).
    cut = _cut_at(bank, "before", AUDIT_WRITE, lambda: proxy.cut_after(b"COMMIT"))
    try:
        response, elapsed = _timed(lambda: client.post("/banking/transfer/internal", data=form))
    finally:
        cut["remove"]()
    assert cut["fired"] and proxy.cut_happened.is_set(), "the COMMIT was never cut"
    _assert_plain_503(response, elapsed, REFUSED_BOUND_SECONDS, healthy.headers)
    assert proxy.cut_settled.wait(5), "the server never finished with the cut connection"
    _pool_idle(bank)

    outcome = _balances(fault_db, *accounts)
    assert outcome in (before, moved), f"half-written transfer: {before} -> {outcome}"
    _assert_books_balance(fault_db)
    still_down = client.get("/banking/dashboard")
    assert still_down.status_code == 503

    proxy.start()
    again = client.post("/banking/transfer/internal", data=form, follow_redirects=True)
    page = again.get_data(as_text=True)
    assert again.status_code == 200
    if outcome == moved:
        assert "This transfer was already made; it was not repeated." in page
    else:
        assert "Transfer complete." in page
    assert _balances(fault_db, *accounts) == moved
    after = _counts(fault_db)
    assert (after.ledger, after.transfers) == (counts_before.ledger + 2, counts_before.transfers + 1)
    _assert_books_balance(fault_db)
    print(f"lost COMMIT answer: the server had {'committed' if outcome == moved else 'not committed'} the transfer")
