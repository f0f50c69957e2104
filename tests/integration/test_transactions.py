"""The customer's transactions list and the dashboard (DESIGN.md sections 6 and 8)."""

from __future__ import annotations

import html
import itertools
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from app.banking import services
from app.extensions import db
from app.models import Transaction, User

URL = "/banking/transactions"
MASK = "\u2022\u2022\u2022\u2022"
START = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
_refs = itertools.count(1)


def _add_entries(app, account, entries, *, counterparty=None) -> None:
    """Write ledger rows straight to the database (set-up only). `entries`: (timestamp, type,
    amount, description); a debit needs `counterparty` as its receiver, a credit without one is
    a deposit. Each row is initiated by the paying account's owner, as a customer's own transfer is."""
    with app.app_context():
        for moment, entry_type, amount, description in entries:
            other = counterparty.id if counterparty else None
            db.session.add(Transaction(
                account_id=account.id, type=entry_type, amount=Decimal(amount), description=description,
                sender_account_id=account.id if entry_type == "debit" else other,
                receiver_account_id=other if entry_type == "debit" else account.id,
                reference=f"TX-TEST{next(_refs):09d}", timestamp=moment,
                initiated_by_user_id=counterparty.owner_id if counterparty and entry_type == "credit" else account.owner_id,
            ))
        db.session.commit()


def _rows(response) -> list[str]:
    """The table rows of a transactions list (without the 'No transactions.' row)."""
    body = response.get_data(as_text=True)
    tbody = body[body.index("<tbody>"):body.index("</tbody>")]
    return [html.unescape(row) for row in re.findall(r"<tr>(.*?)</tr>", tbody, re.S) if "<code>" in row]


def _descriptions(response) -> list[str]:
    return [re.findall(r"<td>([^<]*)</td>\s*<td><code>", row)[0] for row in _rows(response)]


@pytest.fixture
def account(logged_in_customer, make_account):
    return make_account(logged_in_customer, "0.00")


@pytest.fixture
def foreign(other_customer, make_account):
    return make_account(other_customer, "0.00")


def test_lists_only_the_users_own_entries(client, app, logged_in_customer, account, foreign, make_account,
                                          other_customer):
    """Does the list show the user's own ledger entries and none of another customer's, even for a
    transfer between them (only the user's side)?"""
    third = make_account(other_customer, "0.00")
    _add_entries(app, account, [(START, "credit", "50.00", "my deposit")])
    _add_entries(app, account, [(START + timedelta(hours=1), "debit", "5.00", "paid bob")], counterparty=foreign)
    _add_entries(app, foreign, [(START + timedelta(hours=1), "credit", "5.00", "bob received")], counterparty=account)
    _add_entries(app, foreign, [(START + timedelta(hours=2), "debit", "1.00", "bob private")], counterparty=third)

    response = client.get(URL)

    assert response.status_code == 200
    assert _descriptions(response) == ["paid bob", "my deposit"]
    assert "bob private" not in response.get_data(as_text=True)


def test_lists_newest_first_in_pages_of_25_with_rel_links(client, app, logged_in_customer, account):
    """Are entries newest first, 25 a page, with rel="next" on the first page and rel="prev" (and
    no rel="next") on the last?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", "1.00", f"entry {i:02d}") for i in range(30)])

    first = client.get(URL)
    second = client.get(URL + "?page=2")

    assert _descriptions(first) == [f"entry {i:02d}" for i in range(29, 4, -1)]
    assert _descriptions(second) == [f"entry {i:02d}" for i in range(4, -1, -1)]
    first_body, second_body = first.get_data(as_text=True), second.get_data(as_text=True)
    assert 'rel="next"' in first_body and 'rel="prev"' not in first_body
    assert re.search(r'rel="next" href="/banking/transactions\?page=2"', first_body)
    assert 'rel="prev"' in second_body and 'rel="next"' not in second_body


def test_pager_keeps_the_filters(client, app, logged_in_customer, account):
    """Does the next-page link carry the current filters, so page 2 is page 2 of the same list?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", "1.00", f"c{i}") for i in range(26)])

    body = html.unescape(client.get(URL + "?type=credit").get_data(as_text=True))

    link = re.search(r'rel="next" href="([^"]+)"', body).group(1)
    assert "type=credit" in link and "page=2" in link


