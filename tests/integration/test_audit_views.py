"""The auditor's pages: /audit/logs, /audit/logs/verify, /audit/transactions (DESIGN.md §4, §6, §8;
issue 3 item 3)."""

from __future__ import annotations

import html
import itertools
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select, text

from app.audit import services as audit_services
from app.extensions import db
from app.models import AuditChainHead, AuditLog, Transaction
from tests.databases import drop_audit_triggers

LOGS = "/audit/logs"
VERIFY = "/audit/logs/verify"
TRANSACTIONS = "/audit/transactions"
START = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
_refs = itertools.count(1)


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _seed_events(app, monkeypatch, entries) -> None:
    """Append audit rows through the audit service, so the chain stays intact. `entries`:
    (action, user_id, details, timestamp or None for now)."""
    with app.app_context():
        for action, user_id, details, moment in entries:
            with monkeypatch.context() as patch:
                if moment is not None:
                    patch.setattr(audit_services, "utcnow", lambda moment=moment: moment)
                audit_services.queue_event(db.session, action, details, user_id, "192.0.2.7")
                db.session.commit()


def _seed_many(app, count: int, action: str = "LOGIN_FAILURE") -> None:
    """`count` rows of `action`, details {"n": 0 .. count-1} in order of writing."""
    with app.app_context():
        for n in range(count):
            audit_services.queue_event(db.session, action, {"n": n}, None, "192.0.2.7")
        db.session.commit()


def _audit_rows(app) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).order_by(AuditLog.id)))
        db.session.expunge_all()
        return rows


def _table(response) -> list[list[str]]:
    """The data rows of the page's table as lists of cell texts (tags stripped, unescaped);
    [] when the page has no table or only the 'nothing found' row."""
    body = response.get_data(as_text=True)
    if "<tbody>" not in body:
        return []
    tbody = body[body.index("<tbody>"):body.index("</tbody>")]
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", tbody, re.S) if "colspan" not in row]


def _ids(response) -> list[int]:
    return [int(cells[0]) for cells in _table(response)]


def _link(response, rel: str) -> str | None:
    match = re.search(rf'rel="{rel}" href="([^"]+)"', response.get_data(as_text=True))
    return html.unescape(match.group(1)) if match else None


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _login(client, auth, user) -> None:
    assert auth.login(user.email).status_code == 302


@pytest.fixture(params=["auditor", "admin"])
def staff(request, client, auth, make_user):
    """An auditor or an admin signed in on `client` (each test runs for both)."""
    user = make_user(request.param)
    _login(client, auth, user)
    return user


def _add_entries(app, account, entries, *, counterparty=None) -> None:
    """Write ledger rows straight to the database (set-up only). `entries`: (timestamp, type,
    amount, description); a debit needs `counterparty` as its receiver. Each row is initiated by
    the paying account's owner, as a customer's own transfer is."""
    with app.app_context():
        for moment, entry_type, amount, description in entries:
            other = counterparty.id if counterparty else None
            db.session.add(Transaction(
                account_id=account.id, type=entry_type, amount=Decimal(amount), description=description,
                sender_account_id=account.id if entry_type == "debit" else other,
                receiver_account_id=other if entry_type == "debit" else account.id,
                reference=f"TX-AUDIT{next(_refs):08d}", timestamp=moment,
                initiated_by_user_id=counterparty.owner_id if counterparty and entry_type == "credit" else account.owner_id,
            ))
        db.session.commit()


def _descriptions(response) -> list[str]:
    # Columns: date, account, owner, counterparty, type, amount, description, reference.
    return [cells[6] for cells in _table(response)]


# ---------------------------------------------------------------------------------------------
# /audit/logs: listing and pagination
# ---------------------------------------------------------------------------------------------


def test_staff_see_the_log_newest_first(client, app, monkeypatch, staff):
    """Do auditors and admins see the audit log newest first, with id, UTC time, user id, action,
    IP and details, topped by the AUDIT_VIEWED row of this very visit?"""
    _seed_events(app, monkeypatch, [("LOGOUT", None, {"marker": "oldest"}, START),
                                    ("LOGIN_FAILURE", None, {"marker": "newer"}, START + timedelta(hours=1))])

    response = client.get(LOGS)

    assert response.status_code == 200
    rows = _table(response)
    ids = [int(cells[0]) for cells in rows]
    assert ids == sorted(ids, reverse=True) and len(ids) == len(_audit_rows(app))
    assert rows[0][2:4] == [str(staff.id), "AUDIT_VIEWED"]
    oldest = next(cells for cells in rows if "oldest" in cells[5])
    assert oldest[1:] == ["2024-03-01 12:00:00", "—", "LOGOUT", "192.0.2.7", '{"marker":"oldest"}']


