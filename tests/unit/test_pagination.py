"""The fixed LIMIT of the keyset and dashboard statements (app/pagination.py: fixed_limit)."""

from __future__ import annotations

import pytest
from sqlalchemy import column, select, table
from sqlalchemy.dialects import postgresql, sqlite

from app.pagination import fixed_limit

ENTRIES = table("transaction", column("id"))


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"])
def test_the_limit_is_written_into_the_compiled_sql(dialect):
    """Is the LIMIT part of the SQL itself, neither a bound parameter (PostgreSQL would re-plan
    a prepared statement with an unknown LIMIT on every execution) nor a `literal_execute`
    parameter (whose SQL SQLAlchemy rewrites at every execution of the cached statement)?"""
    compiled = select(ENTRIES.c.id).order_by(ENTRIES.c.id.desc()).limit(fixed_limit(26)).compile(dialect=dialect)
    sql = " ".join(str(compiled).split())
    assert " LIMIT 26" in sql and "POSTCOMPILE" not in sql, sql
    # SQLite's compiler adds `OFFSET ?` (0) to every LIMIT; no parameter carries the limit.
    assert 26 not in compiled.params.values() and set(compiled.params.values()) <= {0}


@pytest.mark.parametrize("rows", ["26; DROP TABLE account", "26 OR 1=1", "", None, "2.5"])
def test_only_a_whole_number_can_become_the_limit(rows):
    """Is anything that is not a whole number refused, so nothing but digits reaches the SQL?"""
    with pytest.raises((TypeError, ValueError)):
        fixed_limit(rows)


def test_a_whole_number_given_as_text_is_written_as_its_digits():
    compiled = select(ENTRIES.c.id).limit(fixed_limit(" 7 ")).compile(dialect=sqlite.dialect())
    assert " LIMIT 7 " in " ".join(str(compiled).split()) + " "
