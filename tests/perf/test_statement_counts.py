"""Performance regression guard, part 1: how many SQL statements each page sends.

A page that loads related rows one by one (N+1) sends more statements as the page fills up; here
every list holds more than a page of rows, so such a change fails the budget below at once.
Counts, not times: deterministic on any machine, a few seconds in all (the benchmark itself,
`make bench`, measures times; bench/README.md). BEGIN is not counted (SQLite sends it as a
statement, PostgreSQL's driver does not); the budgets hold on both backends.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Account, AuditLog, SupportTicket, User
from app.support import services as support
from tests import factories
from tests.perf.conftest import ADMIN_EMAIL, AUDITOR_EMAIL, HEAVY_EMAIL

FILTERS = (f"date_from={(date.today() - timedelta(days=20)).isoformat()}&date_to={date.today().isoformat()}"
           "&type=debit&min_amount=0.01&max_amount=40.00")

# (who, path, most statements). Every request also sends the user loader's SELECT, counted here.
# Rationale of each budget, so a change that needs more says why in review:
PAGES = [
    # user, accounts, the last 5 entries of every account with both sides' accounts (one UNION ALL)
    ("customer", "/banking/dashboard", 3),
    # user, one page of entries with account and counterparties joined, its ids found per account
    # (on PostgreSQL each account's id found inside the statement; on SQLite a UNION ALL, which
    # needs the account ids first)
    ("customer", "/banking/transactions", {"postgresql": 2, "sqlite": 3}),
    ("customer", "/banking/transactions?page=3", {"postgresql": 2, "sqlite": 3}),
    ("customer", f"/banking/transactions?{FILTERS}", {"postgresql": 2, "sqlite": 3}),
    # user, accounts (the selects), nothing else: the key is signed, not stored
    ("customer", "/banking/transfer/external", 2),
    ("customer", "/banking/transfer/internal", 2),
    # user, tickets with their notes (selectinload)
    ("customer", "/support/my-tickets", 3),
    # user; AUDIT_VIEWED (chain head lock, then the audit INSERT carrying the head's UPDATE on
    # PostgreSQL, two statements on SQLite, which also begins its write transaction afresh); the
    # reload of the user the commit expired; the page (past the first, the newer page's cursor
    # rides along as a scalar subquery: app/pagination.py, newer_cursor_column)
    ("auditor", "/audit/logs", {"postgresql": 5, "sqlite": 6}),
    ("auditor", "/audit/logs?before={audit_cursor}", {"postgresql": 5, "sqlite": 6}),
    # user; the page (with the newer page's cursor past the first); then AUDIT_VIEWED as above,
    # written last, so no reload of the user follows its commit
    ("auditor", "/audit/transactions", {"postgresql": 4, "sqlite": 5}),
    ("auditor", "/audit/transactions?before={transaction_cursor}", {"postgresql": 4, "sqlite": 5}),
    ("auditor", f"/audit/transactions?{FILTERS}", {"postgresql": 4, "sqlite": 5}),
    ("auditor", "/audit/transactions?account_number={account_number}", {"postgresql": 4, "sqlite": 5}),
    # user, one page of users / accounts with their owners joined
    ("admin", "/banking/admin/users", 2),
    ("admin", "/banking/admin/accounts", 2),
    ("admin", "/banking/admin/accounts?page=2", 2),
    # user, tickets with their customers joined
    ("support", "/support/tickets", 2),
    ("support", "/support/tickets?status=in_progress", 2),
    # user, the ticket with its customer, its notes with their authors
    ("support", "/support/tickets/{ticket_id}", 3),
]


@pytest.fixture
def tickets(app, seeded):
    """30 tickets (more than a page) from 10 customers, each with two notes by one agent."""
    with app.app_context():
        agent = db.session.get(User, factories.make_user("support").id)
        customers = list(db.session.scalars(select(User).where(User.role == "customer").order_by(User.id).limit(10)))
        last = None
        for n in range(30):
            ticket = support.create_ticket(customers[n % 10], f"Subject {n}", "Something happened.")
            support.update_ticket(agent, ticket.id, "in_progress", "Looking into it.")
            support.update_ticket(agent, ticket.id, "in_progress", "Still looking.")
            last = ticket.id
        return {"agent_email": agent.email, "ticket_id": last, "customer_email": customers[0].email}


@pytest.fixture
def clients(sign_in, tickets):
    return {"customer": sign_in(HEAVY_EMAIL), "auditor": sign_in(AUDITOR_EMAIL), "admin": sign_in(ADMIN_EMAIL),
            "support": sign_in(tickets["agent_email"], factories.DEFAULT_PASSWORD),
            "ticket_owner": sign_in(tickets["customer_email"])}


def _values(app, tickets) -> dict:
    with app.app_context():
        return {
            "audit_cursor": db.session.scalar(select(AuditLog.id).order_by(AuditLog.id.desc()).offset(60).limit(1)),
            "transaction_cursor": 200,
            "account_number": db.session.scalar(select(Account.account_number).where(Account.id == 1)),
            "ticket_id": tickets["ticket_id"],
        }


def test_every_page_stays_within_its_statement_budget(app, clients, tickets, recorder, backend_name):
    """Does each page send at most its fixed number of statements (no N+1 query, no query per
    row or per relationship), with more rows than fit on the page?"""
    values = _values(app, tickets)
    over, uncached = [], []
    for who, path, budget in PAGES:
        client = clients["ticket_owner" if path == "/support/my-tickets" else who]
        url = path.format(**values)
        budget = budget[backend_name] if isinstance(budget, dict) else budget
        client.get(url)  # first visit: anything cached per process is filled
        with recorder.recording() as statements:
            answer = client.get(url)
        assert answer.status_code == 200, (url, answer.status_code)
        uncached.extend(f"{url}: {' '.join(sql.split())[:160]}" for sql in recorder.compiled_afresh)
        if len(statements) > budget:
            over.append(f"{url}: {len(statements)} statements (budget {budget}):\n    "
                        + "\n    ".join(" ".join(sql.split())[:160] for sql, _ in statements))
    assert not over, "\n".join(over)
    # On a second visit every statement comes from SQLAlchemy's compiled cache: compiling one
    # costs more CPU than sending it (a multi-VALUES INSERT, for one, is never cached).
    assert not uncached, "compiled afresh on every request:\n" + "\n".join(uncached)


def test_a_transfer_sends_a_fixed_number_of_statements(app, clients, recorder, backend_name):
    """Does a whole transfer POST send a fixed, small number of statements (the reads, the two
    conditional updates, the two ledger rows in one INSERT, the audit row and the chain head)?"""
    with app.app_context():
        heavy = db.session.scalar(select(User).where(User.email == HEAVY_EMAIL))
        source = db.session.scalar(select(Account).where(Account.owner_id == heavy.id).order_by(Account.id))
        target = db.session.scalar(select(Account.account_number).where(Account.owner_id != heavy.id).limit(1))
        heavy_id, source_id = heavy.id, source.id
    form = {"source_account": str(source_id), "target_account_number": target, "amount": "1.00",
            "description": "guard"}
    client = clients["customer"]
    client.post("/banking/transfer/external", data=form | {"idempotency_key": factories.issued_key(app, heavy_id)})
    with recorder.recording() as statements:
        answer = client.post("/banking/transfer/external",
                             data=form | {"idempotency_key": factories.issued_key(app, heavy_id)})
    assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
    # user, accounts (form choices), source and target (one SELECT), debit, credit, the two
    # ledger rows (one INSERT), head lock, audit INSERT carrying the head's UPDATE (two
    # statements on SQLite). No reload of the user inside the write transaction (SQLite's commit
    # of the read transaction expires it; TransferRequest carries its id and role). No
    # idempotency look-up: the unique index refuses a replay, and only a refusal looks the key up.
    budget = 8 if backend_name == "postgresql" else 9
    assert len(statements) <= budget, "\n".join(" ".join(sql.split())[:160] for sql, _ in statements)
    # Every one of them, the multi-row INSERTs included, comes from the compiled cache.
    assert not recorder.compiled_afresh, "\n".join(" ".join(sql.split())[:160] for sql in recorder.compiled_afresh)


def test_the_dashboard_sends_as_many_statements_for_one_account_as_for_five(app, sign_in, seeded, recorder):
    """Is the dashboard's statement count independent of how many accounts the customer has?"""
    counts = {}
    with app.app_context():
        one = db.session.scalar(select(User).join(Account, Account.owner_id == User.id)
                                .where(User.email.like("bench-hot-%")).order_by(User.id).limit(1)).email
    for email in (one, HEAVY_EMAIL):
        client = sign_in(email)
        client.get("/banking/dashboard")
        with recorder.recording() as statements:
            assert client.get("/banking/dashboard").status_code == 200
        counts[email] = len(statements)
    assert counts[one] == counts[HEAVY_EMAIL], counts


def test_support_queue_statement_count_does_not_grow_with_tickets(app, clients, recorder):
    """Sanity check of the fixture: the support queue really lists a full page of tickets."""
    with app.app_context():
        assert db.session.scalar(select(db.func.count(SupportTicket.id))) > 25
    answer = clients["support"].get("/support/tickets")
    assert answer.get_data(as_text=True).count('rel="next"') == 1
