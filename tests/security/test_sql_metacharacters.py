"""SQL metacharacters in every filter, search and sign-in/registration field (CWE-89; OWASP ASVS
5.3.4, 5.3.5).

Each value of attack_data.SQL_PAYLOADS (quotes, a tautology, a stacked DROP, LIKE wildcards and
escape, a parenthesis, a NUL byte, look-alike quotes) — and a tautology appended to a valid
value — goes into one parameter. The answer must be the designed one (a 400 with a message for
a malformed filter, an empty list for a malformed page number, 404 for an unknown customer, the
generic sign-in failure), never a 500; no row the viewer could not already see may appear; and
the database must be untouched afterwards: every table still there, every row of every table
the same (but the audit rows a visit writes), the money invariants (`flask verify-ledger`) and
the audit hash chain (`flask verify-audit`) holding.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from app.auth.services import attempted_email, normalize_email
from app.extensions import db
from app.models import User
from app.support import services as support_services
from tests.factories import issued_key
from tests.security.attack_data import (
    SQL_PAYLOADS,
    add_credits,
    assert_database_intact,
    audit_head,
    audit_rows_since,
    error_messages,
    field_errors,
    make_account,
    make_user,
    module_app,
    row_changes,
    rows_of,
    signed_in,
    table_rows,
    unique_email,
    unique_ip,
)

STRONG_PASSWORD = "violet lanterns drift over quiet harbours"
AFTER_VALID = "after_valid_value"  # the valid value of the parameter, then `' OR '1'='1`
PAYLOAD_IDS = [*SQL_PAYLOADS, AFTER_VALID]


@pytest.fixture(scope="module")
def world(test_backend):
    """Two customers with entries between them, tickets, and one signed-in client per role."""
    with module_app(test_backend) as app:
        admin, support, auditor = (make_user(app, role) for role in ("admin", "support", "auditor"))
        owner, other = make_user(app, "customer"), make_user(app, "customer")
        mine = make_account(app, owner, "500.00")
        theirs = make_account(app, other, "300.00")
        add_credits(app, mine, ["12.00", "13.00"])
        clients = {"admin": signed_in(app, admin), "support": signed_in(app, support),
                   "auditor": signed_in(app, auditor), "owner": signed_in(app, owner)}
        for sender, client, source, target, amount in ((owner, clients["owner"], mine, theirs, "5.00"),
                                                       (other, signed_in(app, other), theirs, mine, "7.00")):
            response = client.post("/banking/transfer/external", data={
                "source_account": str(source.id), "target_account_number": target.account_number, "amount": amount,
                "description": "between customers", "idempotency_key": issued_key(app, sender.id)})
            assert response.status_code == 302
        with app.app_context():
            for customer in (owner, other):
                support_services.create_ticket(db.session.get(User, customer.id), "A question", "Details")
        yield SimpleNamespace(app=app, admin=admin, auditor=auditor, owner=owner, other=other, mine=mine,
                              theirs=theirs, clients=clients)


# ---------------------------------------------------------------------------------------------
# Query-string filters and searches
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    viewer: str
    path: str
    param: str
    status: int          # the designed answer to a malformed value
    valid: str           # a well-formed value (for the appended tautology); "{mine}" etc. filled in


TARGETS = [
    *(Target("owner", "/banking/transactions", p, 400, v) for p, v in (
        ("date_from", "2024-01-01"), ("date_to", "2099-01-01"), ("type", "debit"), ("min_amount", "1.00"),
        ("max_amount", "100.00"))),
    Target("owner", "/banking/transactions", "page", 200, "1"),
    *(Target("auditor", "/audit/logs", p, 400, v) for p, v in (
        ("action", "LOGIN_SUCCESS"), ("user_id", "{owner_id}"), ("date_from", "2024-01-01"),
        ("date_to", "2099-01-01"), ("before", "100000"))),
    *(Target("auditor", "/audit/transactions", p, 400, v) for p, v in (
        ("account_number", "{mine}"), ("before", "100000"), ("date_from", "2024-01-01"), ("date_to", "2099-01-01"),
        ("type", "credit"), ("min_amount", "1.00"), ("max_amount", "100.00"))),
    Target("admin", "/banking/admin/accounts", "account_number", 400, "{mine}"),
    Target("admin", "/banking/admin/accounts", "page", 200, "1"),
    Target("admin", "/banking/admin/users", "page", 200, "1"),
    Target("support", "/support/tickets", "status", 400, "open"),
    Target("support", "/support/tickets", "page", 200, "1"),
    Target("owner", "/support/my-tickets", "page", 200, "1"),
    Target("admin", "/banking/transfer/internal", "owner_user_id", 404, "{owner_id}"),
    Target("admin", "/banking/transfer/external", "owner_user_id", 404, "{owner_id}"),
]


def _valid(world, target: Target) -> str:
    return target.valid.format(mine=world.mine.account_number, owner_id=world.owner.id)


def _value(world, target_valid: str, payload_id: str) -> str:
    return target_valid + "' OR '1'='1" if payload_id == AFTER_VALID else SQL_PAYLOADS[payload_id]


def _target_id(target: Target) -> str:
    return f"{target.path.strip('/').replace('/', '_')}-{target.param}"


def _assert_untouched(app, before, head, allowed_actions: set[str]) -> None:
    changes = row_changes(before, rows_of(app))
    assert changes.empty, f"the database changed: {changes}"
    written = {action for action, _user, _details in audit_rows_since(app, head)}
    assert written <= allowed_actions, f"unexpected audit rows: {written - allowed_actions}"
    assert_database_intact(app)


@pytest.mark.parametrize("payload_id", PAYLOAD_IDS)
@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_metacharacters_in_a_filter_are_refused_and_change_nothing(world, target, payload_id):
    """SQL injection (CWE-89): when this filter or search parameter holds SQL metacharacters, is
    the answer the designed one (400 with a message, an empty page, or 404) rather than a 500,
    does no row appear that the viewer did not ask for (a `%` search lists nothing, a customer
    sees no one else's entries), and is the database unchanged (tables, rows, ledger, audit chain)?"""
    app = world.app
    value = _value(world, _valid(world, target), payload_id)
    before, head = rows_of(app), audit_head(app)

    response = world.clients[target.viewer].get(target.path, query_string={target.param: value})

    assert response.status_code == target.status, response.get_data(as_text=True)[:500]
    if target.status == 400:
        assert error_messages(response), "a refused filter must say why"
    assert table_rows(response) == [], "rows were listed for a malformed filter"
    _assert_untouched(app, before, head, {"AUDIT_VIEWED"} if target.path.startswith("/audit/") else set())


@pytest.mark.parametrize("target", TARGETS, ids=_target_id)
def test_control_the_valid_value_of_each_filter_is_answered(world, target):
    """SQL injection (CWE-89) control: does each attacked parameter work with a well-formed value
    (200, or the designed page), and does a customer then see only their own entries — so that
    "nothing listed" above means refused, not broken?"""
    response = world.clients[target.viewer].get(target.path, query_string={target.param: _valid(world, target)})
    assert response.status_code == 200
    if target.path == "/banking/transactions":
        accounts = {row[1] for row in table_rows(response)}  # the Account column
        assert accounts == {world.mine.account_number}, "the owner should see their own entries, and only those"


@pytest.mark.parametrize("search", ["%", "_", "%%", "1%", "_" * 12, "\\%", "[0-9]%"])
def test_like_wildcards_in_the_account_search_never_list_every_account(world, search):
    """SQL injection (CWE-89) via LIKE wildcards: is an admin's account-number search holding `%`,
    `_` or an escape refused with a message, instead of matching every account?"""
    response = world.clients["admin"].get("/banking/admin/accounts", query_string={"account_number": search})
    assert response.status_code == 400
    assert error_messages(response)
    assert table_rows(response) == []


def test_control_account_search_by_digits_lists_only_matching_accounts(world):
    """SQL injection (CWE-89) control: does a digits-only search list exactly the accounts whose
    number contains those digits (so the search the wildcards target really filters)?"""
    digits = world.mine.account_number[-6:]
    response = world.clients["admin"].get("/banking/admin/accounts", query_string={"account_number": digits})
    numbers = [row[0] for row in table_rows(response)]
    assert numbers and all(digits in number for number in numbers)
    assert world.theirs.account_number not in numbers or digits in world.theirs.account_number


# ---------------------------------------------------------------------------------------------
# Sign-in, registration and the account-number lookup of external transfers
# ---------------------------------------------------------------------------------------------


LOGIN_VALUES = {
    **SQL_PAYLOADS,
    "comment_after_victim_email": "{victim}'--",
    "tautology_after_victim_email": "{victim}' OR '1'='1",
}


@pytest.mark.parametrize("payload_id", list(LOGIN_VALUES))
def test_metacharacters_in_the_login_email_never_sign_anyone_in(world, payload_id):
    """SQL injection (CWE-89) against authentication: does a sign-in whose email holds SQL
    metacharacters (alone, or after a real user's address to comment out the password check)
    fail with the generic 400, sign nobody in, store the attempt as the throttle counts it (the
    normalized address, or for text that is none a fingerprint of it), and leave the rest
    of the database unchanged? (A control character such as NUL, which PostgreSQL can't store,
    is refused by the form before any lookup: a 400 that records nothing.)"""
    app = world.app
    value = LOGIN_VALUES[payload_id].format(victim=world.owner.email)
    before, head = rows_of(app), audit_head(app)
    client = app.test_client()

    response = client.post("/auth/login", data={"email": value, "password": "not anybody's password"},
                           environ_base={"REMOTE_ADDR": unique_ip()})

    assert response.status_code == 400
    assert error_messages(response)
    assert client.get("/banking/dashboard").status_code == 302, "the attacker got a session"
    changes = row_changes(before, rows_of(app))
    if "\x00" in value:
        assert "Remove control characters" in response.get_data(as_text=True)
        assert not changes.added and not changes.changed and not changes.removed, changes
        assert audit_rows_since(app, head) == []
        return
    assert set(changes.added) == {"login_attempt"} and not changes.changed and not changes.removed, changes
    [attempt] = changes.added["login_attempt"]
    with app.test_request_context():
        recorded = attempted_email(value)
    assert attempt["email"] == recorded, "the attempt was not stored as the throttle counts it"
    if "@" not in recorded:  # text that is no address: kept only as a fingerprint
        assert value.strip().lower() not in attempt["email"]
    assert [action for action, _u, _d in audit_rows_since(app, head)] == ["LOGIN_FAILURE"]
    assert_database_intact(app)


def _register(app, **fields):
    data = {"full_name": "Sql Tester", "email": unique_email("sql"), "phone": "+1 555 0100",
            "password": STRONG_PASSWORD, "confirm_password": STRONG_PASSWORD} | fields
    data["confirm_password"] = data["password"]
    return app.test_client().post("/auth/register", data=data), data


_numbers = itertools.count(1)
REGISTER_FIELDS = {
    "full_name": lambda payload: "Mallory " + payload,
    "email": lambda payload: f"sql{next(_numbers)}{payload}@example.com",
    "phone": lambda payload: "+1 555 0100" + payload,
    "password": lambda payload: STRONG_PASSWORD + payload,
}


@pytest.mark.parametrize("payload_id", PAYLOAD_IDS[:-1])
@pytest.mark.parametrize("field_name", list(REGISTER_FIELDS))
def test_metacharacters_in_registration_are_stored_literally_or_refused(world, field_name, payload_id):
    """SQL injection (CWE-89) through registration: when a field holds SQL metacharacters, is
    the registration either refused with a form error (400), storing nothing, or accepted with
    the text stored exactly as typed — never a 500, never any other row changed?"""
    app = world.app
    value = REGISTER_FIELDS[field_name](SQL_PAYLOADS[payload_id])
    before, head = rows_of(app), audit_head(app)

    response, data = _register(app, **{field_name: value})

    assert response.status_code in (302, 400), response.get_data(as_text=True)[:500]
    changes = row_changes(before, rows_of(app))
    if response.status_code == 400:
        assert field_errors(response, field_name), "the refusal must name the field"
        assert changes.empty, f"a refused registration changed the database: {changes}"
        assert audit_rows_since(app, head) == []
    else:
        assert set(changes.added) == {"user"} and not changes.changed and not changes.removed, changes
        [user] = changes.added["user"]
        stored = {"full_name": user["full_name"], "email": user["email"], "phone": user["phone"]}
        expected = {"full_name": data["full_name"], "email": normalize_email(data["email"]), "phone": data["phone"]}
        assert stored == expected, "the text was not stored as typed"
        assert user["role"] == "customer"
        assert [action for action, _u, _d in audit_rows_since(app, head)] == ["REGISTER_SUCCESS"]
        if field_name == "password":
            assert signed_in(app, SimpleNamespace(email=data["email"]), password=value)
    assert_database_intact(app)


@pytest.mark.parametrize("payload_id", PAYLOAD_IDS)
def test_metacharacters_in_the_transfer_target_number_move_no_money(world, payload_id):
    """SQL injection (CWE-89) through the account lookup of an external transfer: is a target
    account number holding SQL metacharacters a form error (400) that moves no money and
    changes no row (only a TRANSFER_FAILED audit row is written)?"""
    app = world.app
    value = _value(world, world.theirs.account_number, payload_id)
    before, head = rows_of(app), audit_head(app)

    response = world.clients["owner"].post("/banking/transfer/external", data={
        "source_account": str(world.mine.id), "target_account_number": value, "amount": "1.00",
        "description": "", "idempotency_key": issued_key(app, world.owner.id)})

    assert response.status_code == 400
    assert field_errors(response, "target_account_number")
    _assert_untouched(app, before, head, {"TRANSFER_FAILED"})
    assert [action for action, _u, _d in audit_rows_since(app, head)] == ["TRANSFER_FAILED"]


def test_verify_ledger_and_verify_audit_commands_pass_after_the_attacks(world):
    """SQL injection (CWE-89) aftermath: after every case of this module has run against the same
    database, do the `flask verify-ledger` and `flask verify-audit` commands themselves still pass?"""
    runner = world.app.test_cli_runner()
    ledger = runner.invoke(args=["verify-ledger"])
    audit = runner.invoke(args=["verify-audit"])
    assert ledger.exit_code == 0, ledger.output
    assert audit.exit_code == 0, audit.output
