"""Seed the scan's throw-away database: one user per role plus the objects the forms act on.

Run by scan/run_scan.py as `python -m scan.seed` with the scan server's environment (APP_ENV,
DATABASE_URL and the three keys), after `flask db upgrade`. Reads the password to give every
user as JSON on standard input ({"password": "..."}) and prints what it made as JSON on
standard output: the users (email, id, role), account ids and numbers, and a ticket id (the
open ticket the forms act on; a second, resolved ticket is the stable list sqlmap probes).

Customers are registered through the identity service (register_customer), their accounts
opened, money moved and tickets opened (and one resolved) through the banking and support services, so the
audit log and the ledger are those the app would write. Staff users are written straight to
the `user` table, as tests/factories.py does: no route or service makes staff out of nothing
(an admin promotes a customer), and the scan needs them without a forced password change.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal


def seed(password: str) -> dict:
    """Create the scan's users and data; returns their ids and numbers (see the module doc)."""
    from app import create_app
    from app.auth.services import hash_password, register_customer
    from app.banking.services import new_idempotency_key, open_account, transfer_external, transfer_internal
    from app.extensions import db
    from app.models import User
    from app.security import log_event
    from app.support.services import create_ticket, update_ticket

    app = create_app()
    with app.test_request_context("/", environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        customer = register_customer("Scan Customer", "scan-customer@example.com", "+44 20 7946 0001", password)
        customer2 = register_customer("Scan Second Customer", "scan-customer2@example.com", "+44 20 7946 0002",
                                      password)
        # The user the admin's edit form is scanned against, so no scan user loses its role.
        edit_target = register_customer("Scan Edit Target", "scan-edit-target@example.com", "+44 20 7946 0003",
                                        password)
        # The customer the admin's transfer forms act for: no scanner run changes it (see
        # run_scan.wapiti_start), so those pages read the same from one probe to the next.
        transfer_owner = register_customer("Scan Transfer Owner", "scan-transfer-owner@example.com",
                                           "+44 20 7946 0004", password)
        staff = {}
        for role in ("support", "auditor", "admin"):
            user = User(full_name=f"Scan {role.capitalize()}", email=f"scan-{role}@example.com",
                        phone="+44 20 7946 0010", password_hash=hash_password(password), role=role,
                        is_active=True, must_change_password=False)
            db.session.add(user)
            db.session.flush()
            # Recorded as the bank records a new user: `flask verify-audit` replays these rows.
            log_event("REGISTER_SUCCESS", {"email": user.email, "role": role}, user_id=user.id)
            db.session.commit()
            staff[role] = user

        checking = open_account(customer, "checking", Decimal("10000.00"))
        savings = open_account(customer, "savings", Decimal("2500.00"))
        other = open_account(customer2, "checking", Decimal("1000.00"))
        edit_target_account = open_account(edit_target, "checking", Decimal("100.00"))
        open_account(transfer_owner, "checking", Decimal("500.00"))
        open_account(transfer_owner, "savings", Decimal("250.00"))
        for amount, text in (("120.50", "Rainy day"), ("35.00", "Groceries"), ("9.99", "Books")):
            transfer_internal(customer, customer.id, checking.id, savings.id, Decimal(amount), text,
                              new_idempotency_key(customer.id))
        transfer_external(customer, customer.id, checking.id, other.account_number, Decimal("79.50"), "Dinner",
                          new_idempotency_key(customer.id))
        transfer_external(customer2, customer2.id, other.id, savings.account_number, Decimal("12.00"), "Lunch",
                          new_idempotency_key(customer2.id))
        ticket = create_ticket(customer, "Card not arriving", "My new card has not arrived yet.")
        # A resolved ticket, which no scanner run changes: the list of resolved tickets that
        # sqlmap probes reads the same from one request to the next, where the open ones grow as
        # the customer's ticket-create run files more (sqlmap then calls the page "heavily
        # dynamic" and stops without a conclusion).
        resolved = create_ticket(customer2, "Statement copy", "Please send a copy of last month's statement.")
        update_ticket(staff["support"], resolved.id, "resolved", "Sent by post.")

        users = {"customer": customer, "customer2": customer2, "edit_target": edit_target,
                 "transfer_owner": transfer_owner, **staff}
        return {
            "users": {name: {"id": user.id, "email": user.email, "role": user.role} for name, user in users.items()},
            "accounts": {
                "checking": {"id": checking.id, "number": checking.account_number},
                "savings": {"id": savings.id, "number": savings.account_number},
                "customer2": {"id": other.id, "number": other.account_number},
                "edit_target": {"id": edit_target_account.id, "number": edit_target_account.account_number},
            },
            "ticket_id": ticket.id,
        }


def main() -> None:
    password = json.load(sys.stdin)["password"]
    json.dump(seed(password), sys.stdout)


if __name__ == "__main__":
    main()