def test_log_pages_hold_50_rows_and_links_walk_them_without_overlap(client, app, monkeypatch, staff):
    """Are there 50 rows a page, with rel="next" leading to the next 50 older rows (no overlap, no
    gap, filters kept), no rel="next" on the last page, and rel="prev" leading back?"""
    _seed_many(app, 120)
    expected = [row.id for row in reversed(_audit_rows(app)) if row.action == "LOGIN_FAILURE"]

    first = client.get(LOGS + "?action=LOGIN_FAILURE")
    second = client.get(_link(first, "next"))
    third = client.get(_link(second, "next"))

    assert _ids(first) == expected[:50]
    assert _ids(second) == expected[50:100]
    assert _ids(third) == expected[100:]
    assert _query(_link(first, "next")) == {"action": ["LOGIN_FAILURE"], "before": [str(expected[49])]}
    assert _link(first, "prev") is None and _link(third, "next") is None
    assert _ids(client.get(_link(third, "prev"))) == expected[50:100]
    back = _link(second, "prev")
    assert _query(back) == {"action": ["LOGIN_FAILURE"]}
    assert _ids(client.get(back)) == expected[:50]


def test_cursor_past_the_oldest_row_is_an_empty_page(client, app, monkeypatch, staff):
    """Is `?before=1` (nothing older) an empty list with status 200, not an error?"""
    response = client.get(LOGS + "?before=1")

    assert response.status_code == 200
    assert _table(response) == [] and "No audit events." in response.get_data(as_text=True)


# ---------------------------------------------------------------------------------------------
# /audit/logs: filters
# ---------------------------------------------------------------------------------------------


def test_action_filter_is_an_exact_match(client, app, monkeypatch, staff):
    """Does `action` select exactly that action, and not others sharing a part of its name?"""
    _seed_events(app, monkeypatch, [("LOGIN_FAILURE", None, {}, None), ("MFA_FAILURE", None, {}, None),
                                    ("LOGIN_SUCCESS", None, {}, None), ("LOGIN_FAILURE", None, {}, None)])

    rows = _table(client.get(LOGS + "?action=LOGIN_FAILURE"))

    assert [cells[3] for cells in rows] == ["LOGIN_FAILURE", "LOGIN_FAILURE"]


def test_user_id_filter_selects_that_users_rows(client, app, monkeypatch, staff, make_user):
    """Does `user_id` list only the rows whose acting user is that id?"""
    alice, bob = make_user(), make_user()
    _seed_events(app, monkeypatch, [("LOGOUT", alice.id, {"who": "alice"}, None),
                                    ("LOGOUT", bob.id, {"who": "bob"}, None),
                                    ("LOGIN_FAILURE", None, {"who": "nobody"}, None),
                                    ("PROFILE_UPDATED", alice.id, {"who": "alice"}, None)])

    rows = _table(client.get(LOGS, query_string={"user_id": str(alice.id)}))

    assert [(cells[2], cells[3]) for cells in rows] == [(str(alice.id), "PROFILE_UPDATED"), (str(alice.id), "LOGOUT"),
                                                        (str(alice.id), "REGISTER_SUCCESS")]


def test_date_filters_are_inclusive_utc_days(client, app, monkeypatch, staff):
    """Do date_from and date_to select whole UTC days, both inclusive, to the microsecond?"""
    day = datetime(2024, 3, 10, tzinfo=timezone.utc)
    _seed_events(app, monkeypatch, [
        ("LOGOUT", None, {"at": "day before"}, day - timedelta(microseconds=1)),
        ("LOGOUT", None, {"at": "first instant"}, day),
        ("LOGOUT", None, {"at": "last instant"}, day + timedelta(days=1, microseconds=-1)),
        ("LOGOUT", None, {"at": "day after"}, day + timedelta(days=1)),
    ])

    def marks(query: str) -> list[str]:
        return [json.loads(cells[5])["at"] for cells in _table(client.get(LOGS + query)) if cells[3] == "LOGOUT"]

    assert marks("?date_from=2024-03-10&date_to=2024-03-10") == ["last instant", "first instant"]
    assert marks("?date_from=2024-03-10") == ["day after", "last instant", "first instant"]
    assert marks("?date_to=2024-03-10") == ["last instant", "first instant", "day before"]