def test_exactly_25_entries_fit_one_page_without_next_link(client, app, logged_in_customer, account):
    """With exactly 25 entries, is there one full page and no rel="next" link?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", "1.00", f"e{i}") for i in range(25)])

    response = client.get(URL)

    assert len(_rows(response)) == 25
    assert 'rel="next"' not in response.get_data(as_text=True)


@pytest.mark.parametrize("page_number",
                         ["3", "999", "99999999999999999999", "0", "-1", "abc", "1.5", "", "\uff11", "1 "])
def test_page_past_the_end_or_malformed_is_an_empty_list(client, app, logged_in_customer, account, page_number):
    """Is a page past the end, or a malformed page number, an empty list with status 200 (never a
    404 or 500), saying that this page is empty rather than that the customer has no
    transactions?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", "1.00", f"e{i}") for i in range(30)])

    response = client.get(URL, query_string={"page": page_number})

    assert response.status_code == 200
    assert _rows(response) == []
    assert "No transactions on this page." in response.get_data(as_text=True)


@pytest.mark.parametrize("page_number", ["3", "0", "abc", ""])
def test_an_empty_page_links_back_to_the_first_with_the_filters_kept(client, app, logged_in_customer, account,
                                                                     page_number):
    """Does an empty page other than the first (past the end or malformed) offer one link, back to
    page 1 of the same filters, instead of leaving the reader with no way on?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", "1.00", f"e{i}") for i in range(30)])

    body = client.get(URL, query_string={"type": "credit", "page": page_number}).get_data(as_text=True)

    assert 'href="/banking/transactions?type=credit&amp;page=1">Back to the first page</a>' in body
    assert 'rel="next"' not in body and 'rel="prev"' not in body
    first = client.get(URL, query_string={"type": "credit", "page": "1"}).get_data(as_text=True)
    assert "Back to the first page" not in first and 'rel="next"' in first


def test_an_empty_first_page_has_no_pager_links(client, app, logged_in_customer, account):
    body = client.get(URL).get_data(as_text=True)

    assert "No transactions." in body and "on this page" not in body
    assert "Back to the first page" not in body and 'rel="next"' not in body


def test_date_filters_are_inclusive_utc_days(client, app, logged_in_customer, account):
    """Do date_from and date_to select whole UTC days, both inclusive, to the microsecond?"""
    day = datetime(2024, 3, 10, tzinfo=timezone.utc)
    _add_entries(app, account, [
        (day - timedelta(microseconds=1), "credit", "1.00", "day before"),
        (day, "credit", "1.00", "first instant"),
        (day + timedelta(days=1, microseconds=-1), "credit", "1.00", "last instant"),
        (day + timedelta(days=1), "credit", "1.00", "day after"),
    ])

    both = client.get(URL + "?date_from=2024-03-10&date_to=2024-03-10")
    since = client.get(URL + "?date_from=2024-03-10")
    until = client.get(URL + "?date_to=2024-03-10")

    assert both.status_code == 200
    assert _descriptions(both) == ["last instant", "first instant"]
    assert _descriptions(since) == ["day after", "last instant", "first instant"]
    assert _descriptions(until) == ["last instant", "first instant", "day before"]


def test_type_filter_selects_debits_or_credits(client, app, logged_in_customer, account, foreign):
    """Does type=debit show only debits and type=credit only credits?"""
    _add_entries(app, account, [(START, "credit", "10.00", "in")])
    _add_entries(app, account, [(START + timedelta(hours=1), "debit", "3.00", "out")], counterparty=foreign)

    assert _descriptions(client.get(URL + "?type=debit")) == ["out"]
    assert _descriptions(client.get(URL + "?type=credit")) == ["in"]
    assert _descriptions(client.get(URL + "?type=")) == ["out", "in"]


def test_amount_filters_are_inclusive(client, app, logged_in_customer, account):
    """Do min_amount and max_amount include entries exactly at the bounds?"""
    _add_entries(app, account, [(START + timedelta(minutes=i), "credit", amount, f"a{amount}")
                                for i, amount in enumerate(["9.99", "10.00", "20.00", "20.01"])])

    assert _descriptions(client.get(URL + "?min_amount=10&max_amount=20.00")) == ["a20.00", "a10.00"]
    assert _descriptions(client.get(URL + "?min_amount=20.00")) == ["a20.01", "a20.00"]
    assert _descriptions(client.get(URL + "?max_amount=9.99")) == ["a9.99"]


def test_filters_combine(client, app, logged_in_customer, account, foreign):
    """Do several filters apply together (AND), not one at a time?"""
    _add_entries(app, account, [(START, "credit", "10.00", "credit early"),
                                (START + timedelta(days=2), "credit", "10.00", "credit late")])
    _add_entries(app, account, [(START + timedelta(days=2), "debit", "10.00", "debit late")], counterparty=foreign)

    response = client.get(URL + "?type=credit&date_from=2024-03-02&min_amount=10&max_amount=10")

    assert _descriptions(response) == ["credit late"]


@pytest.mark.parametrize(("query", "field_message"), [
    ({"date_from": "2024-13-01"}, "There is no such date; enter a real day as YYYY-MM-DD."),
    ({"date_to": "2024-02-30"}, "There is no such date; enter a real day as YYYY-MM-DD."),
    ({"date_from": "01/02/2024"}, "Enter the date as YYYY-MM-DD."),
    ({"date_to": "2024-03-10T00:00"}, "Enter the date as YYYY-MM-DD."),
    ({"type": "transfer"}, "Not a valid choice."),
    ({"min_amount": "abc"}, "Enter the amount as digits"),
    ({"max_amount": "1e3"}, "Enter the amount as digits"),
    ({"min_amount": "-1"}, "Enter the amount as digits"),
    ({"max_amount": "NaN"}, "Enter the amount as digits"),
    ({"min_amount": "9" * 5000}, "The amount must not exceed"),
    ({"date_from": "\uff12\uff10\uff12\uff14-01-01"}, "Enter the date as YYYY-MM-DD."),
    ({"date_from": "2024-03-11", "date_to": "2024-03-10"}, "The end date is before the start date"),
    ({"min_amount": "20.00", "max_amount": "19.99"}, "The maximum is below the minimum"),
])
def test_malformed_filter_is_a_400_with_a_message(client, app, logged_in_customer, account, query, field_message):
    """Is a malformed date, amount or unknown type answered with status 400 and a message on the
    page (never a 500), listing nothing?"""
    _add_entries(app, account, [(START, "credit", "1.00", "entry-not-listed")])

    response = client.get(URL, query_string=query)

    assert response.status_code == 400
    body = html.unescape(response.get_data(as_text=True))
    assert "Some filters are not valid" in body
    assert field_message in body
    assert "entry-not-listed" not in body


def test_counterparty_is_masked_unless_it_is_the_users_own_account(client, app, logged_in_customer, account,
                                                                   other_customer, foreign, make_account):
    """Is another customer's account shown as ••••1234 while the user's own accounts (and the
    deposit's empty counterparty) are shown as they are?"""
    funded = make_account(logged_in_customer, "100.00")
    with app.app_context():
        actor = db.session.get(User, logged_in_customer.id)
        services.transfer_internal(actor, actor.id, funded.id, account.id, Decimal("10.00"), "to savings",
                                   services.new_idempotency_key(actor.id))
        services.transfer_external(actor, actor.id, funded.id, foreign.account_number, Decimal("7.00"), "to bob",
                                   services.new_idempotency_key(actor.id))

    response = client.get(URL)

    body = response.get_data(as_text=True)
    assert foreign.account_number not in body
    # Columns: date, account, counterparty, type, amount, description, reference.
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in _rows(response)]
    counterparty = {(c[5], c[1]): c[2] for c in cells}
    assert counterparty[("to bob", funded.account_number)] == MASK + foreign.account_number[-4:]
    assert counterparty[("to savings", funded.account_number)] == account.account_number
    assert counterparty[("to savings", account.account_number)] == funded.account_number
    assert counterparty[("Opening deposit", funded.account_number)] == "\u2014"

    client.post("/auth/logout")
    client.post("/auth/login", data={"email": other_customer.email, "password": "correct horse battery staple 42"})
    theirs = client.get(URL).get_data(as_text=True)
    assert MASK + funded.account_number[-4:] in theirs and funded.account_number not in theirs


