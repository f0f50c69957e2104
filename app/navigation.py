"""The navbar links each role sees (spec section 9), limited to routes that exist."""

from __future__ import annotations

from flask import current_app

NAVIGATION: dict[str, tuple[tuple[str, str], ...]] = {
    "customer": (
        ("Dashboard", "banking.dashboard"),
        ("Open account", "banking.open_account"),
        ("Transfer between my accounts", "banking.transfer_internal"),
        ("Transfer to another account", "banking.transfer_external"),
        ("My transactions", "banking.transactions"),
        ("Support ticket", "support.create_ticket"),
        ("My tickets", "support.my_tickets"),
    ),
    "support": (
        ("Dashboard", "banking.dashboard"),
        ("Support tickets", "support.tickets"),
    ),
    "auditor": (
        ("Dashboard", "banking.dashboard"),
        ("Audit logs", "audit.logs"),
        ("Transactions", "audit.transactions"),
    ),
    "admin": (
        ("Dashboard", "banking.dashboard"),
        ("Users", "banking.admin_users"),
        ("Accounts", "banking.admin_accounts"),
        ("Open account", "banking.open_account"),
        ("Transfers", "banking.transfer_internal"),
        ("External transfer", "banking.transfer_external"),
        ("Tickets", "support.tickets"),
        ("Audit logs", "audit.logs"),
        ("Transactions", "audit.transactions"),
    ),
}


def navigation_for(role: str) -> list[tuple[str, str]]:
    """(label, endpoint) pairs for `role`, leaving out endpoints this app does not serve yet."""
    served = current_app.view_functions
    return [(label, endpoint) for label, endpoint in NAVIGATION.get(role, ()) if endpoint in served]
