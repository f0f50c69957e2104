"""Pagination shared by every list: page numbers for bounded lists, keyset cursors for the
unbounded ones (audit log, all transactions). `per_page` is never taken from the URL."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import request
from sqlalchemy import Select, bindparam, case, func, literal_column, select

from .extensions import db
from .routing import MAX_ID

PAGE_SIZE = 25


def page_url(**changes: object) -> str:
    """A link to this same page with the current query string, `changes` applied (a None value
    removes that argument): "/path?a=1&page=2". Used by the pagers.

    Built from the request's own path and urlencode, not url_for: url_for would read query keys
    such as `_external`, `_scheme` or `endpoint` as its own arguments, so a crafted query string
    could change where the link points or raise (a 500). OWASP ASVS 4.0.3 5.1.5.
    """
    pairs = [(key, value) for key, value in request.args.items(multi=True) if key not in changes]
    pairs += [(key, value) for key, value in changes.items() if value is not None]
    query = urlencode(pairs)
    return request.script_root + request.path + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Page:
    """One page of a list: `items`, the page number (from 1), and whether more pages exist."""

    items: list
    number: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.number > 1


@dataclass(frozen=True)
class KeysetPage:
    """One page of a newest-first list cut at `before` (an id, exclusive).

    next_before: the cursor of the older page (None on the last page). prev_before: the cursor
    of the newer page, `0` meaning "the first page" and None meaning there is no newer page.
    """

    items: list
    next_before: int | None
    prev_before: int | None


def fixed_limit(rows: int):
    """A LIMIT of `rows` (a constant of the code, never a request's value) written into the SQL
    instead of bound: PostgreSQL can't estimate a generic plan with an unknown LIMIT, so it would
    plan such a prepared statement afresh on every execution (about a millisecond of database
    CPU for an entry list) instead of settling on its generic plan. Written at compile time
    (the `int` guarantees digits only), so the cached compiled statement is used as it is, with
    no rewriting of its SQL at each execution as a `literal_execute` parameter would need."""
    return literal_column(str(int(rows)))


def page_number(argument: str = "page") -> int:
    """`?page=N` as an int (default 1); a malformed value gives 0, which lists nothing (DESIGN §8)."""
    raw = request.args.get(argument, "1")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 9 else 0


def cursor(argument: str = "before") -> int | None:
    """`?before=<id>` as an int, None when absent; a malformed value gives 0, which lists nothing.
    A number past the largest id means "older than everything", i.e. the first page (None)."""
    raw = request.args.get(argument)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        return 0
    return int(raw) if int(raw) <= MAX_ID else None


def numbered_page(stmt: Select, number: int, size: int = PAGE_SIZE) -> Page:
    """Run `stmt` (already ordered newest first) for page `number`; below 1 gives an empty page."""
    if number < 1:
        return Page([], number, False)
    rows = db.session.scalars(stmt.offset((number - 1) * size).limit(size + 1)).all()
    return Page(rows[:size], number, len(rows) > size)


def keyset_statements(stmt: Select, id_column, size: int, with_cursor: bool,
                      around: Callable[[Select], Select] | None = None) -> tuple[Select, Select | None]:
    """The statements of a newest-first keyset page of `stmt` (filtered, not yet ordered):
    (the page, the newer page's cursor alone) when `with_cursor`, else (the first page, None).

    With a cursor the page statement carries, as its last column, the cursor of the page just
    newer than it (newer_cursor_column), so one round trip answers both; the second statement
    is that column alone, run only when the page comes back empty. around: what turns the
    ordered, limited page of `stmt` into the statement that is run (a join to the rows shown,
    say); it must keep the page's order. Bound parameters: `before` (the cursor, exclusive).
    Built once by callers whose `stmt` is a constant of theirs, they are run with
    run_keyset_page, and SQLAlchemy computes their cache keys once.
    """
    page_stmt = stmt.order_by(id_column.desc()).limit(fixed_limit(size + 1))
    if with_cursor:
        page_stmt = page_stmt.where(id_column < bindparam("before", type_=id_column.type))
    if around is not None:
        page_stmt = around(page_stmt)
    if not with_cursor:
        return page_stmt, None
    newer = newer_cursor_column(stmt, id_column, size)
    return page_stmt.add_columns(newer), select(newer)


def newer_cursor_column(stmt: Select, id_column, size: int):
    """A scalar subquery: the `before` of the page just newer than the page cut at `before`,
    as KeysetPage.prev_before has it — the id of the (size + 1)th row of `stmt` from `before`
    upwards when there are that many, 0 (the first page) when there are fewer, NULL when none.

    The rows above the page are those with id >= before: nothing between the page's newest id
    and `before` matches `stmt`, so this is the same set as the ids above the page's first row,
    known before the page is read. Uncorrelated, so both databases evaluate it once per
    statement (an InitPlan on PostgreSQL): an index range of at most size + 1 ids.
    """
    above = (stmt.with_only_columns(id_column).where(id_column >= bindparam("before", type_=id_column.type))
             .order_by(id_column.asc()).limit(fixed_limit(size + 1)).subquery("newer"))
    newer_id, seen, zero = above.c[0], func.count(above.c[0]), literal_column("0")
    return select(case((seen > literal_column(str(int(size))), func.max(newer_id)), (seen > zero, zero))).scalar_subquery()


def run_keyset_page(statements: tuple[Select, Select | None], before: int | None, size: int,
                    row: Callable[[Any], Any] | None = None, params: dict[str, Any] | None = None) -> KeysetPage:
    """Run keyset_statements(..., with_cursor=before is not None) for the rows with id < `before`.

    row: None when the statements select one ORM entity (the items are those objects), else what
    turns each result row (a tuple of the page's own columns, the cursor column left out) into
    an item with an `id`. params: the values of `stmt`'s own bound parameters. One statement:
    the page, with the newer page's cursor past the first page; a second one only when a page
    past the first is empty, for its link back.
    """
    page_stmt, newer_stmt = statements
    params = dict(params or {})
    with_cursor = before is not None and newer_stmt is not None
    if with_cursor:
        params["before"] = before
    # ORM entities through the session; Core rows on the session's connection, without the ORM
    # execution layer. `.all()` reads with one fetchall; iterating would fetch row by row.
    read = db.session.execute if row is None else db.session.connection().execute
    found = read(page_stmt, params).all()
    prev_before = None
    if with_cursor:  # the cursor column comes last; an empty page asks for it alone
        prev_before = found[0][-1] if found else db.session.connection().scalar(newer_stmt, params)
        found = [values[:-1] for values in found]
    rows = [values[0] for values in found] if row is None else [row(values) for values in found]
    items = rows[:size]
    next_before = items[-1].id if len(rows) > size else None
    return KeysetPage(items, next_before, prev_before)


def keyset_page(stmt: Select, id_column, before: int | None, size: int,
                row: Callable[[Any], Any] | None = None) -> KeysetPage:
    """Run `stmt` (filtered, not yet ordered) as a newest-first page of rows with id < `before`
    (keyset_statements and run_keyset_page in one call, for a statement built per request).

    id_column: the integer primary key the cursor walks. row: as for run_keyset_page.
    """
    return run_keyset_page(keyset_statements(stmt, id_column, size, before is not None), before, size, row)
