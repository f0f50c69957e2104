"""Shared payloads and helpers of the attack suite's injection and input-shape cases (part B:
test_xss.py, test_sql_metacharacters.py, test_mass_assignment.py, test_money_edges.py).

Each of those modules runs its many cases against one application and database built for the
module (`module_app`), not one per case: a fresh PostgreSQL clone costs about half a second, and
the cases are many. Every case therefore creates the users and accounts it needs itself and
judges the outcome by what changed (`Rows` snapshots, `RowChanges`), never by absolute counts.
"""

from __future__ import annotations

import html
import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from types import SimpleNamespace

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, inspect, select

from app.audit.services import verify_chain
from app.banking.services import verify_ledger
from app.extensions import db
from app.models import Account, AuditLog, Transaction, User, utcnow
from app.security import log_event
from tests import factories
from tests.conftest import build_app, dispose_engines
from tests.integration.test_headers_and_errors import inline_code_in

# ---------------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------------

# Script injection (CWE-79, CWE-1336): each ends up in every text field, filter and form.
XSS_PAYLOADS = {
    "script_tag": "<script>alert(1)</script>",
    "attribute_breakout": '"><img src=x onerror=alert(1)>',
    "javascript_url": "javascript:alert(1)",
    "jinja_ssti": "{{7*7}}",
    "textarea_breakout": "</textarea><script>",
}

# SQL metacharacters (CWE-89): quotes, a tautology, a stacked statement, LIKE wildcards and the
# LIKE escape, a closing parenthesis, a NUL byte (PostgreSQL refuses it in text), and
# look-alike quotes that a careless normalization could fold into ASCII ones.
SQL_PAYLOADS = {
    "single_quote": "'",
    "double_quote": '"',
    "or_tautology": "' OR '1'='1",
    "stacked_drop_table": "1; DROP TABLE account--",
    "percent_wildcard": "%",
    "underscore_wildcard": "_",
    "backslash": "\\",
    "close_paren": ")",
    "nul_byte": "\x00",
    "unicode_quotes": "\u2019\u02bc\uff07\u201c",
}

# The tables every migrated database has; an injected DROP would make one disappear.
EXPECTED_TABLES = frozenset({
    "user", "login_attempt", "account", "transaction", "support_ticket", "ticket_note", "audit_log",
    "audit_chain_head", "alembic_version",
})
# Tables compared row by row; the audit log only grows (checked by `audit_rows_since`) and its
# chain head moves with it.
COMPARED_TABLES = ("user", "login_attempt", "account", "transaction", "support_ticket", "ticket_note")

_markers = itertools.count(1)
_ips = itertools.count(1)
_emails = itertools.count(1)


def marker() -> str:
    """A short lower-case tag, unique in this run, appended to a payload to find it on a page."""
    return f"zq{next(_markers)}"


def unique_ip() -> str:
    """A documentation address (RFC 5737) not used before in this run, so the per-IP login
    throttle (20 failures in 10 minutes) never mixes up two cases."""
    n = next(_ips)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


def unique_email(prefix: str = "attack") -> str:
    return f"{prefix}{next(_emails)}@example.com"


# ---------------------------------------------------------------------------------------------
# One application and database per test module
# ---------------------------------------------------------------------------------------------


@contextmanager
def module_app(test_backend, **overrides) -> Iterator[Flask]:
    """An app on a private copy of the migrated template, dropped when the block ends."""
    url = test_backend.create()
    try:
        yield build_app(url, **overrides)
    finally:
        dispose_engines(url)
        test_backend.drop(url)


def signed_in(app: Flask, user, *, password: str = factories.DEFAULT_PASSWORD, ip: str | None = None) -> FlaskClient:
    """A new test client signed in as `user` (through the login route)."""
    client = app.test_client()
    extra = {"environ_base": {"REMOTE_ADDR": ip}} if ip else {}
    response = client.post("/auth/login", data={"email": user.email, "password": password}, **extra)
    assert response.status_code == 302, f"{user.email} could not sign in: {response.status_code}"
    return client


def make_user(app: Flask, role: str = "customer", **kwargs) -> SimpleNamespace:
    with app.app_context():
        return factories.make_user(role, **kwargs)