def test_amounts_are_formatted_with_sign_and_separators(client, app, logged_in_customer, account, foreign):
    """Are amounts shown with two decimals and comma separators, debits with a leading minus in
    red and credits in green, each row's time to the minute in UTC?"""
    _add_entries(app, account, [(START, "credit", "1234567.80", "big in")])
    _add_entries(app, account, [(START + timedelta(hours=1, minutes=5, seconds=59), "debit", "1234.50", "out")],
                 counterparty=foreign)

    debit, credit = _rows(client.get(URL))

    assert '<td class="text-end text-danger">-1,234.50</td>' in debit and "<td>2024-03-01 13:05</td>" in debit
    assert '<td class="text-end text-success">1,234,567.80</td>' in credit and "<td>2024-03-01 12:00</td>" in credit


def test_dashboard_shows_own_accounts_and_last_five_entries_each(client, app, logged_in_customer, make_account,
                                                                 other_customer, foreign):
    """Does the dashboard list only the customer's accounts, each with its five newest entries?"""
    first = make_account(logged_in_customer, "0.00", type="checking")
    second = make_account(logged_in_customer, "0.00", type="savings")
    _add_entries(app, first, [(START + timedelta(minutes=i), "credit", "1.00", f"first-{i}") for i in range(7)])
    _add_entries(app, second, [(START + timedelta(minutes=i), "credit", "2.00", f"second-{i}") for i in range(2)])
    _add_entries(app, foreign, [(START, "credit", "3.00", "foreign-entry")])

    response = client.get("/banking/dashboard")

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert first.account_number in body and second.account_number in body
    assert foreign.account_number not in body and "foreign-entry" not in body
    shown = re.findall(r"<td>(first-\d|second-\d)</td>", body)
    assert shown == [f"first-{i}" for i in range(6, 1, -1)] + ["second-1", "second-0"]