def test_filters_combine_and_paging_keeps_them(client, app, monkeypatch, staff, make_user):
    """Do action, user_id and dates apply together, and does the next-page link carry them all?"""
    alice = make_user()
    _seed_events(app, monkeypatch, [("LOGOUT", alice.id, {"n": n}, START + timedelta(minutes=n)) for n in range(55)]
                 + [("LOGOUT", None, {"n": "anonymous"}, START), ("LOGIN_FAILURE", alice.id, {}, START)])
    query = {"action": "LOGOUT", "user_id": str(alice.id), "date_from": "2024-03-01", "date_to": "2024-03-01"}

    first = client.get(LOGS, query_string=query)
    link = _link(first, "next")
    second = client.get(link)

    assert {key: values[0] for key, values in _query(link).items() if key != "before"} == query
    listed = _table(first) + _table(second)
    assert [json.loads(cells[5])["n"] for cells in listed] == list(range(54, -1, -1))


@pytest.mark.parametrize(("query", "message"), [
    ({"action": "NOT_AN_ACTION"}, "Not a valid choice"),
    ({"action": "login_failure"}, "Not a valid choice"),
    ({"action": "LOGIN"}, "Not a valid choice"),
    ({"user_id": "abc"}, "A user id is digits only, at most 18 of them."),
    ({"user_id": "-1"}, "A user id is digits only, at most 18 of them."),
    ({"user_id": "1.5"}, "A user id is digits only, at most 18 of them."),
    ({"user_id": "\uff11\uff12"}, "A user id is digits only, at most 18 of them."),
    ({"user_id": "1" * 30}, "A user id is digits only, at most 18 of them."),
    ({"date_from": "2024-13-01"}, "There is no such date; enter a real day as YYYY-MM-DD."),
    ({"date_to": "2024-02-30"}, "There is no such date; enter a real day as YYYY-MM-DD."),
    ({"date_from": "01/02/2024"}, "Enter the date as YYYY-MM-DD."),
    ({"date_to": "\uff12\uff10\uff12\uff14-01-01"}, "Enter the date as YYYY-MM-DD."),
    ({"date_from": "2024-03-02", "date_to": "2024-03-01"}, "The end date is before the start date"),
    ({"before": "abc"}, "The page link is not valid."),
    ({"before": "-5"}, "The page link is not valid."),
    ({"before": "0"}, "The page link is not valid."),
    ({"before": "9" * 30}, "The page link is not valid."),
])
def test_malformed_filter_or_cursor_is_a_400_with_a_message(client, app, monkeypatch, staff, query, message):
    """Is an unknown action, a non-numeric user id, a bad date or a bad cursor answered with 400 and
    a message on the page, listing nothing (never a 500)?"""
    _seed_events(app, monkeypatch, [("LOGOUT", None, {"marker": "must-not-be-listed"}, None)])

    response = client.get(LOGS, query_string=query)

    assert response.status_code == 400
    body = html.unescape(response.get_data(as_text=True))
    assert message in body
    assert _table(response) == [] and "must-not-be-listed" not in body


# ---------------------------------------------------------------------------------------------
# Reading is audited
# ---------------------------------------------------------------------------------------------


def test_viewing_the_log_writes_audit_viewed_with_the_filters(client, app, staff):
    """Does each visit to the log write AUDIT_VIEWED naming the acting user, the filters used and
    the cursor?"""
    client.get(LOGS + "?action=LOGOUT&user_id=7&date_from=2024-01-01&before=99")

    row = _audit_rows(app)[-1]
    assert (row.action, row.user_id) == ("AUDIT_VIEWED", staff.id)
    assert json.loads(row.details) == {"view": "logs", "before": 99,
                                       "filters": {"action": "LOGOUT", "user_id": "7", "date_from": "2024-01-01"}}


