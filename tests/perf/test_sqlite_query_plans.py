"""Performance regression guard, part 3: the customer's transactions list on SQLite.

Each page request is recorded, and its page statement explained with SQLite's own EXPLAIN QUERY
PLAN and the request's values. Plans, not times: deterministic, seconds. (PostgreSQL's plans are
checked in test_query_plans.py.)
"""

from __future__ import annotations

import pytest

from app.extensions import db
from tests.perf.conftest import HEAVY_EMAIL
from tests.perf.test_query_plans import FILTERS

ACCOUNT_WALK = "SEARCH transaction USING COVERING INDEX ix_transaction_account_id_id_timestamp_type_amount (account_id=?)"


def _inside_subqueries(plan: list[tuple]) -> list[str]:
    """The details of every plan node under a materialized subquery or a co-routine (where the
    page's ids are found), from EXPLAIN QUERY PLAN's (id, parent, _, detail) rows."""
    children: dict[int, list[tuple]] = {}
    for row in plan:
        children.setdefault(row[1], []).append(row)

    def below(node_id: int) -> list[str]:
        return [detail for child in children.get(node_id, []) for detail in [child[3], *below(child[0])]]

    return [detail for row in plan if row[3].startswith(("MATERIALIZE", "CO-ROUTINE")) for detail in below(row[0])]


def test_customer_pages_merge_each_accounts_walk_on_sqlite(app, sign_in, seeded, recorder, backend_name):
    """Does the customer's transactions list find its page's ids by merging each account's
    newest-first walk of its index (a compound SELECT's merge, the ORDER BY served by the index
    in every part), rather than sorting the accounts' entries up to the page? For page 200 of
    5,000 entries the sort took twice the time, and page 1 ten times (app/banking/services.py,
    _customer_page_statement)."""
    if backend_name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL's plan is checked in test_query_plans.py")
    client = sign_in(HEAVY_EMAIL)
    found = []
    for path in ("/banking/transactions", "/banking/transactions?page=4", f"/banking/transactions?{FILTERS}"):
        with recorder.recording() as statements:
            assert client.get(path).status_code == 200, path
        pages = [(text, params) for text, params in statements if " JOIN account" in text]
        assert pages, path
        with app.app_context():
            raw = db.engine.raw_connection()
            try:
                for text, params in pages:
                    inside = _inside_subqueries(raw.driver_connection.execute("EXPLAIN QUERY PLAN " + text, params).fetchall())
                    walks = [detail for detail in inside if detail.startswith(("SEARCH", "SCAN"))]
                    if "MERGE (UNION ALL)" not in inside or not walks or set(walks) != {ACCOUNT_WALK}:
                        found.append(f"{path}: no merge of the accounts' index walks: {inside}")
                    found += [f"{path}: {detail}" for detail in inside if detail.startswith("USE TEMP B-TREE")]
            finally:
                raw.close()
    assert not found, "\n".join(found)
