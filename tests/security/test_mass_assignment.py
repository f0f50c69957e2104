"""Mass assignment: extra fields posted on every form must change nothing (CWE-915; OWASP ASVS
5.1.2, 4.1.3).

Every form of the app (the list is checked against `app.url_map`, so a new POST route without a
case fails `test_every_post_route_has_a_mass_assignment_case`) is submitted with its own,
valid fields plus one extra field for every column name the models have (and `owner_user_id`,
`user_id`, `failed_logins`), each holding a hostile value valid for its column: `role=admin`,
`balance=999999.99`, the victim's id in every owner/customer/author field, `status=closed`, a
chosen `password_hash` and `session_token`, and so on. The submission must still succeed, and
reading every row of every table back must show only the changes the form is for: no column
outside the form's purpose changed, no row added beyond the form's own, no hostile value stored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace

import pyotp
import pytest
from sqlalchemy import BigInteger, Boolean, DateTime, Integer, String, Text

from app.auth.services import verify_password
from app.extensions import db
from app.models import Cents, UTCDateTime, User
from app.support import services as support_services
from tests.conftest import build_app
from tests.factories import DEFAULT_PASSWORD, issued_key
from tests.security.attack_data import (
    RowChanges,
    assert_database_intact,
    make_account,
    make_user,
    module_app,
    row_changes,
    rows_of,
    signed_in,
    unique_email,
)

NEW_PASSWORD = "seven brass owls guard the winter orchard"
HOSTILE_TOKEN = "mallory-chosen-session-token"
HOSTILE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$bWFsbG9yeXNhbHQ$bWFsbG9yeWhhc2htYWxsb3J5aGFzaA"
EXTRA_NAMES = ("owner_user_id", "user_id", "failed_logins", "is_admin")


@pytest.fixture(scope="module")
def world(test_backend):
    """Staff, and a victim customer whose ids every hostile owner/customer field names."""
    with module_app(test_backend) as app:
        admin, support = make_user(app, "admin"), make_user(app, "support")
        victim = make_user(app, "customer")
        victim_account = make_account(app, victim, "50.00")
        with app.app_context():
            victim_ticket = support_services.create_ticket(db.session.get(User, victim.id), "Victim's", "Private").id
        yield SimpleNamespace(app=app, admin=admin, support=support, victim=victim, victim_account=victim_account,
                              victim_ticket=victim_ticket, clients={"admin": signed_in(app, admin),
                                                                    "support": signed_in(app, support)})


# ---------------------------------------------------------------------------------------------
# The hostile extra fields: one per column name of the models
# ---------------------------------------------------------------------------------------------


def _column_names() -> dict[str, object]:
    """Every column name of every model, with one of its columns (for its type and foreign key)."""
    columns = {}
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            columns.setdefault(column.name, column)
    return columns


def hostile_fields(world, **overrides) -> dict[str, str]:
    """A hostile value for every column name (and EXTRA_NAMES), valid for the column's type, so a
    form that took it would store it silently rather than fail."""
    by_target = {"user": str(world.victim.id), "account": str(world.victim_account.id),
                 "support_ticket": str(world.victim_ticket)}
    values: dict[str, str] = {}
    for name, column in _column_names().items():
        target = next((fk.column.table.name for fk in column.foreign_keys), None)
        kind = column.type
        if target in by_target:
            values[name] = by_target[target]
        elif isinstance(kind, Cents):
            values[name] = "999999.99"
        elif isinstance(kind, Boolean):
            values[name] = "true"
        elif isinstance(kind, (UTCDateTime, DateTime)):
            values[name] = "2001-01-01T00:00:00+00:00"
        elif isinstance(kind, (Integer, BigInteger)):
            values[name] = "424242"
        elif isinstance(kind, (String, Text)):
            values[name] = f"mallory-{name}"
    values |= {
        "role": "admin", "is_active": "true", "must_change_password": "true", "status": "closed",
        "type": "savings", "email": "mallory@example.com", "full_name": "Mallory", "phone": "+1 555 6666",
        "account_number": world.victim_account.account_number, "password_hash": HOSTILE_HASH,
        "session_token": HOSTILE_TOKEN, "owner_user_id": str(world.victim.id), "user_id": str(world.victim.id),
        "failed_logins": "0", "is_admin": "true", "amount": "999.99", "reference": "TX-MALLORY0000001",
        "mfa_secret": "v1.mallory", "description": "mallory was here",
    }
    return values | overrides


# ---------------------------------------------------------------------------------------------
# The cases: one per form (and per role where the form differs by role)
# ---------------------------------------------------------------------------------------------


@dataclass
class Submission:
    client: object
    path: str
    data: dict                       # the form's own fields
    allowed: dict[str, set[str]]     # table -> columns the form may change
    added: dict[str, int] = field(default_factory=dict)    # table -> rows the form adds
    removed: set[str] = field(default_factory=set)          # tables the form may delete rows from
    check: Callable[[RowChanges], None] = lambda changes: None
    hostile: dict[str, str] = field(default_factory=dict)   # per-case overrides of hostile values


def _register(world):
    email = unique_email("mass")

    def check(changes):
        [user] = changes.added["user"]
        assert (user["email"], user["role"], user["is_active"], user["must_change_password"]) == (
            email, "customer", True, False)
        with world.app.app_context():
            assert verify_password(user["password_hash"], NEW_PASSWORD)
        assert user["mfa_secret"] is None and user["id"] != 424242

    return Submission(world.app.test_client(), "/auth/register",
                      {"full_name": "Mass Assign", "email": email, "phone": "+1 555 0100",
                       "password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD},
                      allowed={}, added={"user": 1}, check=check)


def _login(world):
    user = make_user(world.app, "customer")
    return Submission(world.app.test_client(), "/auth/login", {"email": user.email, "password": DEFAULT_PASSWORD},
                      allowed={}, removed={"login_attempt"})


def _logout(world):
    user = make_user(world.app, "customer")

    def check(changes):
        [columns] = changes.changed["user"].values()
        assert columns["session_token"][1] != HOSTILE_TOKEN

    return Submission(signed_in(world.app, user), "/auth/logout", {}, allowed={"user": {"session_token"}}, check=check)


def _profile(world):
    user = make_user(world.app, "customer")
    return Submission(signed_in(world.app, user), "/auth/profile", {"full_name": "New Name", "phone": "+1 555 0199"},
                      allowed={"user": {"full_name", "phone"}})


def _change_password(world):
    user = make_user(world.app, "customer")

    def check(changes):
        [columns] = changes.changed["user"].values()
        with world.app.app_context():
            assert verify_password(columns["password_hash"][1], NEW_PASSWORD)

    return Submission(signed_in(world.app, user), "/auth/change-password",
                      {"current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD,
                       "confirm_password": NEW_PASSWORD},
                      allowed={"user": {"password_hash", "must_change_password", "session_token"}}, check=check)


def _opened(owner_id: int, deposit: str):
    def check(changes):
        [account] = changes.added["account"]
        assert (account["owner_id"], account["balance"], account["status"], account["type"]) == (
            owner_id, Decimal(deposit), "active", "checking")
        [entry] = changes.added["transaction"]
        assert (entry["account_id"], entry["amount"], entry["type"]) == (account["id"], Decimal(deposit), "credit")
    return check


def _open_account_customer(world):
    user = make_user(world.app, "customer")
    return Submission(signed_in(world.app, user), "/banking/open-account",
                      {"type": "checking", "opening_balance": "10.00"},
                      allowed={}, added={"account": 1, "transaction": 1}, check=_opened(user.id, "10.00"),
                      hostile={"status": "frozen"})


def _open_account_admin(world):
    chosen = make_user(world.app, "customer")
    return Submission(world.clients["admin"], "/banking/open-account",
                      {"type": "checking", "opening_balance": "10.00", "owner_user_id": str(chosen.id)},
                      allowed={}, added={"account": 1, "transaction": 1}, check=_opened(chosen.id, "10.00"),
                      hostile={"status": "frozen"})


def _moved(source_id: int, target_id: int, amount: str):
    def check(changes):
        moved = {key[0]: columns["balance"] for key, columns in changes.changed["account"].items()}
        assert set(moved) == {source_id, target_id}
        assert moved[source_id][0] - moved[source_id][1] == Decimal(amount)
        assert moved[target_id][1] - moved[target_id][0] == Decimal(amount)
        entries = {(row["account_id"], row["type"], row["amount"]) for row in changes.added["transaction"]}
        assert entries == {(source_id, "debit", Decimal(amount)), (target_id, "credit", Decimal(amount))}
    return check


def _transfer(world, kind: str, acting: str):
    owner = make_user(world.app, "customer")
    source = make_account(world.app, owner, "40.00")
    target = make_account(world.app, owner if kind == "internal" else make_user(world.app, "customer"), "0.00")
    client = world.clients["admin"] if acting == "admin" else signed_in(world.app, owner)
    actor_id = world.admin.id if acting == "admin" else owner.id
    data = {"source_account": str(source.id), "amount": "3.00", "description": "rent",
            "idempotency_key": issued_key(world.app, actor_id)}
    if kind == "internal":
        data["target_account"] = str(target.id)
    else:
        data["target_account_number"] = target.account_number
    query = f"?owner_user_id={owner.id}" if acting == "admin" else ""
    return Submission(client, f"/banking/transfer/{kind}{query}", data, allowed={"account": {"balance"}},
                      added={"transaction": 2}, check=_moved(source.id, target.id, "3.00"),
                      hostile={"status": "frozen"})


def _admin_user_edit(world):
    user = make_user(world.app, "customer")
    email = unique_email("edited")

    def check(changes):
        [columns] = changes.changed["user"].values()
        assert columns["role"][1] == "support" and columns["email"][1] == email
        assert columns["session_token"][1] != HOSTILE_TOKEN

    return Submission(world.clients["admin"], f"/banking/admin/users/{user.id}/edit",
                      {"full_name": "Edited", "email": email, "phone": "+1 555 0142", "role": "support",
                       "is_active": "y"},
                      allowed={"user": {"full_name", "email", "phone", "role", "is_active", "session_token"}},
                      check=check)


def _status_change(world, action: str):
    owner = make_user(world.app, "customer")
    account = make_account(world.app, owner, "20.00", status="active" if action == "freeze" else "frozen")
    wanted = "frozen" if action == "freeze" else "active"

    def check(changes):
        previous = "active" if wanted == "frozen" else "frozen"
        assert changes.changed["account"] == {(account.id,): {"status": (previous, wanted)}}

    return Submission(world.clients["admin"], f"/banking/admin/accounts/{account.id}/{action}", {},
                      allowed={"account": {"status"}}, check=check)


def _create_ticket(world):
    user = make_user(world.app, "customer")

    def check(changes):
        [ticket] = changes.added["support_ticket"]
        assert (ticket["customer_id"], ticket["status"], ticket["last_updated_by_id"], ticket["subject"]) == (
            user.id, "open", None, "Card lost")

    return Submission(signed_in(world.app, user), "/support/create",
                      {"subject": "Card lost", "description": "Block it"},
                      allowed={}, added={"support_ticket": 1}, check=check, hostile={"status": "resolved"})


def _update_ticket(world):
    customer = make_user(world.app, "customer")
    with world.app.app_context():
        ticket = support_services.create_ticket(db.session.get(User, customer.id), "Original", "Original text").id

    def check(changes):
        [columns] = changes.changed["support_ticket"].values()
        assert columns["status"][1] == "in_progress" and columns["last_updated_by_id"][1] == world.support.id
        [note] = changes.added["ticket_note"]
        assert (note["ticket_id"], note["author_id"], note["body"]) == (ticket, world.support.id, "On it")

    return Submission(world.clients["support"], f"/support/tickets/{ticket}",
                      {"status": "in_progress", "note": "On it"},
                      allowed={"support_ticket": {"status", "updated_at", "last_updated_by_id"}},
                      added={"ticket_note": 1}, check=check)


MFA_COLUMNS = {"mfa_secret", "mfa_enrolled_at", "mfa_last_step", "session_token"}


def _totp(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


def _mfa_setup(world):
    user = make_user(world.app, "customer")
    client = signed_in(world.app, user)
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    secret = re.search(r'id="mfa-key">([^<]+)<', page).group(1).replace(" ", "")

    def check(changes):
        [columns] = changes.changed["user"].values()
        assert columns["mfa_secret"][1] not in (None, "v1.mallory") and columns["session_token"][1] != HOSTILE_TOKEN

    return Submission(client, "/auth/mfa/setup", {"code": _totp(secret)}, allowed={"user": MFA_COLUMNS}, check=check)


def _enrolled_user(world):
    """A customer with two-step sign-in on (through the routes); returns (user, key)."""
    user = make_user(world.app, "customer")
    client = signed_in(world.app, user)
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    secret = re.search(r'id="mfa-key">([^<]+)<', page).group(1).replace(" ", "")
    assert client.post("/auth/mfa/setup", data={"code": _totp(secret)}).status_code == 302
    return user, secret


def _mfa_verify(world):
    user, secret = _enrolled_user(world)
    client = world.app.test_client()
    assert client.post("/auth/login", data={"email": user.email, "password": DEFAULT_PASSWORD}).status_code == 302
    return Submission(client, "/auth/mfa", {"code": _totp(secret, 30)}, allowed={"user": {"mfa_last_step"}},
                      removed={"login_attempt"})


def _mfa_disable(world):
    user, secret = _enrolled_user(world)
    client = world.app.test_client()
    client.post("/auth/login", data={"email": user.email, "password": DEFAULT_PASSWORD})
    assert client.post("/auth/mfa", data={"code": _totp(secret, 30)}).status_code == 302

    def check(changes):
        [columns] = changes.changed["user"].values()
        assert columns["mfa_secret"][1] is None and columns["session_token"][1] != HOSTILE_TOKEN

    return Submission(client, "/auth/mfa/disable", {"password": DEFAULT_PASSWORD}, allowed={"user": MFA_COLUMNS},
                      check=check)


# endpoint -> {case id: set-up}
CASES: dict[str, dict[str, Callable]] = {
    "auth.register": {"register": _register},
    "auth.login": {"login": _login},
    "auth.logout": {"logout": _logout},
    "auth.profile": {"profile": _profile},
    "auth.change_password": {"change_password": _change_password},
    "auth.mfa_setup": {"mfa_setup": _mfa_setup},
    "auth.mfa_verify": {"mfa_verify": _mfa_verify},
    "auth.mfa_disable": {"mfa_disable": _mfa_disable},
    "banking.open_account": {"open_account_customer": _open_account_customer,
                             "open_account_admin": _open_account_admin},
    "banking.transfer_internal": {"transfer_internal_customer": lambda w: _transfer(w, "internal", "customer"),
                                  "transfer_internal_admin": lambda w: _transfer(w, "internal", "admin")},
    "banking.transfer_external": {"transfer_external_customer": lambda w: _transfer(w, "external", "customer"),
                                  "transfer_external_admin": lambda w: _transfer(w, "external", "admin")},
    "banking.admin_user_edit": {"admin_user_edit": _admin_user_edit},
    "banking.admin_freeze": {"admin_freeze": lambda w: _status_change(w, "freeze")},
    "banking.admin_unfreeze": {"admin_unfreeze": lambda w: _status_change(w, "unfreeze")},
    "support.create_ticket": {"create_ticket": _create_ticket},
    "support.ticket_detail": {"update_ticket": _update_ticket},
}
ALL_CASES = {case_id: setup for cases in CASES.values() for case_id, setup in cases.items()}


def _post_endpoints() -> set[str]:
    application = build_app(":memory:")
    return {rule.endpoint for rule in application.url_map.iter_rules() if "POST" in rule.methods}


def test_every_post_route_has_a_mass_assignment_case():
    """Mass assignment (CWE-915) coverage: does every POST route of the app (from its url_map)
    have at least one case below, so a new form can't escape this check unnoticed?"""
    missing = _post_endpoints() - {endpoint for endpoint, cases in CASES.items() if cases}
    assert not missing, f"POST routes without a mass-assignment case: {sorted(missing)}"