def test_a_refused_filter_is_still_audited_as_a_view(client, app, staff):
    """Does a visit with a refused filter still write AUDIT_VIEWED, naming the refused fields and
    what was sent (cut to 32 characters)?"""
    client.get(LOGS, query_string={"user_id": "x" * 100, "before": "abc", "action": "LOGOUT"})

    row = _audit_rows(app)[-1]
    assert (row.action, row.user_id) == ("AUDIT_VIEWED", staff.id)
    assert json.loads(row.details) == {"view": "logs", "outcome": "refused", "invalid": ["user_id", "before"],
                                       "submitted": {"user_id": "x" * 32, "before": "abc"}}


@pytest.mark.parametrize(("url", "view"), [(LOGS, "logs"), (VERIFY, "verify"), (TRANSACTIONS, "transactions")])
def test_every_audit_page_writes_one_audit_viewed_row(client, app, staff, url, view):
    """Does each of the three pages write exactly one AUDIT_VIEWED row per visit, with the acting
    user's id and the page's name?"""
    before = len(_audit_rows(app))

    assert client.get(url).status_code == 200
    client.get(url)

    new = _audit_rows(app)[before:]
    assert [(row.action, row.user_id, json.loads(row.details)["view"]) for row in new] == [
        ("AUDIT_VIEWED", staff.id, view)] * 2


# ---------------------------------------------------------------------------------------------
# /audit/logs/verify
# ---------------------------------------------------------------------------------------------


def test_verify_page_says_the_chain_holds_and_shows_the_head(client, app, monkeypatch, staff):
    """On an untouched log, does the verify page say the chain holds, with the rows checked and the
    current head as ID:HASH (this visit's own row included)?"""
    _seed_many(app, 5)

    response = client.get(VERIFY)

    body = response.get_data(as_text=True)
    rows = _audit_rows(app)
    with app.app_context():
        head = db.session.get(AuditChainHead, 1)
        head_text = f"{head.last_id}:{head.last_hash}"
    assert response.status_code == 200
    assert "The chain holds" in body and "The chain is broken" not in body
    assert re.search(rf"Rows checked</dt><dd[^>]*>{len(rows)}<", body)
    assert rows[-1].action == "AUDIT_VIEWED" and head_text == f"{rows[-1].id}:{rows[-1].hash}"
    assert head_text in body


def test_verify_page_names_the_first_edited_row(client, app, monkeypatch, staff):
    """With the triggers dropped and row 3 edited behind the app's back, does the verify page say
    the chain is broken and name row 3?"""
    _seed_many(app, 6)
    with app.app_context():
        drop_audit_triggers(db.session)
        db.session.execute(text("UPDATE audit_log SET details = :details WHERE id = 3"), {"details": '{"n":99}'})
        db.session.commit()

    response = client.get(VERIFY)

    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "The chain holds" not in body
    assert "The chain is broken at row 3." in body
    assert re.search(r"First broken row</dt><dd[^>]*>3<", body)


# ---------------------------------------------------------------------------------------------
# /audit/transactions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [LOGS, TRANSACTIONS])
def test_an_audit_page_is_shown_only_once_its_audit_viewed_row_commits(client, app, monkeypatch, staff, url,
                                                                        make_user, make_account):
    """When the AUDIT_VIEWED row can't be written, is the visit answered 500 with none of the
    log or the ledger in it, and nothing written? (/audit/transactions reads and renders its page
    before it writes the row: the answer must still wait for the commit.)"""
    owner = make_user(full_name="Carol Unseen")
    _add_entries(app, make_account(owner, "0.00"), [(START, "credit", "77.00", "never shown")])
    before = len(_audit_rows(app))

    def refuse(*_args, **_kwargs):
        raise RuntimeError("the audit log refused the row")

    monkeypatch.setattr(audit_services, "queue_event", refuse)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = client.get(url)

    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "never shown" not in body and "Carol Unseen" not in body and "TX-AUDIT" not in body
    assert "LOGIN_SUCCESS" not in body
    assert len(_audit_rows(app)) == before


@pytest.fixture
def two_customers(app, make_user, make_account):
    """Two customers with one empty account each: (alice, alice's account, bob, bob's account)."""
    alice, bob = make_user(full_name="Alice Owner"), make_user(full_name="Bob Owner")
    return alice, make_account(alice, "0.00"), bob, make_account(bob, "0.00")


