"""Opening accounts through `/banking/open-account` (DESIGN.md sections 2, 6, 8; issue 2 item 6)."""

from __future__ import annotations

import html
import json
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.banking import services
from app.extensions import db
from app.models import Account, AuditLog, Transaction

URL = "/banking/open-account"


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _accounts_of(app, owner_id: int) -> list[Account]:
    with app.app_context():
        accounts = list(db.session.scalars(select(Account).where(Account.owner_id == owner_id).order_by(Account.id)))
        db.session.expunge_all()
        return accounts


def _ledger_rows(app, account_id: int) -> list[tuple]:
    with app.app_context():
        return db.session.execute(
            select(Transaction.type, Transaction.amount, Transaction.sender_account_id,
                   Transaction.receiver_account_id, Transaction.initiated_by_user_id)
            .where(Transaction.account_id == account_id)
        ).all()


def _audit(app, action: str) -> list[tuple[int | None, dict]]:
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == action)
                                  .order_by(AuditLog.id)).all()
    return [(user_id, json.loads(details)) for user_id, details in rows]


def _counts(app) -> tuple[int, int, int]:
    """(accounts, ledger rows, ACCOUNT_CREATED rows) in the whole database."""
    with app.app_context():
        return (
            db.session.scalar(select(func.count(Account.id))),
            db.session.scalar(select(func.count(Transaction.id))),
            db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "ACCOUNT_CREATED")),
        )


@pytest.mark.parametrize("account_type", ["checking", "savings"])
def test_customer_opens_empty_account_without_ledger_row(client, app, logged_in_customer, account_type):
    """Does a customer opening a checking or savings account with 0.00 get an empty active account,
    no ledger row, an ACCOUNT_CREATED audit row and a redirect to the dashboard?"""
    response = client.post(URL, data={"type": account_type, "opening_balance": "0.00"})

    assert response.status_code == 302
    assert response.headers["Location"].endswith("/banking/dashboard")
    [account] = _accounts_of(app, logged_in_customer.id)
    assert (account.type, account.balance, account.status) == (account_type, Decimal("0.00"), "active")
    assert _ledger_rows(app, account.id) == []
    [(actor, details)] = _audit(app, "ACCOUNT_CREATED")
    assert actor == logged_in_customer.id
    assert details["account_id"] == account.id and details["owner_id"] == logged_in_customer.id
    assert details["account_number"] == account.account_number
    dashboard = client.get(response.headers["Location"])
    assert f"Account {account.account_number} opened." in _text(dashboard)


def test_customer_opens_account_with_deposit_recorded_as_one_credit(client, app, logged_in_customer):
    """Is an opening deposit recorded as exactly one ledger credit with no counterparty, so the
    ledger invariants still hold?"""
    response = client.post(URL, data={"type": "savings", "opening_balance": "1250.5"})

    assert response.status_code == 302
    [account] = _accounts_of(app, logged_in_customer.id)
    assert account.balance == Decimal("1250.50")
    assert _ledger_rows(app, account.id) == [("credit", Decimal("1250.50"), None, account.id, logged_in_customer.id)]
    [(_, details)] = _audit(app, "ACCOUNT_CREATED")
    assert details["opening_deposit"] == "1250.50"
    with app.app_context():
        assert services.verify_ledger().ok


def test_account_numbers_are_twelve_digits_and_unique(client, app, logged_in_customer):
    """Are account numbers 12 digits (no leading zero) and different for every account?"""
    for _ in range(5):
        assert client.post(URL, data={"type": "checking", "opening_balance": "0"}).status_code == 302

    numbers = [account.account_number for account in _accounts_of(app, logged_in_customer.id)]
    assert len(numbers) == 5
    assert all(re.fullmatch(r"[1-9][0-9]{11}", number) for number in numbers), numbers
    assert len(set(numbers)) == 5


def test_account_number_generator_skips_a_number_already_taken(client, app, logged_in_customer, make_account,
                                                              other_customer, monkeypatch):
    """When the random generator hits an existing account number, is a fresh one drawn instead
    of failing or reusing it?"""
    make_account(other_customer, "0.00", number="100000000001")
    draws = iter([1, 2])
    monkeypatch.setattr(services.secrets, "randbelow", lambda _bound: next(draws))

    assert client.post(URL, data={"type": "checking", "opening_balance": "0"}).status_code == 302

    [account] = _accounts_of(app, logged_in_customer.id)
    assert account.account_number == "100000000002"