def _assert_hostile_values_not_stored(changes: RowChanges, hostile: dict[str, str], own_fields: set[str]) -> None:
    rows = [(table, row) for table, added in changes.added.items() for row in added]
    rows += [(table, {name: new for name, (_old, new) in columns.items()})
             for table, changed in changes.changed.items() for columns in changed.values()]
    for table, row in rows:
        for name, value in row.items():
            if name not in hostile or name in own_fields or value is None or isinstance(value, bool):
                continue  # booleans: each case's own check says what they must be
            if isinstance(value, datetime):
                assert value.year != 2001, f"{table}.{name} took the posted timestamp"
            else:
                assert str(value) != hostile[name], f"{table}.{name} took the posted value {hostile[name]!r}"


@pytest.mark.parametrize("case_id", list(ALL_CASES))
def test_extra_fields_change_nothing_but_what_the_form_is_for(world, case_id):
    """Mass assignment (CWE-915): when this form is posted with its own valid fields plus a
    hostile value for every column of every model (role, is_active, balance, owner_id, status,
    account_number, password_hash, session_token, ids, timestamps, ...), does it still succeed and
    change only the columns it exists to change, storing none of the extra values?"""
    app = world.app
    submission = ALL_CASES[case_id](world)
    hostile = hostile_fields(world, **submission.hostile)
    extras = {name: value for name, value in hostile.items() if name not in submission.data}
    before = rows_of(app)

    response = submission.client.post(submission.path, data=submission.data | extras)

    assert response.status_code == 302, response.get_data(as_text=True)[:1500]
    changes = row_changes(before, rows_of(app))
    for table, columns in changes.changed.items():
        unexpected = changes.changed_columns(table) - submission.allowed.get(table, set())
        assert not unexpected, f"{table} columns changed that this form must not change: {sorted(unexpected)}"
    assert {t: len(rows) for t, rows in changes.added.items()} == submission.added, f"rows added: {changes.added}"
    assert set(changes.removed) <= submission.removed, f"rows removed: {changes.removed}"
    _assert_hostile_values_not_stored(changes, hostile, set(submission.data))
    submission.check(changes)
    assert_database_intact(app)