def test_all_transactions_lists_every_customers_entries_in_full(client, app, staff, two_customers):
    """Does the staff view list every customer's entries, newest first, with the full account
    number, the owner's name, the full counterparty number, type, signed amount, description and
    reference?"""
    alice, alices, bob, bobs = two_customers
    _add_entries(app, alices, [(START, "credit", "1234.50", "alice deposit")])
    _add_entries(app, alices, [(START + timedelta(hours=1), "debit", "10.00", "alice pays bob")], counterparty=bobs)
    _add_entries(app, bobs, [(START + timedelta(hours=1), "credit", "10.00", "bob is paid")], counterparty=alices)

    response = client.get(TRANSACTIONS)

    assert response.status_code == 200
    rows = _table(response)
    assert [cells[6] for cells in rows] == ["bob is paid", "alice pays bob", "alice deposit"]
    assert rows[0][:6] == ["2024-03-01 13:00", bobs.account_number, "Bob Owner", alices.account_number,
                           "credit", "10.00"]
    assert rows[1][:6] == ["2024-03-01 13:00", alices.account_number, "Alice Owner", bobs.account_number,
                           "debit", "-10.00"]
    assert rows[2][3:6] == ["—", "credit", "1,234.50"] and rows[2][7].startswith("TX-AUDIT")


def test_all_transactions_filters(client, app, staff, two_customers):
    """Do account_number (exact), type, dates and amounts each filter the staff view?"""
    alice, alices, bob, bobs = two_customers
    _add_entries(app, alices, [(START, "credit", "5.00", "a-early")])
    _add_entries(app, alices, [(START + timedelta(days=1), "debit", "1.00", "a-out")], counterparty=bobs)
    _add_entries(app, bobs, [(START + timedelta(days=1), "credit", "1.00", "b-in")], counterparty=alices)
    _add_entries(app, alices, [(START + timedelta(days=2), "credit", "50.00", "a-late")])

    def listed(**query) -> list[str]:
        response = client.get(TRANSACTIONS, query_string=query)
        assert response.status_code == 200
        return _descriptions(response)

    assert listed(account_number=alices.account_number) == ["a-late", "a-out", "a-early"]
    assert listed(account_number=bobs.account_number) == ["b-in"]
    assert listed(account_number="123456789012") == []
    assert listed(type="debit") == ["a-out"]
    assert listed(date_from="2024-03-02", date_to="2024-03-02") == ["b-in", "a-out"]
    assert listed(min_amount="5.00", max_amount="5") == ["a-early"]
    assert listed(account_number=alices.account_number, type="credit", min_amount="10") == ["a-late"]


def test_all_transactions_pages_of_25_by_keyset(client, app, staff, two_customers):
    """Are there 25 entries a page with rel="next" (keyset `before`, filters kept) leading to the
    older rest without overlap, and rel="prev" leading back?"""
    alice, alices, bob, bobs = two_customers
    _add_entries(app, alices, [(START + timedelta(minutes=i), "credit", "1.00", f"e{i:02d}") for i in range(30)])
    _add_entries(app, bobs, [(START, "credit", "1.00", "bob-not-listed")])

    first = client.get(TRANSACTIONS, query_string={"account_number": alices.account_number})
    link = _link(first, "next")
    second = client.get(link)

    assert _descriptions(first) == [f"e{i:02d}" for i in range(29, 4, -1)]
    assert _descriptions(second) == [f"e{i:02d}" for i in range(4, -1, -1)]
    assert _query(link)["account_number"] == [alices.account_number] and "before" in _query(link)
    assert _link(first, "prev") is None and _link(second, "next") is None
    assert _descriptions(client.get(_link(second, "prev"))) == _descriptions(first)