def test_opening_deposit_at_the_maximum_is_accepted(client, app, logged_in_customer):
    """Is the opening-deposit maximum (10,000.00 by default) inclusive?"""
    response = client.post(URL, data={"type": "checking", "opening_balance": "10000.00"})

    assert response.status_code == 302
    [account] = _accounts_of(app, logged_in_customer.id)
    assert account.balance == Decimal("10000.00")


def test_opening_deposit_above_the_maximum_is_refused(client, app, logged_in_customer):
    """Is an opening deposit one cent above the maximum refused with a message, writing nothing?"""
    before = _counts(app)

    response = client.post(URL, data={"type": "checking", "opening_balance": "10000.01"})

    assert response.status_code == 400
    assert "must not exceed 10,000.00" in _text(response)
    assert _counts(app) == before


@pytest.mark.parametrize("text", ["", "abc", "-5", "1e3", "NaN", "Infinity", "1,000", "10.001", "\uff11\uff10\uff10",
                                  "10.", ".5", "5\n", "0x10"])
def test_malformed_opening_deposit_is_a_form_error(client, app, logged_in_customer, text):
    """Is opening-deposit text that is not plain decimal money refused (400, a message) with
    nothing written?"""
    before = _counts(app)

    response = client.post(URL, data={"type": "checking", "opening_balance": text})

    assert response.status_code == 400
    body = _text(response)
    assert "Enter the amount as digits" in body or "Enter an amount." in body
    assert _counts(app) == before


def test_unknown_account_type_is_a_form_error(client, app, logged_in_customer):
    """Is an account type other than checking or savings refused with nothing written?"""
    before = _counts(app)

    response = client.post(URL, data={"type": "loan", "opening_balance": "0"})

    assert response.status_code == 400
    assert "Not a valid choice" in _text(response)
    assert _counts(app) == before


def test_customer_cannot_exceed_max_accounts(client, app, logged_in_customer, make_account):
    """Once a customer holds MAX_ACCOUNTS_PER_CUSTOMER (5) accounts, is the next one refused with
    a message and nothing written?"""
    for _ in range(5):
        make_account(logged_in_customer, "0.00")
    before = _counts(app)

    response = client.post(URL, data={"type": "savings", "opening_balance": "10"})

    assert response.status_code == 400
    assert "at most 5 accounts" in _text(response)
    assert _counts(app) == before


@pytest.mark.parametrize("app_overrides", [{"MAX_ACCOUNTS_PER_CUSTOMER": 1}])
def test_max_accounts_is_read_from_configuration(client, app, logged_in_customer, make_account):
    """Does the account limit follow the MAX_ACCOUNTS_PER_CUSTOMER setting rather than a constant?"""
    make_account(logged_in_customer, "0.00")

    response = client.post(URL, data={"type": "savings", "opening_balance": "0"})

    assert response.status_code == 400
    assert "at most 1 accounts" in _text(response)
    assert len(_accounts_of(app, logged_in_customer.id)) == 1


def test_customer_posting_owner_user_id_still_opens_for_themself(client, app, logged_in_customer, other_customer):
    """Does a customer who adds someone else's owner_user_id to the form still get the account
    themself (the owner is decided by role, never by the field's presence)?"""
    response = client.post(URL, data={"type": "checking", "opening_balance": "5.00",
                                      "owner_user_id": str(other_customer.id)})

    assert response.status_code == 302
    assert len(_accounts_of(app, logged_in_customer.id)) == 1
    assert _accounts_of(app, other_customer.id) == []


def test_open_account_service_ignores_owner_for_a_customer(app, customer, other_customer):
    """Does the service open a customer's account for that customer even when called with
    someone else's owner_user_id (decided by role, not by the argument)?"""
    from app.models import User

    with app.app_context():
        actor = db.session.get(User, customer.id)
        account = services.open_account(actor, "checking", Decimal("0.00"), other_customer.id)
        owner_id = account.owner_id

    assert owner_id == customer.id
    assert _accounts_of(app, other_customer.id) == []


def test_customer_form_has_no_owner_select(client, logged_in_customer):
    """Is the owner picker left out of the form a customer sees?"""
    page = client.get(URL)

    assert page.status_code == 200
    assert 'name="owner_user_id"' not in page.get_data(as_text=True)


