"""Fixtures of the performance regression guard: a small database seeded by the benchmark's own
seeder (bench/seed.py), so every list has more rows than a page and every customer page has
counterparties, and a recorder of the SQL statements one request sends."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine.interfaces import CacheStats

from app.extensions import db
from bench.seed import ADMIN_EMAIL, AUDITOR_EMAIL, BENCH_PASSWORD, HEAVY_EMAIL, SeedSpec, seed

# 20 customers, 40 accounts, 400 transfers; the heavy customer has 5 accounts and 105 entries
# (5 pages of 25): enough for every list to be longer than a page, small enough to seed in well
# under a second on either backend.
SMALL_SPEC = SeedSpec(customers=20, accounts=40, transfers=400, heavy_rows=105, days=30)


@dataclass
class Recorder:
    """The statements (SQL text and parameters) sent while `recording`, BEGINs left out (SQLite
    sends them as statements, PostgreSQL's driver as part of the first query)."""

    statements: list[tuple[str, object]] = field(default_factory=list)
    # Statements SQLAlchemy compiled for this execution instead of taking them from its
    # compiled cache (a multi-VALUES INSERT, say, is never cached): SQL text only.
    compiled_afresh: list[str] = field(default_factory=list)
    active: bool = False

    def __call__(self, _conn, _cursor, statement, parameters, context, _executemany) -> None:
        if self.active and not statement.lstrip().upper().startswith("BEGIN"):
            self.statements.append((statement, parameters))
            if context is not None and context.compiled is not None and context.cache_hit is not CacheStats.CACHE_HIT:
                self.compiled_afresh.append(statement)

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, object]]]:
        self.statements.clear()
        self.compiled_afresh.clear()
        self.active = True
        try:
            yield self.statements
        finally:
            self.active = False


@pytest.fixture
def seeded(app: Flask) -> dict:
    """The app's database seeded with SMALL_SPEC; returns the seeder's report."""
    return seed(app.config["SQLALCHEMY_DATABASE_URI"], SMALL_SPEC, progress=False, app=app)


@pytest.fixture
def recorder(app: Flask) -> Recorder:
    """Records the statements the app's engine sends (see Recorder)."""
    recorder = Recorder()
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", recorder)
    return recorder


@pytest.fixture
def sign_in(app: Flask):
    """`sign_in(email, password=BENCH_PASSWORD)`: a new test client signed in as `email`."""

    def login(email: str, password: str = BENCH_PASSWORD):
        client = app.test_client()
        answer = client.post("/auth/login", data={"email": email, "password": password})
        assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
        return client

    return login


__all__ = ["ADMIN_EMAIL", "AUDITOR_EMAIL", "HEAVY_EMAIL", "SMALL_SPEC"]
