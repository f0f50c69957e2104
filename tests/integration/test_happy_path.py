"""The customer's whole path through the test client: register → log in → open accounts →
internal and external transfers → transactions."""

import re
from decimal import Decimal

from sqlalchemy import select

from app.banking.services import verify_ledger
from app.extensions import db
from app.models import Account, AuditLog

PASSWORD = "purple otter quietly sings 1987"


def _register(client, name, email):
    return client.post("/auth/register", data={
        "full_name": name, "email": email, "phone": "+44 20 7946 0000",
        "password": PASSWORD, "confirm_password": PASSWORD,
    })


def _idempotency_key(html: str) -> str:
    return re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', html).group(1)


def _switch_user(client, email):
    client.post("/auth/logout")
    response = client.post("/auth/login", data={"email": email, "password": PASSWORD})
    assert response.status_code == 302


def test_customer_path_moves_money_and_keeps_the_ledger_consistent(client, app):
    assert _register(client, "Alice Example", "Alice@Example.com ").status_code == 302
    assert _register(client, "Bob Example", "bob@example.com").status_code == 302

    _switch_user(client, "bob@example.com")
    assert client.post("/banking/open-account", data={"type": "checking", "opening_balance": "10"}).status_code == 302
    _switch_user(client, "alice@example.com")
    assert client.post("/banking/open-account", data={"type": "checking", "opening_balance": "500.00"}).status_code == 302
    assert client.post("/banking/open-account", data={"type": "savings", "opening_balance": "0"}).status_code == 302
    with app.app_context():
        bob_number, checking, savings = db.session.execute(
            select(Account.account_number, Account.id, Account.id).order_by(Account.id)
        ).all()
        bob_number, checking_id, savings_id = bob_number[0], checking[1], savings[1]

    page = client.get("/banking/transfer/internal").get_data(as_text=True)
    response = client.post("/banking/transfer/internal", data={
        "source_account": checking_id, "target_account": savings_id, "amount": "120.50",
        "description": "Rainy day", "idempotency_key": _idempotency_key(page)})
    assert response.status_code == 302, response.get_data(as_text=True)

    page = client.get("/banking/transfer/external").get_data(as_text=True)
    response = client.post("/banking/transfer/external", data={
        "source_account": checking_id, "target_account_number": bob_number, "amount": "79.50",
        "description": "Dinner", "idempotency_key": _idempotency_key(page)})
    assert response.status_code == 302, response.get_data(as_text=True)

    with app.app_context():
        balances = dict(db.session.execute(select(Account.id, Account.balance)).all())
        assert verify_ledger().ok
        actions = db.session.scalars(select(AuditLog.action)).all()
    assert balances[checking_id] == Decimal("300.00")
    assert balances[savings_id] == Decimal("120.50")
    assert sorted(balances.values()) == [Decimal("89.50"), Decimal("120.50"), Decimal("300.00")]
    assert actions.count("TRANSFER_CREATED") == 2

    listing = client.get("/banking/transactions").get_data(as_text=True)
    assert "-79.50" in listing and "-120.50" in listing and "500.00" in listing
    assert "\u2022\u2022\u2022\u2022" + bob_number[-4:] in listing
    assert bob_number not in listing
