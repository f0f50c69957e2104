"""Performance regression guard, part 2: the pages' queries use indexes (PostgreSQL).

Each page is requested once while its statements are recorded; every recorded SELECT is then
EXPLAINed with the same parameters and `enable_seqscan = off`. With that setting PostgreSQL
still chooses a sequential scan (or walks a whole index to filter it) when no index can serve the
query, so such a node in the plan means a missing index (on a table this small the planner would
otherwise pick sequential scans whatever the indexes). Plans, not times: deterministic, seconds.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from app.extensions import db
from app.models import Account
from tests.perf.conftest import ADMIN_EMAIL, AUDITOR_EMAIL, HEAVY_EMAIL

pytestmark = pytest.mark.postgres

FILTERS = (f"date_from={(date.today() - timedelta(days=20)).isoformat()}&date_to={date.today().isoformat()}"
           "&type=debit&min_amount=0.01&max_amount=40.00")
PAGES = [
    ("customer", "/banking/dashboard"),
    ("customer", "/banking/transactions"),
    ("customer", "/banking/transactions?page=4"),
    ("customer", f"/banking/transactions?{FILTERS}"),
    ("customer", "/banking/transfer/external"),
    ("auditor", "/audit/transactions"),
    ("auditor", "/audit/transactions?before=300"),
    ("auditor", f"/audit/transactions?{FILTERS}"),
    ("auditor", "/audit/transactions?account_number={account_number}"),
    ("auditor", "/audit/logs"),
    ("auditor", "/audit/logs?action=TRANSFER_CREATED"),
    ("auditor", "/audit/logs?user_id=3"),
    ("admin", "/banking/admin/users"),
    ("admin", "/banking/admin/accounts"),
]


def _nodes(plan: dict, under_limit: bool = False):
    """Every node of a JSON plan, with whether a Limit node is above it."""
    yield plan, under_limit
    for child in plan.get("Plans", []):
        yield from _nodes(child, under_limit or plan["Node Type"] == "Limit")


def unindexed_reads(connection, statement: str, parameters) -> list[str]:
    """What in the plan of `statement` (seqscan disabled) reads a table without an index
    condition: a sequential scan, or an index walked from end to end only to filter its rows
    (an `Index Scan` with a Filter and no Index Cond, what a search no index serves gets when
    sequential scans are off) other than the newest-first walk of a page (under a Limit, which
    stops early; on tables this small the planner prefers it to a composite index)."""
    cursor = connection.cursor()
    cursor.execute("SET LOCAL enable_seqscan = off")
    cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
    plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found = []
    for node, under_limit in _nodes(plan[0]["Plan"]):
        if node["Node Type"] == "Seq Scan":
            found.append(f"Seq Scan on {node.get('Relation Name', '?')}")
        elif (node["Node Type"] in ("Index Scan", "Index Only Scan") and "Filter" in node
              and "Index Cond" not in node and not under_limit):
            found.append(f"{node['Node Type']} of all {node.get('Index Name')} filtering {node['Filter']}")
    return found


def test_every_page_query_is_served_by_an_index(app, sign_in, seeded, recorder):
    """Do the dashboard, the transactions list (every page, every filter), the auditor's views
    and the admin lists read through indexes only: no sequential scan, no index read end to end
    just to filter it?"""
    clients = {"customer": sign_in(HEAVY_EMAIL), "auditor": sign_in(AUDITOR_EMAIL), "admin": sign_in(ADMIN_EMAIL)}
    with app.app_context():
        number = db.session.scalar(select(Account.account_number).where(Account.id == 1))
    found = []
    for who, path in PAGES:
        url = path.format(account_number=number)
        with recorder.recording() as statements:
            assert clients[who].get(url).status_code == 200, url
        selects = [(sql, params) for sql, params in statements if sql.lstrip().upper().startswith(("SELECT", "WITH"))]
        assert selects, url
        with app.app_context():
            raw = db.engine.raw_connection()
            try:
                for sql, params in selects:
                    reads = unindexed_reads(raw.driver_connection, sql, params)
                    if reads:
                        found.append(f"{url}: {'; '.join(reads)} in\n    {' '.join(sql.split())[:300]}")
                raw.driver_connection.rollback()
            finally:
                raw.close()
    assert not found, "\n".join(found)
