"""`insert_rows`: the one INSERT that writes a transfer's two ledger rows and the audit rows,
built once per shape so SQLAlchemy's compiled cache holds it (a multi-VALUES INSERT is built and
compiled afresh on every execution), with every value converted by its column's type."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine.interfaces import CacheStats

from app.extensions import db, insert_rows
from app.models import Transaction

MOMENT = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)


def _rows(source, target, user_id, amount="12.34", reference="TX-INSERTROWS"):
    common = dict(sender_account_id=source.id, receiver_account_id=target.id, amount=Decimal(amount),
                  description="rows", reference=reference, initiated_by_user_id=user_id, timestamp=MOMENT)
    return [dict(account_id=source.id, type="debit", **common), dict(account_id=target.id, type="credit", **common)]


@contextmanager
def inserts_cache_status() -> Iterator[list[CacheStats]]:
    """Inside an app context: the compiled-cache status of each INSERT sent meanwhile."""
    seen: list[CacheStats] = []

    def record(_conn, _cursor, statement, _parameters, context, _executemany):
        if statement.lstrip().upper().startswith("INSERT"):
            seen.append(context.cache_hit)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def test_rows_are_written_in_order_with_their_types_converted(app, customer, make_account):
    """Are both rows written in the order given, the amount stored as cents through the cents
    type and read back as the same Decimal, the timestamp as the same UTC moment?"""
    source, target = make_account(customer, "50.00"), make_account(customer, "0.00")
    with app.app_context():
        db.session.execute(*insert_rows(Transaction.__table__, _rows(source, target, customer.id)))
        db.session.commit()
        written = list(db.session.scalars(select(Transaction).where(Transaction.reference == "TX-INSERTROWS")
                                          .order_by(Transaction.id)))
        raw = db.session.execute(text("SELECT amount FROM \"transaction\" WHERE reference = 'TX-INSERTROWS'")).scalars().all()
    assert [(row.type, row.account_id) for row in written] == [("debit", source.id), ("credit", target.id)]
    assert all(row.amount == Decimal("12.34") and row.timestamp == MOMENT for row in written)
    assert raw == [1234, 1234]


def test_the_statement_comes_from_the_compiled_cache_the_second_time(app, customer, make_account):
    """Is the second execution, with other values, served from SQLAlchemy's compiled cache, for
    one row and for several? (A multi-VALUES INSERT never is.)"""
    source, target = make_account(customer, "50.00"), make_account(customer, "0.00")
    with app.app_context(), inserts_cache_status() as seen:
        for amount in ("1.00", "2.00"):
            rows = _rows(source, target, customer.id, amount, reference=f"TX-PAIR-{amount}")
            db.session.execute(*insert_rows(Transaction.__table__, rows))
            one = _rows(source, target, customer.id, amount, reference=f"TX-ONE-{amount}")[:1]
            db.session.execute(*insert_rows(Transaction.__table__, one))
        db.session.rollback()
    assert seen[2:] == [CacheStats.CACHE_HIT, CacheStats.CACHE_HIT]


def test_a_multi_values_insert_is_not_cached(app, customer, make_account):
    """The reason for insert_rows: is `insert().values([row, row])` really compiled afresh each
    time? (If SQLAlchemy starts caching it, insert_rows may go back to the plain form.)"""
    source, target = make_account(customer, "50.00"), make_account(customer, "0.00")
    with app.app_context(), inserts_cache_status() as seen:
        for amount in ("1.00", "2.00"):
            rows = _rows(source, target, customer.id, amount, reference=f"TX-MULTI-{amount}")
            db.session.execute(Transaction.__table__.insert().values(rows))
        db.session.rollback()
    assert seen == [CacheStats.NO_CACHE_KEY, CacheStats.NO_CACHE_KEY]


@pytest.mark.parametrize("rows", [[], [{"type": "debit"}, {"kind": "credit"}], [{"a": 1, "b": 2}, {"b": 2, "a": 1}]])
def test_no_rows_or_rows_naming_other_columns_are_refused(app, rows):
    """Is an empty row list, or rows that don't name the same columns in the same order, a
    ValueError before any SQL is built?"""
    with app.app_context(), pytest.raises(ValueError):
        insert_rows(Transaction.__table__, rows)