@pytest.mark.parametrize("query", [
    {"account_number": "12345"},
    {"account_number": "1234567890123"},
    {"account_number": "abcdefghijkl"},
    {"account_number": "\uff11" * 12},
    {"date_from": "2024-13-01"},
    {"type": "transfer"},
    {"min_amount": "1e3"},
    {"min_amount": "5", "max_amount": "4.99"},
    {"date_from": "2024-03-02", "date_to": "2024-03-01"},
    {"before": "abc"},
])
def test_all_transactions_malformed_filter_is_a_400_with_a_message(client, app, staff, two_customers, query):
    """Is a malformed account number, date, type, amount or cursor answered with 400 and a message,
    listing nothing (never a 500)?"""
    alice, alices, bob, bobs = two_customers
    _add_entries(app, alices, [(START, "credit", "1.00", "entry-not-listed")])

    response = client.get(TRANSACTIONS, query_string=query)

    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "Some filters are not valid" in body or "The page link is not valid." in body
    assert _table(response) == [] and "entry-not-listed" not in body


# ---------------------------------------------------------------------------------------------
# Who may look, and what is shown
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["customer", "support"])
@pytest.mark.parametrize("url", [LOGS, VERIFY, TRANSACTIONS])
def test_customers_and_support_get_403_and_access_denied(client, app, auth, make_user, role, url):
    """Do customers and support staff get 403 and an ACCESS_DENIED row (and no AUDIT_VIEWED) on
    every audit page?"""
    user = make_user(role)
    _login(client, auth, user)
    before = len(_audit_rows(app))

    response = client.get(url)

    assert response.status_code == 403
    new = _audit_rows(app)[before:]
    assert [(row.action, row.user_id) for row in new] == [("ACCESS_DENIED", user.id)]
    assert json.loads(new[0].details)["path"] == url


@pytest.mark.parametrize("url", [LOGS, VERIFY, TRANSACTIONS])
def test_anonymous_visitors_are_sent_to_the_login_page(client, app, url):
    """Is a visitor who is not signed in redirected to the login page, with nothing audited as a view?"""
    response = client.get(url)

    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/auth/login"
    assert [row.action for row in _audit_rows(app)] == []


def test_markup_in_details_and_names_is_escaped(client, app, monkeypatch, staff, make_user, make_account):
    """Is markup stored in audit details, owner names or descriptions shown as text, never as HTML?"""
    _seed_events(app, monkeypatch, [("LOGIN_FAILURE", None, {"email": "<script>alert(1)</script>"}, None)])
    owner = make_user(full_name="<b>Mallory</b>")
    account = make_account(owner, "0.00")
    _add_entries(app, account, [(START, "credit", "1.00", "<img src=x onerror=alert(2)>")])

    logs = client.get(LOGS).get_data(as_text=True)
    ledger = client.get(TRANSACTIONS).get_data(as_text=True)

    assert "<script>alert(1)</script>" not in logs and "&lt;script&gt;alert(1)&lt;/script&gt;" in logs
    assert "<b>Mallory</b>" not in ledger and "&lt;b&gt;Mallory&lt;/b&gt;" in ledger
    assert "<img src=x" not in ledger and "&lt;img src=x onerror=alert(2)&gt;" in ledger


def test_audit_pages_offer_no_way_to_change_the_log(client, app, staff):
    """Do the audit pages carry no POST form (nothing there edits or deletes), and do the routes
    refuse POST?"""
    for url in (LOGS, VERIFY, TRANSACTIONS):
        body = client.get(url).get_data(as_text=True)
        main = body[body.index("<main"):]
        assert 'method="post"' not in main.lower()
        assert client.post(url).status_code == 405


# ---------------------------------------------------------------------------------------------
# /banking/transactions sends staff here
# ---------------------------------------------------------------------------------------------


def test_banking_transactions_redirects_staff_with_the_filters(client, staff):
    """Are auditors and admins sent from /banking/transactions to /audit/transactions with the same
    filters in the query string?"""
    response = client.get("/banking/transactions", query_string={"type": "debit", "date_from": "2024-01-01",
                                                                 "min_amount": "5"})

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == TRANSACTIONS
    assert parse_qs(location.query) == {"type": ["debit"], "date_from": ["2024-01-01"], "min_amount": ["5"]}
    assert client.get(response.headers["Location"]).status_code == 200



def test_log_date_filter_accepts_the_last_representable_day(client, staff):
    """Is date_to=9999-12-31 an inclusive upper bound that lists rows (200), not a 500 from date
    arithmetic?"""
    response = client.get(LOGS, query_string={"date_to": "9999-12-31"})

    assert response.status_code == 200 and "AUDIT_VIEWED" in response.get_data(as_text=True)
