"""Keyset pages and their links to the newer page (app/pagination.py), against a real database.

The newer page's cursor travels with the page, as a scalar subquery over the ids at or above
`before` (newer_cursor_column). These tests compare it, for every cursor, with the definition it
replaces: the ids above the page's own newest row, and the ids at or above `before` when the page
is empty.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy import event, select

from app.extensions import db
from app.models import AuditLog
from app.pagination import keyset_page
from app.security import log_standalone_event

SIZE = 5


def _reference(matching: list[int], before: int | None, size: int = SIZE) -> tuple[list[int], int | None, int | None]:
    """(the page's ids, next_before, prev_before) by the definition, from the matching ids."""
    older = sorted((i for i in matching if before is None or i < before), reverse=True)
    page = older[:size]
    next_before = page[-1] if len(older) > size else None
    if before is None:
        return page, next_before, None
    top = page[0] if page else before - 1
    newer = sorted(i for i in matching if i > top)
    prev_before = None if not newer else (newer[size] if len(newer) > size else 0)
    return page, next_before, prev_before


@pytest.fixture
def interleaved(app) -> list[int]:
    """23 LOGIN_FAILURE rows among LOGOUT rows (every third row a LOGOUT), so cursors fall on
    rows the filter leaves out as well as on matching ones; returns the matching ids."""
    with app.app_context():
        for n in range(35):
            log_standalone_event("LOGOUT" if n % 3 == 2 else "LOGIN_FAILURE", {"n": n})
        return list(db.session.scalars(select(AuditLog.id).where(AuditLog.action == "LOGIN_FAILURE")
                                        .order_by(AuditLog.id)))


@pytest.fixture
def statements(app):
    """The statements the app's engine sends (SQL text), BEGINs left out."""
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        if statement.strip().upper() != "BEGIN":
            sent.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
    yield sent
    with app.app_context():
        event.remove(db.engine, "before_cursor_execute", record)


def _every_cursor(matching: list[int]) -> list[int | None]:
    return [None, *range(1, max(matching) + 3)]


def test_orm_pages_and_their_links_match_the_definition_for_every_cursor(app, interleaved):
    """For every cursor (on a matching row, on a row the filter leaves out, past the oldest
    and past the newest row), are the page, its older cursor and its newer cursor those of the
    definition, including the newer page being the first (0) or absent (None)?"""
    stmt = select(AuditLog).where(AuditLog.action == "LOGIN_FAILURE")
    with app.app_context():
        for before in _every_cursor(interleaved):
            page = keyset_page(stmt, AuditLog.id, before, SIZE)
            expected = _reference(interleaved, before)
            assert ([row.id for row in page.items], page.next_before, page.prev_before) == expected, before
            db.session.rollback()


def test_core_row_pages_get_their_own_columns_only(app, interleaved):
    """Does a page of plain rows hand `row` the page's own columns, the cursor column left out,
    and give the same links as the definition?"""
    stmt = select(AuditLog.id, AuditLog.action).where(AuditLog.action == "LOGIN_FAILURE")
    seen: list[tuple] = []

    def row(values):
        seen.append(tuple(values))
        return SimpleNamespace(id=values[0], action=values[1])

    with app.app_context():
        for before in _every_cursor(interleaved):
            seen.clear()
            page = keyset_page(stmt, AuditLog.id, before, SIZE, row=row)
            expected = _reference(interleaved, before)
            assert ([item.id for item in page.items], page.next_before, page.prev_before) == expected, before
            assert all(len(values) == 2 and values[1] == "LOGIN_FAILURE" for values in seen), seen
            db.session.rollback()


def test_a_page_past_the_first_is_one_statement_and_an_empty_one_two(app, interleaved, statements):
    """Does a page with rows carry its newer page's cursor in the same statement (one round
    trip), and does only an empty page past the end ask for it separately?"""
    stmt = select(AuditLog).where(AuditLog.action == "LOGIN_FAILURE")
    with app.app_context():
        statements.clear()
        page = keyset_page(stmt, AuditLog.id, interleaved[12], SIZE)
        assert page.items and page.prev_before is not None
        assert len(statements) == 1, statements

        statements.clear()
        empty = keyset_page(stmt, AuditLog.id, interleaved[0], SIZE)
        assert empty.items == [] and empty.prev_before is not None
        assert len(statements) == 2, statements
