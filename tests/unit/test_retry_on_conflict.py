"""retry_on_conflict logs one WARNING per retry, naming the SQLSTATE or "database is locked", so
load runs (tests/e2e/test_multiprocess.py) can count retries in gunicorn's error log."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from app.extensions import TryAgainError, retry_on_conflict


class _Deadlock(Exception):
    """Stands in for psycopg's DeadlockDetected: only its `sqlstate` matters here."""

    sqlstate = "40P01"


def _failing(errors: list[Exception], result: str = "done"):
    """An operation that raises each of `errors` in turn, then returns `result`."""
    pending = list(errors)

    def operation() -> str:
        if pending:
            raise OperationalError("UPDATE account ...", {}, pending.pop(0))
        return result

    return operation


def _retry_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.levelno == logging.WARNING and record.name == "app.extensions"]


def test_each_retry_is_logged_with_its_cause_and_attempt(caplog):
    """Does a call that hits a PostgreSQL deadlock, then SQLite's lock, then succeeds log two
    WARNING lines naming 40P01 / "database is locked" and the attempt about to start?"""
    caplog.set_level(logging.WARNING, logger="app.extensions")
    operation = _failing([_Deadlock("deadlock detected"), sqlite3.OperationalError("database is locked")])

    assert retry_on_conflict(operation, attempts=3) == "done"

    assert _retry_lines(caplog) == ["transfer retried after 40P01 (attempt 2)",
                                    "transfer retried after database is locked (attempt 3)"]


def test_the_last_failure_is_not_a_retry(caplog):
    """When every try conflicts, are only the retries logged before TryAgainError is raised?"""
    caplog.set_level(logging.WARNING, logger="app.extensions")
    operation = _failing([_Deadlock("deadlock detected")] * 2)

    with pytest.raises(TryAgainError):
        retry_on_conflict(operation, attempts=2)

    assert _retry_lines(caplog) == ["transfer retried after 40P01 (attempt 2)"]


def test_other_database_errors_are_neither_retried_nor_logged(caplog):
    """Is an error that is not a transient conflict re-raised at once, without a retry line?"""
    caplog.set_level(logging.WARNING, logger="app.extensions")
    operation = _failing([sqlite3.OperationalError("no such table: account")])

    with pytest.raises(OperationalError):
        retry_on_conflict(operation, attempts=3)

    assert _retry_lines(caplog) == []
