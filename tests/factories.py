"""Factories for users and accounts written straight to the database (test set-up only).

They bypass the services on purpose, to arrange a state quickly; what is under test always goes
through the routes or the services. They need an app context and return plain snapshots
(`types.SimpleNamespace`), so the values stay usable after the context ends.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from types import SimpleNamespace

from app.auth.services import hash_password
from app.extensions import db
from app.models import Account, Transaction, User
from app.security import log_event

DEFAULT_PASSWORD = "correct horse battery staple 42"
_counter = itertools.count(1)


def make_user(role: str = "customer", *, email: str | None = None, password: str = DEFAULT_PASSWORD,
              full_name: str | None = None, is_active: bool = True,
              must_change_password: bool = False) -> SimpleNamespace:
    """Create and commit a user, with the REGISTER_SUCCESS audit row (and the USER_UPDATED row
    of a deactivation) the bank records; the email defaults to `<role><n>@example.com`."""
    n = next(_counter)
    user = User(
        full_name=full_name or f"{role.capitalize()} Person {n}",
        email=(email or f"{role}{n}@example.com").lower(),
        phone="+1 555 0100",
        password_hash=hash_password(password),
        role=role,
        is_active=is_active,
        must_change_password=must_change_password,
    )
    db.session.add(user)
    db.session.flush()
    # The audit rows the bank writes for a new user (and a deactivation): verify-audit replays them.
    log_event("REGISTER_SUCCESS", {"email": user.email, "role": role}, user_id=user.id)
    if not is_active:
        log_event("USER_UPDATED", {"user_id": user.id, "fields": ["is_active"],
                                   "is_active": {"from": True, "to": False}}, user_id=user.id)
    db.session.commit()
    return snapshot_user(user)


def snapshot_user(user: User) -> SimpleNamespace:
    """The plain values of `user` (id, email, role, full_name), plus the password used."""
    return SimpleNamespace(id=user.id, email=user.email, role=user.role, full_name=user.full_name)


def make_account(owner, balance: str | Decimal = "100.00", *, type: str = "checking",
                 status: str = "active", number: str | None = None) -> SimpleNamespace:
    """Create and commit an account holding `balance`, recorded as an opening-deposit credit and
    an ACCOUNT_CREATED audit row (and an ACCOUNT_FROZEN one for a frozen account), as the bank
    records them, so the ledger invariants and the match with the audit trail hold."""
    n = next(_counter)
    amount = Decimal(balance)
    account = Account(
        account_number=number or f"{900000000000 + n * 7919:012d}"[-12:],
        owner_id=owner.id, type=type, balance=amount, status=status,
    )
    db.session.add(account)
    db.session.flush()
    if amount > 0:
        db.session.add(Transaction(
            account_id=account.id, sender_account_id=None, receiver_account_id=account.id, amount=amount,
            type="credit", description="Opening deposit", reference=f"DP-TEST{n:011d}",
            initiated_by_user_id=owner.id,
        ))
    # The audit row the bank writes with every opening: verify-ledger matches the two.
    log_event("ACCOUNT_CREATED", {"account_id": account.id, "account_number": account.account_number,
                                  "owner_id": owner.id, "type": type, "opening_deposit": str(amount)},
              user_id=owner.id)
    if status == "frozen":  # as an admin's freeze records it (nothing in the bank closes an account)
        log_event("ACCOUNT_FROZEN", {"account_id": account.id, "account_number": account.account_number,
                                     "owner_id": owner.id, "from": "active", "to": status}, user_id=owner.id)
    db.session.commit()
    return SimpleNamespace(id=account.id, account_number=account.account_number, owner_id=account.owner_id,
                           type=account.type, status=account.status)


def issued_key(app, user_id: int) -> str:
    """A transfer idempotency key issued by `app` to user `user_id` (as a form would carry)."""
    from app.banking.services import new_idempotency_key

    with app.app_context():
        return new_idempotency_key(user_id)
