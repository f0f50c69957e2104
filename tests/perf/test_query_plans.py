"""Performance regression guard, part 2: the pages' queries use indexes (PostgreSQL).

Each page is requested once while its statements are recorded; every recorded SELECT is then
EXPLAINed with the same parameters and `enable_seqscan = off`. With that setting PostgreSQL
still chooses a sequential scan (or walks a whole index to filter it) when no index can serve the
query, so such a node in the plan means a missing index (on a table this small the planner would
otherwise pick sequential scans whatever the indexes). Plans, not times: deterministic, seconds.
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta

import pytest
from psycopg import sql
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


def generic_plan_explain(connection, statement: str, parameters) -> str:
    """EXPLAIN of the generic plan of `statement` (pyformat placeholders, as the app sends it):
    what PostgreSQL runs once it settles on one plan for a prepared statement, whatever the
    values (the app's connections keep their prepared statements; app/extensions.py). The
    statement is prepared with $n placeholders and explained with `plan_cache_mode =
    force_generic_plan`; the values only fill the EXECUTE."""
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", statement)))
    numbered = statement
    for position, name in enumerate(names, start=1):
        numbered = numbered.replace(f"%({name})s", f"${position}")
    cursor = connection.cursor()
    cursor.execute(sql.SQL("PREPARE plan_check AS {}").format(sql.SQL(numbered.replace("%%", "%"))))
    cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
    values = sql.SQL(", ").join(sql.Literal(parameters[name]) for name in names)
    return sql.SQL("EXPLAIN (FORMAT JSON) EXECUTE plan_check ({})").format(values) if names else sql.SQL(
        "EXPLAIN (FORMAT JSON) EXECUTE plan_check")


def unindexed_reads(connection, statement: str, parameters, generic: bool = False) -> list[str]:
    """What in the plan of `statement` (seqscan disabled) reads a table without an index
    condition: a sequential scan, or an index walked from end to end only to filter its rows
    (an `Index Scan` with a Filter and no Index Cond, what a search no index serves gets when
    sequential scans are off) other than the newest-first walk of a page (under a Limit, which
    stops early; on tables this small the planner prefers it to a composite index)."""
    cursor = connection.cursor()
    cursor.execute("SET LOCAL enable_seqscan = off")
    if generic:
        cursor.execute(generic_plan_explain(connection, statement, parameters))
    else:
        cursor.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
    plan = cursor.fetchone()[0]
    if generic:
        cursor.execute("DEALLOCATE plan_check")
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
    just to filter it? Both the plan for the request's own values and the generic plan a
    prepared statement may settle on."""
    clients = {"customer": sign_in(HEAVY_EMAIL), "auditor": sign_in(AUDITOR_EMAIL), "admin": sign_in(ADMIN_EMAIL)}
    with app.app_context():
        number = db.session.scalar(select(Account.account_number).where(Account.id == 1))
    found = []
    for who, path in PAGES:
        url = path.format(account_number=number)
        with recorder.recording() as statements:
            assert clients[who].get(url).status_code == 200, url
        selects = [(text, params) for text, params in statements if text.lstrip().upper().startswith(("SELECT", "WITH"))]
        assert selects, url
        with app.app_context():
            raw = db.engine.raw_connection()
            try:
                for statement, params in selects:
                    for generic in (False, True):
                        reads = unindexed_reads(raw.driver_connection, statement, params, generic)
                        if reads:
                            kind = "generic plan" if generic else "plan"
                            found.append(f"{url} ({kind}): {'; '.join(reads)} in\n    {' '.join(statement.split())[:300]}")
                        raw.driver_connection.rollback()
            finally:
                raw.close()
    assert not found, "\n".join(found)


LEDGER_PAGES = [
    ("customer", "/banking/dashboard"),
    ("customer", "/banking/transactions"),
    ("customer", "/banking/transactions?page=4"),
    ("customer", f"/banking/transactions?{FILTERS}"),
    ("auditor", "/audit/transactions"),
    ("auditor", "/audit/transactions?before=300"),
    ("auditor", f"/audit/transactions?{FILTERS}"),
    ("auditor", "/audit/transactions?account_number={account_number}"),
]
JOIN_NODES = ("Nested Loop", "Hash Join", "Merge Join")


def _recorded_selects(client, recorder, url: str, keep) -> list[tuple[str, dict]]:
    """The SELECTs that `client` GETting `url` (status 200) sends and `keep(text)` accepts."""
    with recorder.recording() as statements:
        assert client.get(url).status_code == 200, url
    kept = [(text, params) for text, params in statements if text.lstrip().upper().startswith("SELECT") and keep(text)]
    assert kept, url
    return kept


def generic_plans(app, selects, settings: tuple[str, ...] = ()) -> list[dict]:
    """The root node of each statement's generic plan (JSON), with `settings` (SET LOCAL ...)
    applied first; every statement in its own transaction, rolled back."""
    plans = []
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            for statement, params in selects:
                cursor = raw.driver_connection.cursor()
                for setting in settings:
                    cursor.execute(f"SET LOCAL {setting}")
                cursor.execute(generic_plan_explain(raw.driver_connection, statement, params))
                plan = cursor.fetchone()[0]
                cursor.execute("DEALLOCATE plan_check")
                plans.append((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])
                raw.driver_connection.rollback()
        finally:
            raw.close()
    return plans


def joins_under_a_limit(plan: dict) -> list[str]:
    """The join nodes of a plan that have a Limit above them: joins run over more rows than the
    page shows, and planned for as many as the generic plan guesses."""
    return [f"{node['Node Type']} ({node.get('Join Type', '')})" for node, under_limit in _nodes(plan)
            if under_limit and node["Node Type"] in JOIN_NODES and node.get("Join Type") != "Semi"
            and "Limit" not in {child["Node Type"] for child in node.get("Plans", [])}]


def test_ledger_pages_join_accounts_only_to_the_rows_they_show(app, sign_in, seeded, recorder):
    """Do the pages listing ledger entries pick their page's ids first, on the ledger alone, and
    only then join those rows to the accounts and owners shown beside them?

    A join under the page's LIMIT is planned, in the generic plan a prepared statement settles
    on, for a third of the ledger: on 1,000,000 rows PostgreSQL built Memoize hash tables sized
    for that at every page of /audit/transactions, 2.2 ms of the server's CPU for 26 rows
    (bench/results.md). A lateral's per-account LIMIT inside a join is fine: that join reads
    only the few accounts of one customer.
    """
    clients = {"customer": sign_in(HEAVY_EMAIL), "auditor": sign_in(AUDITOR_EMAIL)}
    with app.app_context():
        number = db.session.scalar(select(Account.account_number).where(Account.id == 1))
    found = []
    for who, path in LEDGER_PAGES:
        url = path.format(account_number=number)
        selects = _recorded_selects(clients[who], recorder, url, lambda text: " JOIN account" in text)
        for (statement, _params), plan in zip(selects, generic_plans(app, selects)):
            if joins := joins_under_a_limit(plan):
                found.append(f"{url}: {', '.join(joins)} under a Limit in\n    {' '.join(statement.split())[:300]}")
    assert not found, "\n".join(found)


def _ledger_walks(plan: dict) -> list[str]:
    """What in a filtered list's plan reads the ledger other than an index-only walk of an
    account's entries: a Sort fed straight by a ledger scan (entries read in another order,
    by date say, only to be put back in id order), or a scan of an account's entries that
    visits the table to test the filters."""
    found = []
    for node, _under_limit in _nodes(plan):
        children = node.get("Plans", [])
        if node["Node Type"] == "Sort":
            found += [f"Sort of a {child['Node Type']} using {child.get('Index Name')}" for child in children
                      if child["Node Type"].endswith("Scan") and child.get("Relation Name") == "transaction"]
        if (node["Node Type"] in ("Index Scan", "Bitmap Heap Scan") and node.get("Relation Name") == "transaction"
                and "account_id" in node.get("Index Cond", node.get("Recheck Cond", ""))):
            found.append(f"{node['Node Type']} using {node.get('Index Name')} (the table visited)")
    return found


def test_filtered_lists_walk_each_accounts_entries_newest_first(app, sign_in, seeded, recorder):
    """Are the customer's filtered pages read by walking each account's entries newest first,
    the filters tested inside the index, stopping at the page's last row, rather than reading
    every entry of the date range and sorting it (for a customer with 5,000 entries, 6.9 ms
    against 0.3 on SQLite; migrations/versions/0003_account_history_index.py)?

    Generic plans, as prepared statements run them, with sorting priced out (`enable_sort =
    off`): on these few rows a sort costs nothing and the planner may pick one, at 10,000 rows
    and more it picks the walk whenever an index allows it, which is what this checks.
    """
    client = sign_in(HEAVY_EMAIL)
    found = []
    for path in (f"/banking/transactions?{FILTERS}", f"/banking/transactions?{FILTERS}&page=2",
                 f"/banking/transactions?date_from={FILTERS.split('&')[0].split('=')[1]}"):
        selects = _recorded_selects(client, recorder, path, lambda text: "timestamp >=" in text)
        for plan in generic_plans(app, selects, ("enable_sort = off", "enable_seqscan = off")):
            found += [f"{path}: {walk}" for walk in _ledger_walks(plan)]
    assert not found, "\n".join(found)


def _page_reads_a_merge(plan: dict) -> bool:
    """Does a Limit (the page's OFFSET and LIMIT) read straight from a Merge Append?"""
    return any(node["Node Type"] == "Limit" and any(child["Node Type"] == "Merge Append" for child in node.get("Plans", []))
               for node, _under_limit in _nodes(plan))


def test_customer_pages_merge_each_accounts_walk_instead_of_sorting(app, sign_in, seeded, recorder):
    """Does the customer's transactions list step over the rows before its page in a merge of
    each account's newest-first walk (a Merge Append under the page's LIMIT and OFFSET), rather
    than sorting every account's entries up to the page first? For page 200 of 5,000 entries the
    sort took the server twice the time (bench/results.md).

    Generic plans with sorting priced out (`enable_sort = off`): a statement that can't be
    served without a sort still gets one, so the check fails only when the merge is impossible.
    """
    client = sign_in(HEAVY_EMAIL)
    missing = []
    for path in ("/banking/transactions", "/banking/transactions?page=4", f"/banking/transactions?{FILTERS}"):
        selects = _recorded_selects(client, recorder, path, lambda text: " JOIN account" in text)
        for (statement, _params), plan in zip(selects, generic_plans(app, selects, ("enable_sort = off",))):
            if not _page_reads_a_merge(plan):
                missing.append(f"{path}: no Merge Append under the page's Limit in\n    {' '.join(statement.split())[:300]}")
    assert not missing, "\n".join(missing)