def make_account(app: Flask, owner, balance: str | Decimal = "100.00", **kwargs) -> SimpleNamespace:
    with app.app_context():
        return factories.make_account(owner, balance, **kwargs)


def add_credits(app: Flask, account, amounts, *, description: str = "Payment in") -> None:
    """Pay each of `amounts` (strings or Decimals, two places) into `account` as a transfer from
    a funding account of a new customer, written as the bank writes a transfer: a debit and a
    credit under one reference, both balances moved, and a TRANSFER_CREATED audit row. The
    ledger invariants and the ledger's match with the audit trail (verify_ledger) keep holding,
    which an extra opening deposit would break (set-up only)."""
    amounts = [Decimal(amount) for amount in amounts]
    payer = make_user(app, "customer")
    funding = make_account(app, payer, sum(amounts, Decimal("0.00")))
    with app.app_context():
        source, target = db.session.get(Account, funding.id), db.session.get(Account, account.id)
        for amount in amounts:
            reference = f"TX-ATK{next(_markers):018d}"[-24:]
            moment = utcnow()  # both rows of a transfer carry one time, as the bank writes them
            for row_account, entry_type in ((source, "debit"), (target, "credit")):
                db.session.add(Transaction(
                    account_id=row_account.id, sender_account_id=source.id, receiver_account_id=target.id,
                    amount=amount, type=entry_type, description=description.format(amount=amount),
                    reference=reference, initiated_by_user_id=payer.id, timestamp=moment,
                ))
            source.balance = source.balance - amount
            target.balance = target.balance + amount
            log_event("TRANSFER_CREATED", {
                "kind": "external", "amount": str(amount), "source_account_id": source.id,
                "source_account": source.account_number, "source_owner_id": payer.id,
                "target_account": target.account_number, "target_owner_id": target.owner_id,
                "acting_role": "customer", "reference": reference}, user_id=payer.id)
        db.session.commit()


# ---------------------------------------------------------------------------------------------
# What the database holds, and what changed
# ---------------------------------------------------------------------------------------------


Rows = dict[str, dict[tuple, dict]]


def rows_of(app: Flask, tables=COMPARED_TABLES) -> Rows:
    """Every row of `tables` as {table: {primary key: {column: value}}}."""
    with app.app_context():
        snapshot: Rows = {}
        for name in tables:
            table = db.metadata.tables[name]
            keys = [column.name for column in table.primary_key.columns]
            snapshot[name] = {
                tuple(row[k] for k in keys): dict(row)
                for row in db.session.execute(select(table)).mappings()
            }
        db.session.rollback()
        return snapshot