def test_admin_opens_account_for_chosen_customer(client, app, auth, admin, customer):
    """Can an admin open an account for the customer chosen in owner_user_id, with the audit row
    naming the admin as actor and the customer as owner?"""
    auth.login(admin.email)
    page = client.get(URL)
    assert page.status_code == 200 and f'value="{customer.id}"' in page.get_data(as_text=True)

    response = client.post(URL, data={"type": "savings", "opening_balance": "20.00", "owner_user_id": str(customer.id)})

    assert response.status_code == 302
    [account] = _accounts_of(app, customer.id)
    assert account.balance == Decimal("20.00")
    assert _accounts_of(app, admin.id) == []
    assert _ledger_rows(app, account.id) == [("credit", Decimal("20.00"), None, account.id, admin.id)]
    [(actor, details)] = _audit(app, "ACCOUNT_CREATED")
    assert actor == admin.id and details["owner_id"] == customer.id


def test_admin_without_owner_is_refused(client, app, auth, admin, customer):
    """Is an admin who chooses no owner refused (400) with nothing written?"""
    auth.login(admin.email)
    before = _counts(app)

    response = client.post(URL, data={"type": "checking", "opening_balance": "0"})

    assert response.status_code == 400
    assert "Not a valid choice" in _text(response)
    assert _counts(app) == before


@pytest.mark.parametrize("owner", ["support", "admin", "inactive", "missing", "text"])
def test_admin_cannot_open_for_a_non_customer(client, app, auth, admin, make_user, owner):
    """Is an admin refused (400, nothing written) when owner_user_id names staff, a deactivated
    customer, nobody, or is not a number?"""
    auth.login(admin.email)
    owner_id = {
        "support": lambda: str(make_user("support").id),
        "admin": lambda: str(admin.id),
        "inactive": lambda: str(make_user("customer", is_active=False).id),
        "missing": lambda: "999999",
        "text": lambda: "1 OR 1=1",
    }[owner]()
    before = _counts(app)

    response = client.post(URL, data={"type": "checking", "opening_balance": "0", "owner_user_id": owner_id})

    assert response.status_code == 400
    assert _counts(app) == before


def test_admin_open_account_service_refuses_non_customer_owner(app, admin, support_user):
    """Does the service itself (not only the form's choices) refuse an admin naming a staff owner?"""
    from app.errors import AccountNotFoundError
    from app.models import User

    with app.app_context():
        actor = db.session.get(User, admin.id)
        with pytest.raises(AccountNotFoundError):
            services.open_account(actor, "checking", Decimal("0.00"), support_user.id)
        assert db.session.scalar(select(func.count(Account.id))) == 0


def test_a_customer_made_staff_meanwhile_is_refused_in_a_customers_words(app, customer):
    """When a customer's role changes (an admin makes them support) between the start of their
    request and the opening, is the opening refused under the owner's lock, with a message for
    the customer rather than the admin's owner-picker advice, and nothing opened?"""
    from sqlalchemy import update

    from app.errors import AccountNotFoundError
    from app.models import User

    with app.app_context():
        actor = db.session.get(User, customer.id)
        assert actor.role == "customer"  # read at the start of the request
        db.session.expunge(actor)  # the request's copy keeps saying customer
        db.session.execute(update(User).where(User.id == customer.id).values(role="support"))
        db.session.commit()
        with pytest.raises(AccountNotFoundError) as refusal:
            services.open_account(actor, "checking", Decimal("10.00"))
        assert str(refusal.value) == "Only active customers can open accounts."
        assert db.session.scalar(select(func.count(Account.id))) == 0


@pytest.mark.parametrize("role", ["support", "auditor"])
def test_support_and_auditor_cannot_open_accounts(client, app, auth, make_user, role):
    """Do support and auditor users get 403 (and an ACCESS_DENIED row) on GET and POST?"""
    user = make_user(role)
    auth.login(user.email)

    assert client.get(URL).status_code == 403
    assert client.post(URL, data={"type": "checking", "opening_balance": "0"}).status_code == 403

    assert _counts(app)[0] == 0
    denied = _audit(app, "ACCESS_DENIED")
    assert len(denied) == 2 and all(actor == user.id and d["path"] == URL for actor, d in denied)


def test_anonymous_open_account_redirects_to_login(client, app):
    """Is an anonymous visitor sent to the login page, with nothing written?"""
    response = client.post(URL, data={"type": "checking", "opening_balance": "0"})

    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]
    assert _counts(app) == (0, 0, 0)
