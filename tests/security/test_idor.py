"""Attack suite: insecure direct object references (CWE-639, authorization bypass through a
user-controlled key) on every route that takes an id, and every form field or query value that
carries one.

DESIGN.md section 6: the role is checked before the object (403 and an ACCESS_DENIED row), an
object that is not the user's is a 404 like one that doesn't exist; section 8: a select value
that is not one of the listed accounts is a form error (400), `owner_user_id` is ignored for
anyone but an admin. Whatever the answer, balances, ledger and every other row stay as they were.

The id-taking routes come from the app's url_map and the id-carrying fields from the app's
forms: a new one without a case here fails test_every_route_with_an_argument_has_a_case or
test_every_id_carrying_form_field_has_a_case.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms.fields.core import UnboundField

from app.extensions import db
from app.models import Account, Transaction
from tests.factories import issued_key
from tests.security.attack_support import (
    PRINCIPALS,
    REALISTIC_FORMS,
    Sessions,
    assert_unchanged,
    audit_since,
    last_audit_id,
    path_for,
    populated_app,
    route_app,
    rules_with_arguments,
    sign_in,
    snapshot,
)

INTERNAL = "/banking/transfer/internal"
EXTERNAL = "/banking/transfer/external"
NOT_AN_OBJECT = "a file name, not an object id"


@pytest.fixture(scope="module")
def world(test_backend):
    with populated_app(test_backend) as populated:
        yield populated


@pytest.fixture(scope="module")
def sessions(world):
    return Sessions(world)


# --- routes with an id in the path --------------------------------------------------------------

# rule -> the roles DESIGN.md section 6 lets through (the object named is, in the World: a
# customer's user record, the victim's active account, the victim's frozen account, the victim's
# ticket). Written here, not read from the code, so a route opened to more roles is caught.
ID_ROUTES = {
    "/banking/admin/users/<id:user_id>/edit": ("admin",),
    "/banking/admin/accounts/<id:account_id>/freeze": ("admin",),
    "/banking/admin/accounts/<id:account_id>/unfreeze": ("admin",),
    "/support/tickets/<id:ticket_id>": ("support", "admin"),
    "/static/<path:filename>": NOT_AN_OBJECT,
    "/bootstrap/static/<path:filename>": NOT_AN_OBJECT,
}


def test_every_route_with_an_argument_has_a_case():
    """IDOR (CWE-639), coverage: does ID_ROUTES name every route of the url_map that takes an
    argument (and no other), so a new object route is attacked too?"""
    assert sorted(ID_ROUTES) == rules_with_arguments()


def _denied_cases() -> list[tuple[str, str, str]]:
    """(rule, method, principal) for every id route, method and principal its role check refuses."""
    cases = []
    for rule in sorted(r for r, allowed in ID_ROUTES.items() if allowed != NOT_AN_OBJECT):
        allowed = ID_ROUTES[rule]
        methods = sorted(next(r.methods for r in route_app().url_map.iter_rules() if r.rule == rule) - {"HEAD", "OPTIONS"})
        cases += [(rule, method, principal) for method in methods for principal in PRINCIPALS if principal not in allowed]
    return cases


@pytest.mark.parametrize(("rule", "method", "principal"), _denied_cases())
def test_object_route_refuses_a_role_it_does_not_serve_with_a_real_id(world, sessions, rule, method, principal):
    """IDOR (CWE-639): with the real id of a real object (the victim's account or ticket, a
    customer's user record — the customer's own included), does a principal whose role the
    route does not serve get the login redirect (anonymous) or 403 and an ACCESS_DENIED row,
    never the object, and change nothing?"""
    client = sessions.client(principal)
    form = REALISTIC_FORMS.get(rule, lambda w, actor: {})(world, world.user(principal)) if method == "POST" else None
    before, audit_head = snapshot(world.app), last_audit_id(world.app)

    response = client.open(path_for(rule, world), method=method, data=form)

    page = response.get_data(as_text=True)
    if principal == "anonymous":
        assert response.status_code == 302
        assert urlsplit(response.headers["Location"]).path == "/auth/login"
    else:
        assert response.status_code == 403
        assert [row.action for row in audit_since(world.app, audit_head)] == ["ACCESS_DENIED"]
    for secret in ("Card lost abroad", "We blocked the card", world.accounts["victim_checking"].account_number):
        assert secret not in page
    assert_unchanged(world.app, before, f"{method} {rule} as {principal}")


# Ids that no row has: past the last row, past PostgreSQL's 32-bit INTEGER, the largest id the
# <id:> converter accepts (2**63 - 1), just beyond it, and zero.
MISSING_IDS = (999_999, 2**31, 2**63 - 1, 2**63, 0)


@pytest.mark.parametrize("rule", sorted(r for r, allowed in ID_ROUTES.items() if allowed != NOT_AN_OBJECT))
def test_object_route_answers_404_for_an_id_that_is_not_there(world, rule):
    """IDOR (CWE-639), enumeration: for a role the route serves, is every id no object has
    (past the last row, past a 32-bit integer, the largest 64-bit id, beyond it, zero) a plain
    404 — never a 500 that tells ids apart — and nothing changes?

    FINDING (open when written), PostgreSQL only: the id columns are 32-bit INTEGER there, but
    the <id:> converter (app/routing.py) and get_ticket accept ids up to 2**63 - 1, so any id
    from 2**31 on reaches the query and fails with "integer out of range": a 500, not a 404.
    """
    client = sign_in(world, ID_ROUTES[rule][-1])
    real = path_for(rule, world)
    method = "POST" if rule.endswith(("freeze", "unfreeze")) else "GET"
    before = snapshot(world.app)

    answers = {}
    for missing in MISSING_IDS:
        answers[missing] = client.open(re.sub(r"/\d+(/|$)", f"/{missing}\\1", real, count=1), method=method).status_code

    assert answers == dict.fromkeys(MISSING_IDS, 404), f"FINDING where not 404: {answers}"
    assert_unchanged(world.app, before, f"missing ids on {rule}")


# Query values that carry an id, each as the principal who may use it, with an id no row has.
QUERY_IDS = {
    "internal transfer ?owner_user_id= (admin)": ("admin", INTERNAL, "owner_user_id", {404}),
    "external transfer ?owner_user_id= (admin)": ("admin", EXTERNAL, "owner_user_id", {404}),
    "audit log ?user_id= (auditor)": ("auditor", "/audit/logs", "user_id", {200}),
    "audit log ?before= (auditor)": ("auditor", "/audit/logs", "before", {200}),
    "all transactions ?before= (auditor)": ("auditor", "/audit/transactions", "before", {200}),
}


@pytest.mark.parametrize("missing", [999_999, 2**31, 10**17], ids=["past the last row", "2**31", "10**17"])
@pytest.mark.parametrize("case", QUERY_IDS.values(), ids=QUERY_IDS.keys())
def test_query_id_that_is_not_there_is_answered_plainly(world, sessions, case, missing):
    """IDOR (CWE-639), enumeration through query values: is an id that no row has, given where a
    query value carries one (whose accounts an admin's transfer lists; the auditor's user filter
    and page cursors), answered as designed — 404 for an unknown customer, an empty or older
    page for a filter or cursor — and never a 500?

    FINDING (open when written), PostgreSQL only, for ids from 2**31 on: the values are accepted
    up to 17 or 18 digits and compared with 32-bit INTEGER columns ("integer out of range", 500).
    """
    principal, path, name, expected = case
    response = sessions.client(principal).get(path, query_string={name: missing})
    assert response.status_code in expected, f"FINDING: {path}?{name}={missing} answered {response.status_code}"


# --- fields and query values that carry an id --------------------------------------------------

ID_FIELD = re.compile(r"(_id|_account|account_number)$")

# "FormClass.field" -> the test below that attacks it, or why it is not an object reference.
ID_FIELDS = {
    "OpenAccountForm.owner_user_id": "test_customer_cannot_open_an_account_for_someone_else",
    "InternalTransferForm.source_account": "test_transfer_from_someone_elses_account_is_refused",
    "InternalTransferForm.target_account": "test_internal_transfer_into_someone_elses_account_is_refused",
    "ExternalTransferForm.source_account": "test_transfer_from_someone_elses_account_is_refused",
    "ExternalTransferForm.target_account_number":
        "paying into another customer's account is the external transfer's purpose; unknown, frozen and "
        "closed targets share one message (tests/integration/test_transfers.py)",
    "OwnerPickerForm.owner_user_id": "test_owner_user_id_in_the_query_does_not_change_whose_accounts_a_customer_uses",
    "AccountSearchForm.account_number": "admin only: admins see every account (test_access_matrix)",
    "AuditLogFilterForm.user_id": "auditors and admins only: they see every user's events (test_access_matrix)",
    "AuditTransactionFilterForm.account_number":
        "test_customer_cannot_filter_transactions_by_someone_elses_account (staff only otherwise)",
}


def _id_fields_of_the_app() -> set[str]:
    route_app()  # every blueprint, and so every form module, is imported

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    found = set()
    for form in subclasses(FlaskForm):
        if not form.__module__.startswith("app.") or form.__name__.startswith("_"):
            continue
        for name in dir(form):
            if isinstance(getattr(form, name, None), UnboundField) and ID_FIELD.search(name):
                found.add(f"{form.__name__}.{name}")
    return found


def test_every_id_carrying_form_field_has_a_case():
    """IDOR (CWE-639), coverage: does ID_FIELDS name every field of the app's forms that carries
    an id or an account number (and no field that is gone)?"""
    assert set(ID_FIELDS) == _id_fields_of_the_app()
    named = {case.split()[0] for case in ID_FIELDS.values() if case.startswith("test_")}
    assert named <= set(globals()), named - set(globals())


def _transfer(client, world, path, principal_user, **fields):
    data = {"amount": "10.00", "description": "Taking what is not mine",
            "idempotency_key": issued_key(world.app, principal_user.id)} | fields
    return client.post(path, data=data)


def _assert_refused_unchanged(world, response, before, what, status=400):
    assert response.status_code == status, f"{what}: {response.status_code}"
    assert_unchanged(world.app, before, what)


@pytest.mark.parametrize("path", [INTERNAL, EXTERNAL])
@pytest.mark.parametrize("principal", ["customer", "admin"])
def test_transfer_from_someone_elses_account_is_refused(world, path, principal):
    """IDOR (CWE-639): does a transfer whose source_account is another customer's account (the
    victim's, by its real id) fail as a form error (400) with no money moved — for a customer,
    and for an admin acting for the customer (?owner_user_id=) who names an account of someone
    other than that customer?"""
    client = sign_in(world, principal)
    own, victim = world.accounts["own_savings"], world.accounts["victim_checking"]
    target = {"target_account": str(own.id)} if path == INTERNAL else {
        "target_account_number": world.accounts["own_savings"].account_number}
    before = snapshot(world.app)

    response = _transfer(client, world, path_for(path, world), world.user(principal),
                         source_account=str(victim.id), **target)

    _assert_refused_unchanged(world, response, before, f"{principal} sending from the victim's account")


@pytest.mark.parametrize("principal", ["customer", "admin"])
def test_internal_transfer_into_someone_elses_account_is_refused(world, principal):
    """IDOR (CWE-639): is an internal transfer (between one customer's own accounts) whose
    target_account is the victim's account a form error (400), with no money moved?"""
    client = sign_in(world, principal)
    before = snapshot(world.app)

    response = _transfer(client, world, path_for(INTERNAL, world), world.user(principal),
                         source_account=str(world.accounts["own_checking"].id),
                         target_account=str(world.accounts["victim_checking"].id))

    _assert_refused_unchanged(world, response, before, f"{principal} paying into the victim's account internally")


@pytest.mark.parametrize("path", [INTERNAL, EXTERNAL])
def test_owner_user_id_in_the_query_does_not_change_whose_accounts_a_customer_uses(world, path):
    """IDOR (CWE-639): `?owner_user_id=` picks whose accounts the transfer form lists — for
    admins. Does a customer who adds the victim's id see only their own accounts, and is a POST
    from the victim's account with that query a form error (400) that moves nothing?"""
    client = sign_in(world, "customer")
    victim = world.users["victim"]
    page = client.get(path, query_string={"owner_user_id": victim.id}).get_data(as_text=True)
    assert world.accounts["own_checking"].account_number in page
    for key in ("victim_checking", "victim_savings", "victim_frozen"):
        assert world.accounts[key].account_number not in page
    target = {"target_account": str(world.accounts["victim_savings"].id)} if path == INTERNAL else {
        "target_account_number": world.accounts["own_savings"].account_number}
    before = snapshot(world.app)

    response = _transfer(client, world, f"{path}?owner_user_id={victim.id}", world.users["customer"],
                         source_account=str(world.accounts["victim_checking"].id), **target)

    _assert_refused_unchanged(world, response, before, "a customer's transfer with the victim's owner_user_id")


@pytest.mark.parametrize("owner", ["support", "auditor", "admin", "unknown"])
def test_admin_transfer_for_someone_who_is_not_a_customer_is_404(world, owner):
    """IDOR (CWE-639): an admin may move money for customers only. Is `?owner_user_id=` naming
    a member of staff (or nobody) a 404, for the form and for a POST, moving nothing?"""
    client = sign_in(world, "admin")
    owner_id = 999_999 if owner == "unknown" else world.users[owner].id
    before = snapshot(world.app)

    assert client.get(INTERNAL, query_string={"owner_user_id": owner_id}).status_code == 404
    response = _transfer(client, world, f"{INTERNAL}?owner_user_id={owner_id}", world.users["admin"],
                         source_account=str(world.accounts["own_checking"].id),
                         target_account=str(world.accounts["own_savings"].id))
    _assert_refused_unchanged(world, response, before, f"an admin transfer for {owner}", status=404)


def test_idempotency_key_issued_to_someone_else_is_refused(world):
    """IDOR (CWE-639) on the transfer's one-time key: is a transfer carrying a key the server
    issued to the victim (a valid signature, for another user) refused (400), moving nothing?"""
    client = sign_in(world, "customer")
    before = snapshot(world.app)

    response = client.post(INTERNAL, data={
        "source_account": str(world.accounts["own_checking"].id), "target_account": str(world.accounts["own_savings"].id),
        "amount": "1.00", "description": "", "idempotency_key": issued_key(world.app, world.users["victim"].id),
    })

    _assert_refused_unchanged(world, response, before, "a transfer with the victim's idempotency key")


def test_customer_cannot_open_an_account_for_someone_else(world):
    """IDOR (CWE-639), mass assignment of the owner: is `owner_user_id` (the victim's id) ignored
    when a customer opens an account, so the new account is the customer's own and the victim's
    accounts are untouched?"""
    client = sign_in(world, "customer")
    customer, victim = world.users["customer"], world.users["victim"]
    before = snapshot(world.app)

    response = client.post("/banking/open-account", data={"type": "savings", "opening_balance": "0.00",
                                                          "owner_user_id": str(victim.id)})

    assert response.status_code == 302
    after = snapshot(world.app)
    new = [row for row in after["account"] if row not in before["account"]]
    owner_column = [column.name for column in Account.__table__.columns].index("owner_id")
    assert [row[owner_column] for row in new] == [customer.id]
    assert [r for r in after["account"] if r[owner_column] == victim.id] == \
           [r for r in before["account"] if r[owner_column] == victim.id]
    assert after["transaction"] == before["transaction"]


def test_customer_cannot_filter_transactions_by_someone_elses_account(world):
    """IDOR (CWE-639) in list filters: can a customer who adds the victim's account number, id
    or user id to /banking/transactions (whose filters carry no account) see none of the
    victim's entries, and is the staff view that does filter by account (/audit/transactions)
    a 403 for them?"""
    client = sign_in(world, "customer")
    victim_number = world.accounts["victim_checking"].account_number
    with world.app.app_context():
        victim_refs = set(db.session.scalars(select(Transaction.reference).where(
            Transaction.account_id.in_([world.accounts[k].id for k in ("victim_checking", "victim_savings")]))))
    assert victim_refs

    response = client.get("/banking/transactions", query_string={
        "account_number": victim_number, "account_id": world.accounts["victim_checking"].id,
        "owner_user_id": world.users["victim"].id, "user_id": world.users["victim"].id})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert victim_number not in page and not any(ref in page for ref in victim_refs)
    assert world.accounts["own_checking"].account_number in page

    staff_view = client.get("/audit/transactions", query_string={"account_number": victim_number})
    assert staff_view.status_code == 403


@pytest.mark.parametrize("path", ["/banking/dashboard", "/support/my-tickets", "/banking/transactions", INTERNAL,
                                  EXTERNAL, "/banking/open-account", "/auth/profile"])
def test_customer_pages_show_nothing_of_another_customer(world, sessions, path):
    """IDOR (CWE-639) by listing: does each page a customer sees list only their own accounts,
    tickets and details — none of the victim's account numbers, ticket subjects, staff notes or
    name?"""
    page = sessions.client("customer").get(path).get_data(as_text=True)
    for secret in (*(world.accounts[k].account_number for k in ("victim_checking", "victim_savings", "victim_frozen")),
                   "Card lost abroad", "We blocked the card", world.users["victim"].full_name,
                   world.users["victim"].email):
        assert secret not in page, f"{path} shows {secret!r}"