@dataclass
class RowChanges:
    """The difference between two `rows_of` snapshots."""

    added: dict[str, list[dict]] = field(default_factory=dict)
    removed: dict[str, list[dict]] = field(default_factory=dict)
    changed: dict[str, dict[tuple, dict[str, tuple]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def changed_columns(self, table: str) -> set[str]:
        return {name for columns in self.changed.get(table, {}).values() for name in columns}


def row_changes(before: Rows, after: Rows) -> RowChanges:
    changes = RowChanges()
    for table in after:
        old, new = before.get(table, {}), after[table]
        added = [new[key] for key in new.keys() - old.keys()]
        removed = [old[key] for key in old.keys() - new.keys()]
        changed = {}
        for key in new.keys() & old.keys():
            columns = {name: (old[key][name], value) for name, value in new[key].items() if old[key][name] != value}
            if columns:
                changed[key] = columns
        if added:
            changes.added[table] = sorted(added, key=lambda row: str(row.get("id")))
        if removed:
            changes.removed[table] = removed
        if changed:
            changes.changed[table] = changed
    return changes


def row_counts(app: Flask, tables=COMPARED_TABLES) -> dict[str, int]:
    """The number of rows of each of `tables` (a cheap "nothing was added or removed")."""
    with app.app_context():
        return {name: db.session.scalar(select(func.count()).select_from(db.metadata.tables[name])) for name in tables}


def audit_head(app: Flask) -> int:
    """The id of the newest audit row (0 when the log is empty)."""
    with app.app_context():
        return db.session.scalar(select(func.coalesce(func.max(AuditLog.id), 0)))


def audit_rows_since(app: Flask, head: int) -> list[tuple[str, int | None, dict]]:
    """(action, user id, details) of the audit rows written after row `head`, oldest first."""
    with app.app_context():
        rows = db.session.execute(
            select(AuditLog.action, AuditLog.user_id, AuditLog.details).where(AuditLog.id > head).order_by(AuditLog.id)
        ).all()
    return [(action, user_id, json.loads(details)) for action, user_id, details in rows]


def table_names(app: Flask) -> set[str]:
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


def assert_database_intact(app: Flask) -> None:
    """Every table is still there, the money invariants hold (what `flask verify-ledger`
    checks) and the audit chain verifies (what `flask verify-audit` checks)."""
    missing = EXPECTED_TABLES - table_names(app)
    assert not missing, f"tables gone: {sorted(missing)}"
    with app.app_context():
        ledger = verify_ledger()
        chain = verify_chain(db.session)
        db.session.rollback()
    assert ledger.ok, ledger.problems
    assert chain.ok, f"audit chain broken at row {chain.first_broken_id}: {chain.reason}"


def balances(app: Flask, account_ids) -> dict[int, Decimal]:
    with app.app_context():
        rows = db.session.execute(select(Account.id, Account.balance).where(Account.id.in_(list(account_ids))))
        return dict(rows.all())


def user_row(app: Flask, user_id: int) -> dict:
    with app.app_context():
        row = db.session.execute(select(db.metadata.tables["user"]).where(User.id == user_id)).mappings().one()
        return dict(row)


# ---------------------------------------------------------------------------------------------
# Reading pages
# ---------------------------------------------------------------------------------------------


def injected_markup(page: str) -> list[str]:
    """What html.parser finds in `page` that the site itself never sends: inline <script> or
    <style>, style= or on*= attributes, javascript: URLs, scripts or stylesheets not served
    from this site (tests/integration/test_headers_and_errors.py's scanner, plus its resources)."""
    finder = inline_code_in(page)
    foreign = [f"foreign resource {src!r}" for src in finder.resources
               if not src.startswith("/") or src.startswith("//")]
    return finder.problems + foreign


def page_text(response) -> str:
    """The page with entities decoded: what a reader sees (and what an attribute holds)."""
    return html.unescape(response.get_data(as_text=True))


_FEEDBACK = re.compile(r'<div class="invalid-feedback d-block">(.*?)</div>', re.S)
_ALERT = re.compile(r'<div class="alert alert-danger" role="alert">(.*?)</div>', re.S)


def field_errors(response, name: str) -> list[str]:
    """The error messages Bootstrap-Flask shows under the form field `name`."""
    body = response.get_data(as_text=True)
    start = body.find(f'id="{name}"')
    if start < 0:
        return []
    end = body.find('<div class="mb-3">', start)
    chunk = body[start:end if end > 0 else len(body)]
    return [html.unescape(message.strip()) for message in _FEEDBACK.findall(chunk)]


def link(response, rel: str) -> str | None:
    """The decoded href of the page's `rel` ("next" or "prev") link, or None."""
    match = re.search(rf'rel="{rel}" href="([^"]+)"', response.get_data(as_text=True))
    return html.unescape(match.group(1)) if match else None


def error_messages(response) -> list[str]:
    """Every form error and danger alert on the page (what "a 400 with a message" shows)."""
    body = response.get_data(as_text=True)
    return [html.unescape(re.sub(r"<[^>]+>", "", m)).strip() for m in _FEEDBACK.findall(body) + _ALERT.findall(body)]


class _TableReader(HTMLParser):
    """Cells of the rows in <tbody>, as text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td":
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "td" and self._cell is not None and self.rows:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(response) -> list[list[str]]:
    """The data rows of the page's tables (cell texts), without 'nothing found' rows."""
    reader = _TableReader()
    reader.feed(response.get_data(as_text=True))
    reader.close()
    return [row for row in reader.rows if len(row) > 1]
