"""How a request's database transaction ends (app/extensions.end_read_only_transaction).

On PostgreSQL a request whose transaction only read ends it with COMMIT, so psycopg keeps the
connection's prepared statements (a ROLLBACK makes it forget them all). That must never commit
work that was not meant to be committed: a failed request, changes left in the session, audit
events queued without a commit and writes made outside atomic() are all rolled back as before.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from app import extensions
from app.extensions import db
from app.models import Account, AuditLog
from app.security import log_event

pytestmark = pytest.mark.postgres


def _prepared_statements(app) -> int:
    """How many prepared statements the pool's one connection holds (the test client runs its
    requests one after another, so they all use the same connection)."""
    with app.app_context():
        return db.session.scalar(text("SELECT count(*) FROM pg_prepared_statements"))


def test_read_only_requests_keep_the_connections_prepared_statements(app, client, logged_in_customer):
    """After a dozen dashboards (psycopg prepares a statement at its fifth use), does the
    connection still hold prepared statements, which a ROLLBACK at each request's end would
    have dropped?"""
    for _ in range(12):
        assert client.get("/banking/dashboard").status_code == 200
    assert _prepared_statements(app) > 0


def _balance(app, account_id: int):
    with app.app_context():
        return db.session.scalar(select(Account.balance).where(Account.id == account_id))


@pytest.fixture
def probe(app):
    """Routes that leave work behind without atomic(), as a buggy view would."""
    def write_outside_atomic(account_id: int):
        db.session.execute(text("UPDATE account SET balance = balance + 100 WHERE id = :id"), {"id": account_id})
        return "written"

    def change_left_in_session(account_id: int):
        db.session.get(Account, account_id).status = "frozen"
        return "changed"

    def event_queued_only():
        db.session.execute(select(Account.id).limit(1))  # a read: the request has a transaction
        log_event("ACCESS_DENIED", {"path": "/probe/queued-event"})
        return "queued"


    app.add_url_rule("/probe/write/<int:account_id>", view_func=write_outside_atomic)
    app.add_url_rule("/probe/change/<int:account_id>", view_func=change_left_in_session)
    app.add_url_rule("/probe/queued-event", view_func=event_queued_only)
    return app


def test_a_write_outside_atomic_is_never_committed_by_the_request_end(probe, client, customer, make_account):
    """Is an UPDATE a view ran outside atomic() rolled back at the request's end, not
    committed along with the reads?"""
    account = make_account(customer, "10.00")
    before = _balance(probe, account.id)
    assert client.get(f"/probe/write/{account.id}").status_code == 200
    assert _balance(probe, account.id) == before


def test_a_change_left_in_the_session_is_never_committed_by_the_request_end(probe, client, customer, make_account):
    """Is an ORM change a view left unflushed in the session discarded, not committed?"""
    account = make_account(customer, "10.00")
    assert client.get(f"/probe/change/{account.id}").status_code == 200
    with probe.app_context():
        assert db.session.get(Account, account.id).status == "active"


def test_an_audit_event_queued_without_a_commit_is_never_written_by_the_request_end(probe, client):
    """Is an audit event queued by a view that never committed left unwritten (it describes
    work that did not happen)?"""
    assert client.get("/probe/queued-event").status_code == 200
    with probe.app_context():
        written = db.session.scalars(select(AuditLog.details).where(AuditLog.action == "ACCESS_DENIED")).all()
    assert not any("/probe/queued-event" in details for details in written)


def test_the_transaction_of_a_failed_request_is_rolled_back(app, customer, make_account):
    """Does the request's end leave the transaction to the ROLLBACK when the request failed, even
    holding a write none of the other checks would see (here one made as if inside atomic())?"""
    account = make_account(customer, "10.00")
    before = _balance(app, account.id)
    with app.test_request_context("/banking/dashboard"):
        token = extensions._write_intent.set(True)
        try:
            db.session.execute(text("UPDATE account SET balance = balance + 100 WHERE id = :id"), {"id": account.id})
        finally:
            extensions._write_intent.reset(token)
        extensions.end_read_only_transaction(RuntimeError("the view failed"))
        still_open = db.session().in_transaction()  # not committed: left to the ROLLBACK
        db.session.rollback()  # what Flask-SQLAlchemy's teardown does next
    assert still_open
    assert _balance(app, account.id) == before