def test_dashboard_shows_balances_formatted(client, app, logged_in_customer, make_account):
    """Does the dashboard show each balance with two decimals and a thousands separator?"""
    make_account(logged_in_customer, "12345.60")

    body = client.get("/banking/dashboard").get_data(as_text=True)

    assert "12,345.60" in body


def test_customer_with_no_entries_sees_an_empty_list(client, logged_in_customer):
    """Does a customer without accounts get an empty list rather than an error?"""
    response = client.get(URL)

    assert response.status_code == 200
    assert "No transactions." in response.get_data(as_text=True)


def test_descriptions_are_escaped(client, app, logged_in_customer, account):
    """Is a description containing markup shown as text, never as HTML (stored XSS)?"""
    _add_entries(app, account, [(START, "credit", "1.00", '<script>alert("x")</script>')])

    for url in (URL, "/banking/dashboard"):
        body = client.get(url).get_data(as_text=True)
        assert '<script>alert("x")</script>' not in body
        assert "&lt;script&gt;" in body


def test_a_range_with_equal_ends_is_valid(client, app, logged_in_customer, account):
    """Is a range whose start and end are the same day or the same amount a valid filter (only a
    reversed range is refused)?"""
    _add_entries(app, account, [(datetime(2024, 3, 10, 12, tzinfo=timezone.utc), "credit", "10.00", "that day")])

    response = client.get(URL, query_string={"date_from": "2024-03-10", "date_to": "2024-03-10",
                                             "min_amount": "10", "max_amount": "10.00"})

    assert response.status_code == 200
    assert _descriptions(response) == ["that day"]


@pytest.mark.parametrize("query", ["date_to=9999-12-31", "date_from=9999-12-31&date_to=9999-12-31",
                                   "date_from=0001-01-01"])
def test_extreme_dates_are_answered_without_error(client, app, logged_in_customer, account, query):
    """Are the first and last representable days valid filters (200, no 500 from date
    arithmetic), with 9999-12-31 as an inclusive upper bound that keeps today's entries?"""
    _add_entries(app, account, [(datetime(2024, 3, 10, tzinfo=timezone.utc), "credit", "1.00", "today")])

    response = client.get(URL + "?" + query)

    assert response.status_code == 200
    assert ("today" in _descriptions(response)) == (not query.startswith("date_from=9999"))


def test_internal_transfer_with_one_account_explains_what_is_needed(client, logged_in_customer, account):
    """Does a customer with a single account see why an internal transfer cannot work yet?"""
    page = client.get("/banking/transfer/internal").get_data(as_text=True)

    assert "A transfer between accounts needs two accounts." in page


def test_internal_transfer_without_accounts_points_only_to_opening_one(client, logged_in_customer):
    """Does a customer with no account at all get sent to open one, and not to the external
    transfer, which needs an account to send from just as much?"""
    page = client.get("/banking/transfer/internal").get_data(as_text=True)

    assert "A transfer between accounts needs two accounts." in page
    assert 'href="/banking/open-account">Open an account</a> first.' in page
    assert "Open another account" not in page and "transfer to another account</a>" not in page


