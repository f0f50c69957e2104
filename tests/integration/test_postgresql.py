"""What only the PostgreSQL run can check: the session settings the app relies on there and the
column types the migrations create (DESIGN.md sections 2 and 3). Skipped on SQLite; the
append-only triggers, TRUNCATE included, are checked in test_audit_chain.py on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from app.extensions import db

pytestmark = pytest.mark.postgres


def test_connections_use_read_committed_with_lock_and_statement_timeouts(app):
    """Does every connection of the app run at READ COMMITTED (the conditional updates' row locks
    do the serializing) with the lock and statement timeouts of app/config.py, so a stuck lock
    becomes a retry or a "try again" page instead of a hung worker?"""
    with app.app_context():
        settings = {name: db.session.execute(text(f"SHOW {name}")).scalar_one()
                    for name in ("transaction_isolation", "lock_timeout", "statement_timeout")}
        db.session.rollback()

    assert settings == {"transaction_isolation": "read committed", "lock_timeout": "10s", "statement_timeout": "30s"}


def test_money_is_stored_as_integer_cents_and_times_with_their_zone(app):
    """Do the migrations store every amount as BIGINT cents (never a float or an unscaled
    numeric) and every timestamp as `timestamp with time zone`?"""
    with app.app_context():
        types = dict(db.session.execute(text(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name IN ('account', 'transaction', 'audit_log')"
        )).all())
        db.session.rollback()

    assert types["account.balance"] == types["transaction.amount"] == "bigint"
    assert {types[column] for column in ("account.created_at", "transaction.timestamp", "audit_log.timestamp")} == {
        "timestamp with time zone"}