def test_internal_transfer_with_one_account_offers_both_ways_on(client, logged_in_customer, account):
    """With one account, is the customer offered to open another or to send money out?"""
    page = client.get("/banking/transfer/internal").get_data(as_text=True)

    assert 'href="/banking/open-account">Open another account</a>' in page
    assert 'href="/banking/transfer/external">transfer to another account</a>' in page


def test_external_transfer_without_accounts_explains_what_is_needed(client, logged_in_customer):
    """Does a customer with no account see, on the external transfer form, that one is needed
    and where to open it?"""
    page = client.get("/banking/transfer/external").get_data(as_text=True)

    assert "A transfer needs an account to send the money from." in page
    assert 'href="/banking/open-account"' in page


def test_external_transfer_with_an_account_has_no_such_note(client, logged_in_customer, account):
    """Is that note shown only when there is no account to send from?"""
    page = client.get("/banking/transfer/external").get_data(as_text=True)

    assert "A transfer needs an account to send the money from." not in page


def _naive_page_ids(owner_id: int, filters, page: int) -> list[int]:
    """The page as the plain query would give it: every entry of the owner's accounts, filtered,
    newest first, sliced — the reference the per-account merge must agree with."""
    from sqlalchemy import select

    from app.models import Account

    stmt = (select(Transaction.id).join(Account, Transaction.account_id == Account.id)
            .where(Account.owner_id == owner_id))
    stmt = services.apply_transaction_filters(stmt, filters).order_by(Transaction.id.desc())
    return list(db.session.scalars(stmt.offset((page - 1) * 25).limit(25)))


# Uneven shares of the entries, one account without any: four accounts, and eight, more than
# the scans PostgreSQL merges one per account (services.MERGED_ACCOUNT_SCANS), so the entries
# of the accounts past those (closed ones, or a lowered limit) come through the further scan.
ACCOUNT_WEIGHTS = {4: [5, 1, 3, 0], 8: [5, 1, 0, 2, 1, 4, 3, 2]}


@pytest.mark.parametrize("account_count", sorted(ACCOUNT_WEIGHTS))
def test_per_account_paging_gives_the_same_pages_as_one_plain_query(app, logged_in_customer, other_customer,
                                                                     make_account, account_count):
    """Does the page-finding of the transactions list (each account's newest entries through its
    own index, then merged) give exactly the pages and the "next" flag of one plain ORDER BY over
    all the customer's entries, for every page and every filter, with entries of several accounts
    interleaved unevenly, one account without entries, and another customer's entries between,
    whether the customer holds fewer accounts than the merged scans or more?"""
    import random

    assert max(ACCOUNT_WEIGHTS) > services.MERGED_ACCOUNT_SCANS
    accounts = [make_account(logged_in_customer, "0.00") for _ in range(account_count)]
    foreign = make_account(other_customer, "0.00")
    rng = random.Random(20261129)
    weights = ACCOUNT_WEIGHTS[account_count]
    for n in range(180):
        owner_account = rng.choices(accounts + [foreign], weights=weights + [2])[0]
        entry_type = rng.choice(["debit", "credit"])
        _add_entries(app, owner_account, [(START + timedelta(hours=7 * n + rng.randrange(5)), entry_type,
                                           f"{rng.randrange(1, 9000) / 100:.2f}", f"entry {n}")],
                     counterparty=foreign if entry_type == "debit" else None)
    day = START.date()
    cases = [
        services.TransactionFilters(),
        services.TransactionFilters(type="debit"),
        services.TransactionFilters(type="credit", min_amount=Decimal("10.00")),
        services.TransactionFilters(date_from=day + timedelta(days=5), date_to=day + timedelta(days=30)),
        services.TransactionFilters(date_from=day + timedelta(days=3), date_to=day + timedelta(days=40), type="debit",
                                    min_amount=Decimal("5.00"), max_amount=Decimal("60.00")),
        services.TransactionFilters(min_amount=Decimal("95.00")),  # matches nothing
    ]
    with app.app_context():
        checked = 0
        for filters in cases:
            for page in range(1, 10):
                expected = _naive_page_ids(logged_in_customer.id, filters, page)
                got = services.list_customer_transactions(logged_in_customer.id, filters, page)
                assert [entry.id for entry in got.items] == expected, (filters, page)
                assert got.has_next == bool(_naive_page_ids(logged_in_customer.id, filters, page + 1)), (filters, page)
                checked += len(expected)
        assert checked > 300  # the cases do cover several full pages
