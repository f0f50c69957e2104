"""Stored and reflected script injection in every text field, filter and re-rendered form
(CWE-79; template injection CWE-1336; OWASP ASVS 5.3.3, 5.2.5).

Each payload of attack_data.XSS_PAYLOADS, tagged with a unique marker, goes into one input;
then every page where that value appears is fetched by every role who sees it, and each page
must (1) show the value as text — so the check is not vacuous —, (2) never contain it raw,
(3) contain no script, event handler, javascript: URL or foreign resource that html.parser can
find, and (4) never evaluate `{{7*7}}` to 49. Inputs that refuse the payload (phone, most email
spellings) must refuse it with a 400 that echoes it escaped, and store nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.audit import services as audit_services
from app.auth.services import NOT_AN_ADDRESS
from app.extensions import db
from app.models import SupportTicket, User
from app.support import services as support_services
from tests.factories import DEFAULT_PASSWORD, issued_key
from tests.security.attack_data import (
    XSS_PAYLOADS,
    add_credits,
    balances,
    injected_markup,
    link,
    make_account,
    make_user,
    marker,
    module_app,
    page_text,
    row_counts,
    signed_in,
    unique_email,
    unique_ip,
    user_row,
)

STRONG_PASSWORD = "violet lanterns drift over quiet harbours"
VALID_PHONE = "+1 555 0100"
RAW_SIGNS = ("<", ">", '"')


# ---------------------------------------------------------------------------------------------
# The module's world: staff, a busy customer (every list has a next page), signed-in clients
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(test_backend):
    """Staff and an actor customer with two accounts and a ticket, signed in once for the module;
    a busy customer and 26 fillers so every paged list has a next page; 51 extra audit rows."""
    with module_app(test_backend) as app:
        admin, support, auditor = (make_user(app, role) for role in ("admin", "support", "auditor"))
        busy = make_user(app, "customer")
        busy_account = make_account(app, busy, "1.00")
        add_credits(app, busy_account, ["1.00"] * 26)
        with app.app_context():
            owner = db.session.get(User, busy.id)
            for n in range(26):
                support_services.create_ticket(owner, f"Question {n}", "Details")
            for n in range(51):
                audit_services.queue_event(db.session, "LOGIN_FAILURE", {"n": n}, None, "192.0.2.7")
            db.session.commit()
        for _ in range(26):
            filler = make_user(app, "customer")
            make_account(app, filler, "1.00")
        actor = make_user(app, "customer")
        checking = make_account(app, actor, "100.00")
        savings = make_account(app, actor, "0.00", type="savings")
        ticket = _ticket_of(app, actor, "Actor's ticket")
        yield SimpleNamespace(
            app=app, admin=admin, support=support, auditor=auditor, busy=busy, actor=actor,
            checking=checking, savings=savings, ticket=ticket,
            clients={"admin": signed_in(app, admin), "support": signed_in(app, support),
                     "auditor": signed_in(app, auditor), "busy": signed_in(app, busy),
                     "actor": signed_in(app, actor)},
        )


def _ticket_of(app, customer, subject: str = "Help please", description: str = "Details") -> int:
    with app.app_context():
        return support_services.create_ticket(db.session.get(User, customer.id), subject, description).id


def _newest_ticket_id(app, customer_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(SupportTicket.id).where(SupportTicket.customer_id == customer_id)
                                 .order_by(SupportTicket.id.desc()).limit(1))


def _user_by_email(app, email: str):
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def _json_text(value: str) -> str:
    """How `value` reads inside the audit log's JSON details (json.dumps, ensure_ascii=False)."""
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _tagged(payload_id: str) -> str:
    return XSS_PAYLOADS[payload_id] + marker()


# ---------------------------------------------------------------------------------------------
# The checks every page gets
# ---------------------------------------------------------------------------------------------


@dataclass
class Shown:
    """One page that a viewer sees: `response`, and the text it must show (None: no need)."""

    viewer: str
    response: object
    text: str | None


def assert_rendered_inert(shown: Shown, value: str) -> None:
    """The page shows `shown.text` as text, never `value` raw, no injected markup, no SSTI."""
    body = shown.response.get_data(as_text=True)
    where = f"{shown.viewer}: {shown.response.request.method} {shown.response.request.full_path}"
    problems = injected_markup(body)
    assert problems == [], f"{where}: markup from user input was parsed: {problems}"
    if shown.text is not None:
        assert shown.text in page_text(shown.response), f"{where}: the value is not shown (test would be vacuous)"
        raw = shown.text
        if any(sign in raw for sign in RAW_SIGNS):
            assert raw not in body, f"{where}: the value appears unescaped"
    if any(sign in value for sign in RAW_SIGNS):
        assert value not in body, f"{where}: the value appears unescaped"
    if "{{7*7}}" in value:
        evaluated = value.replace("{{7*7}}", "49")
        assert evaluated not in page_text(shown.response), f"{where}: {{{{7*7}}}} was evaluated as a template"


def _landing(viewer: str, client: FlaskClient, response, text: str | None = None) -> Shown:
    """The page the submitter lands on after a successful POST (its flash message included)."""
    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    return _get(f"{viewer} (page after submitting)", client, response.headers["Location"], text)


def _get(viewer: str, client: FlaskClient, url: str, text: str | None) -> Shown:
    response = client.get(url)
    assert response.status_code == 200, f"{viewer}: GET {url} answered {response.status_code}"
    return Shown(viewer, response, text)


# ---------------------------------------------------------------------------------------------
# Stored: the sinks. Each stores `value` through the routes (the attack) and returns the pages
# where it appears, for every role who sees it.
# ---------------------------------------------------------------------------------------------


def _customer_with_presence(world, **kwargs):
    """A new customer with an account holding a deposit and an open ticket, so their name and
    email appear on the admin, support and auditor pages."""
    customer = make_user(world.app, "customer", **kwargs)
    account = make_account(world.app, customer, "25.00")
    ticket = _ticket_of(world.app, customer)
    return customer, account, ticket


def _person_pages(world, user_id: int, email: str, account, ticket: int, text: str, kind: str,
                  password: str = DEFAULT_PASSWORD) -> list[Shown]:
    """The pages that show a customer's name (`kind` "name") or email ("email"), for the customer
    and for each staff role; each page must show `text`."""
    app, admin, support, auditor = world.app, world.clients["admin"], world.clients["support"], world.clients["auditor"]
    own = signed_in(app, SimpleNamespace(email=email), password=password)
    number = account.account_number
    pages = [  # viewer, client, url, shows the name, shows the email
        ("customer (welcome flash)", own, "/banking/dashboard", True, False),
        ("customer", own, "/auth/profile", True, True),
        ("customer (navigation bar)", own, "/support/my-tickets", True, False),
        ("admin", admin, "/banking/admin/users", True, True),
        ("admin", admin, f"/banking/admin/users/{user_id}/edit", True, True),
        ("admin", admin, f"/banking/admin/accounts?account_number={number}", True, True),
        ("admin (owner select)", admin, "/banking/open-account", True, True),
        ("admin (owner picker)", admin, "/banking/transfer/internal", True, True),
        ("admin (acting-for note)", admin, f"/banking/transfer/external?owner_user_id={user_id}", True, True),
        ("admin", admin, f"/support/tickets/{ticket}", True, True),
        ("support", support, f"/support/tickets/{ticket}", True, True),
        ("support", support, "/support/tickets", True, False),
        ("auditor (owner column)", auditor, f"/audit/transactions?account_number={number}", True, False),
    ]
    shows = 3 if kind == "name" else 4
    return [_get(viewer, client, url, text) for viewer, client, url, *flags in pages
            if (flags[0] if shows == 3 else flags[1])]


def _register(client: FlaskClient, **fields):
    data = {"full_name": "Reg Ister", "email": unique_email("reg"), "phone": VALID_PHONE,
            "password": STRONG_PASSWORD, "confirm_password": STRONG_PASSWORD} | fields
    return client.post("/auth/register", data=data), data


def _presence_for(world, user_id: int, email: str):
    customer = SimpleNamespace(id=user_id, email=email)
    return make_account(world.app, customer, "25.00"), _ticket_of(world.app, customer)


def stored_full_name_register(world, payload_id):
    value = _tagged(payload_id)
    visitor = world.app.test_client()
    response, data = _register(visitor, full_name=value)
    assert response.status_code == 302, "a name with markup is ordinary text and must be accepted"
    landed = _landing("visitor", visitor, response)
    user_id = _user_by_email(world.app, data["email"])
    account, ticket = _presence_for(world, user_id, data["email"])
    pages = _person_pages(world, user_id, data["email"], account, ticket, value, "name", STRONG_PASSWORD)
    return value, [landed, *pages]


def stored_full_name_profile(world, payload_id):
    value = _tagged(payload_id)
    customer, account, ticket = _customer_with_presence(world)
    own = signed_in(world.app, customer)
    response = own.post("/auth/profile", data={"full_name": value, "phone": VALID_PHONE})
    landed = _landing("customer", own, response, value)
    return value, [landed, *_person_pages(world, customer.id, customer.email, account, ticket, value, "name")]


def stored_full_name_admin_edit(world, payload_id):
    value = _tagged(payload_id)
    customer, account, ticket = _customer_with_presence(world)
    response = world.clients["admin"].post(f"/banking/admin/users/{customer.id}/edit", data={
        "full_name": value, "email": customer.email, "phone": VALID_PHONE, "role": "customer", "is_active": "y"})
    landed = _landing("admin", world.clients["admin"], response, value)
    return value, [landed, *_person_pages(world, customer.id, customer.email, account, ticket, value, "name")]


# Email: email-validator refuses markup in an address; only the braces of `{{7*7}}` are legal in
# an unquoted local part, and quoted local parts are refused altogether.
EMAIL_ACCEPTED = {("bare", "jinja_ssti")}


def _email_value(payload_id: str, spelling: str) -> str:
    local = XSS_PAYLOADS[payload_id] + marker()
    return f"{local}@example.com" if spelling == "bare" else f'"{local}"@example.com'


def stored_email_register(world, payload_id, spelling):
    app = world.app
    value = _email_value(payload_id, spelling)
    before = row_counts(app, ("user",))
    visitor = app.test_client()
    response, _ = _register(visitor, email=value)
    if (spelling, payload_id) not in EMAIL_ACCEPTED:
        assert response.status_code == 400, "an address with markup must be refused"
        assert row_counts(app, ("user",)) == before, "a refused registration stored a user"
        return value, [Shown("visitor (refused form)", response, value)]
    landed = _landing("visitor", visitor, response)
    user_id = _user_by_email(app, value.lower())
    assert user_id is not None, "the accepted address was not stored as typed"
    account, ticket = _presence_for(world, user_id, value.lower())
    pages = [landed, *_person_pages(world, user_id, value.lower(), account, ticket, value.lower(), "email",
                                    STRONG_PASSWORD)]
    pages.append(_get("auditor (REGISTER_SUCCESS details)", world.clients["auditor"],
                      f"/audit/logs?action=REGISTER_SUCCESS&user_id={user_id}", _json_text(value.lower())))
    return value, pages


def stored_email_admin_edit(world, payload_id, spelling):
    app = world.app
    value = _email_value(payload_id, spelling)
    customer, account, ticket = _customer_with_presence(world)
    before = user_row(app, customer.id)
    response = world.clients["admin"].post(f"/banking/admin/users/{customer.id}/edit", data={
        "full_name": "Edited Name", "email": value, "phone": VALID_PHONE, "role": "customer", "is_active": "y"})
    if (spelling, payload_id) not in EMAIL_ACCEPTED:
        assert response.status_code == 400, "an address with markup must be refused"
        assert user_row(app, customer.id) == before, "a refused edit changed the user"
        return value, [Shown("admin (refused form)", response, value)]
    stored = value.lower()
    landed = _landing("admin", world.clients["admin"], response, stored)
    assert _user_by_email(app, stored) == customer.id
    pages = [landed, *_person_pages(world, customer.id, stored, account, ticket, stored, "email")]
    pages.append(_get("auditor (USER_UPDATED details)", world.clients["auditor"],
                      f"/audit/logs?action=USER_UPDATED&user_id={world.admin.id}", _json_text(stored)))
    return value, pages


def _refused_phone(world, response, state, before, value: str) -> list[Shown]:
    assert response.status_code == 400, "a phone number with markup must be refused"
    assert state() == before, "a refused phone number was stored"
    return [Shown("submitter (refused form, echoed)", response, value)]


def stored_phone_register(world, payload_id):
    value = _tagged(payload_id)
    state = lambda: row_counts(world.app, ("user",))  # noqa: E731
    before = state()
    response, _ = _register(world.app.test_client(), phone=value)
    return value, _refused_phone(world, response, state, before, value)


def stored_phone_profile(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    state = lambda: user_row(world.app, customer.id)  # noqa: E731
    before = state()
    response = signed_in(world.app, customer).post("/auth/profile", data={"full_name": "Still Me", "phone": value})
    return value, _refused_phone(world, response, state, before, value)


def stored_phone_admin_edit(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    state = lambda: user_row(world.app, customer.id)  # noqa: E731
    before = state()
    response = world.clients["admin"].post(f"/banking/admin/users/{customer.id}/edit", data={
        "full_name": "Still Them", "email": customer.email, "phone": value, "role": "customer", "is_active": "y"})
    return value, _refused_phone(world, response, state, before, value)


def _transfer(client, kind: str, app, key_owner_id: int, source, target, description: str, query: str = "") -> Shown:
    data = {"source_account": str(source.id), "amount": "1.00", "description": description,
            "idempotency_key": issued_key(app, key_owner_id)}
    if kind == "internal":
        data["target_account"] = str(target.id)
    else:
        data["target_account_number"] = target.account_number
    response = client.post(f"/banking/transfer/{kind}{query}", data=data)
    return _landing("sender", client, response)


def _entry_pages(world, who: list[tuple[str, object]], account, value: str) -> list[Shown]:
    """Dashboard and transactions of each (label, customer), and the audit views of the account."""
    pages = []
    for label, customer in who:
        client = signed_in(world.app, customer)
        pages += [_get(label, client, "/banking/dashboard", value), _get(label, client, "/banking/transactions", value)]
    audit = f"/audit/transactions?account_number={account.account_number}"
    pages += [_get(role, world.clients[role], audit, value) for role in ("auditor", "admin")]
    return pages


def stored_description_internal(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    source, target = make_account(world.app, customer, "10.00"), make_account(world.app, customer, "0.00")
    landed = _transfer(signed_in(world.app, customer), "internal", world.app, customer.id, source, target, value)
    return value, [landed, *_entry_pages(world, [("customer", customer)], source, value)]


def stored_description_external(world, payload_id):
    value = _tagged(payload_id)
    sender, receiver = make_user(world.app, "customer"), make_user(world.app, "customer")
    source, target = make_account(world.app, sender, "10.00"), make_account(world.app, receiver, "0.00")
    landed = _transfer(signed_in(world.app, sender), "external", world.app, sender.id, source, target, value)
    return value, [landed, *_entry_pages(world, [("sender", sender), ("counterparty", receiver)], target, value)]


def _admin_reason_pages(world, value: str) -> list[Shown]:
    return [_get("auditor (TRANSFER_CREATED details)", world.clients["auditor"],
                 f"/audit/logs?action=TRANSFER_CREATED&user_id={world.admin.id}", _json_text(value)),
            _get("admin (TRANSFER_CREATED details)", world.clients["admin"],
                 f"/audit/logs?action=TRANSFER_CREATED&user_id={world.admin.id}", _json_text(value))]


def stored_admin_reason_internal(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    source, target = make_account(world.app, customer, "10.00"), make_account(world.app, customer, "0.00")
    landed = _transfer(world.clients["admin"], "internal", world.app, world.admin.id, source, target, value,
                       query=f"?owner_user_id={customer.id}")
    pages = _entry_pages(world, [("customer", customer)], source, value)
    return value, [landed, *pages, *_admin_reason_pages(world, value)]


def stored_admin_reason_external(world, payload_id):
    value = _tagged(payload_id)
    sender, receiver = make_user(world.app, "customer"), make_user(world.app, "customer")
    source, target = make_account(world.app, sender, "10.00"), make_account(world.app, receiver, "0.00")
    landed = _transfer(world.clients["admin"], "external", world.app, world.admin.id, source, target, value,
                       query=f"?owner_user_id={sender.id}")
    pages = _entry_pages(world, [("customer", sender), ("counterparty", receiver)], target, value)
    return value, [landed, *pages, *_admin_reason_pages(world, value)]


def _ticket_pages(world, customer, ticket: int, value: str, *, in_list: bool) -> list[Shown]:
    own = signed_in(world.app, customer)
    pages = [_get("customer", own, "/support/my-tickets", value)]
    for role in ("support", "admin"):
        client = world.clients[role]
        pages.append(_get(role, client, f"/support/tickets/{ticket}", value))
        pages.append(_get(role, client, "/support/tickets", value if in_list else None))
    return pages


def stored_ticket_subject(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    own = signed_in(world.app, customer)
    response = own.post("/support/create", data={"subject": value, "description": "Help"})
    landed = _landing("customer", own, response, value)
    ticket = _newest_ticket_id(world.app, customer.id)
    return value, [landed, *_ticket_pages(world, customer, ticket, value, in_list=True)]


def stored_ticket_description(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    own = signed_in(world.app, customer)
    response = own.post("/support/create", data={"subject": "Help", "description": value})
    landed = _landing("customer", own, response, value)
    ticket = _newest_ticket_id(world.app, customer.id)
    return value, [landed, *_ticket_pages(world, customer, ticket, value, in_list=False)]


def stored_ticket_note(world, payload_id):
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    ticket = _ticket_of(world.app, customer)
    response = world.clients["support"].post(f"/support/tickets/{ticket}",
                                             data={"status": "in_progress", "note": value})
    landed = _landing("support", world.clients["support"], response, value)
    return value, [landed, *_ticket_pages(world, customer, ticket, value, in_list=False)]


def _audit_log_pages(world, query: str, text: str) -> list[Shown]:
    return [_get(role, world.clients[role], f"/audit/logs?{query}", text) for role in ("auditor", "admin")]


def stored_login_email_in_audit_log(world, payload_id):
    """A sign-in with the payload in an address: one that is an address (only `{{7*7}}` makes
    one) is recorded normalized and must show inert on the audit pages; any other text is
    recorded only as a fingerprint, so the audit pages must show none of it."""
    value = _email_value(payload_id, "bare")
    response = world.app.test_client().post("/auth/login", data={"email": value, "password": "not the password at all"},
                                            environ_base={"REMOTE_ADDR": unique_ip()})
    assert response.status_code == 400
    if ("bare", payload_id) in EMAIL_ACCEPTED:
        return value, [Shown("visitor (refused login)", response, value)] + _audit_log_pages(
            world, "action=LOGIN_FAILURE", _json_text(value.lower()))
    pages = _audit_log_pages(world, "action=LOGIN_FAILURE", NOT_AN_ADDRESS)
    for shown in pages:
        assert XSS_PAYLOADS[payload_id] not in page_text(shown.response), "text that is no address was recorded"
    return value, [Shown("visitor (refused login)", response, value), *pages]


def _refused_external(world, field_name: str, value: str):
    customer = make_user(world.app, "customer")
    source = make_account(world.app, customer, "10.00")
    data = {"source_account": str(source.id), "target_account_number": world.checking.account_number,
            "amount": "1.00", "description": "", "idempotency_key": issued_key(world.app, customer.id)}
    data[field_name] = value
    response = signed_in(world.app, customer).post("/banking/transfer/external", data=data)
    assert response.status_code == 400
    return customer, response


def stored_refused_account_number_in_audit_log(world, payload_id):
    value = _tagged(payload_id)
    customer, response = _refused_external(world, "target_account_number", value)
    return value, [Shown("customer (refused form)", response, value)] + _audit_log_pages(
        world, f"action=TRANSFER_FAILED&user_id={customer.id}", _json_text(value[:32]))


def stored_refused_amount_in_audit_log(world, payload_id):
    value = _tagged(payload_id)
    customer, response = _refused_external(world, "amount", value)
    return value, [Shown("customer (refused form)", response, value)] + _audit_log_pages(
        world, f"action=TRANSFER_FAILED&user_id={customer.id}", _json_text(value[:32]))


def stored_refused_audit_filter_in_audit_log(world, payload_id):
    value = _tagged(payload_id)
    auditor = make_user(world.app, "auditor")
    response = signed_in(world.app, auditor).get("/audit/logs", query_string={"user_id": value})
    assert response.status_code == 400
    return value, [Shown("auditor (refused filter)", response, value)] + _audit_log_pages(
        world, f"action=AUDIT_VIEWED&user_id={auditor.id}", _json_text(value[:32]))


STORED_SINKS: dict[str, Callable] = {
    "full_name_register": stored_full_name_register,
    "full_name_profile": stored_full_name_profile,
    "full_name_admin_edit": stored_full_name_admin_edit,
    "phone_register": stored_phone_register,
    "phone_profile": stored_phone_profile,
    "phone_admin_edit": stored_phone_admin_edit,
    "email_register_bare": lambda world, p: stored_email_register(world, p, "bare"),
    "email_register_quoted": lambda world, p: stored_email_register(world, p, "quoted"),
    "email_admin_edit_bare": lambda world, p: stored_email_admin_edit(world, p, "bare"),
    "email_admin_edit_quoted": lambda world, p: stored_email_admin_edit(world, p, "quoted"),
    "transfer_description_internal": stored_description_internal,
    "transfer_description_external": stored_description_external,
    "admin_reason_internal": stored_admin_reason_internal,
    "admin_reason_external": stored_admin_reason_external,
    "ticket_subject": stored_ticket_subject,
    "ticket_description": stored_ticket_description,
    "ticket_note": stored_ticket_note,
    "login_email_in_audit_log": stored_login_email_in_audit_log,
    "refused_account_number_in_audit_log": stored_refused_account_number_in_audit_log,
    "refused_amount_in_audit_log": stored_refused_amount_in_audit_log,
    "refused_audit_filter_in_audit_log": stored_refused_audit_filter_in_audit_log,
}


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
@pytest.mark.parametrize("sink", list(STORED_SINKS))
def test_stored_value_is_inert_on_every_page_that_shows_it(world, sink, payload_id):
    """Stored XSS (CWE-79; template injection CWE-1336): once this field holds script, markup or
    a template expression, does every page that shows it, to every role that sees it (the owner,
    the counterparty, support, admin, auditor), show it as escaped text only — and does an input
    that refuses it (phone, most email spellings) refuse it and store nothing?"""
    value, pages = STORED_SINKS[sink](world, payload_id)
    assert pages
    for shown in pages:
        assert_rendered_inert(shown, value)


# ---------------------------------------------------------------------------------------------
# Reflected: query filters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    viewer: str
    path: str
    param: str
    status: int
    echoed: bool
    others: tuple = ()


FILTERS = [
    *(Filter("actor", "/banking/transactions", p, 400, True)
      for p in ("date_from", "date_to", "min_amount", "max_amount")),
    Filter("actor", "/banking/transactions", "type", 400, False),
    Filter("actor", "/banking/transactions", "page", 200, False),
    Filter("auditor", "/audit/logs", "action", 400, False),
    *(Filter("auditor", "/audit/logs", p, 400, True) for p in ("user_id", "date_from", "date_to")),
    Filter("auditor", "/audit/logs", "before", 400, False),
    *(Filter("auditor", "/audit/transactions", p, 400, True)
      for p in ("account_number", "date_from", "date_to", "min_amount", "max_amount")),
    Filter("auditor", "/audit/transactions", "type", 400, False),
    Filter("auditor", "/audit/transactions", "before", 400, False),
    Filter("admin", "/banking/admin/accounts", "account_number", 400, True),
    Filter("admin", "/banking/admin/accounts", "page", 200, False),
    Filter("admin", "/banking/admin/users", "page", 200, False),
    Filter("support", "/support/tickets", "status", 400, False),
    Filter("support", "/support/tickets", "page", 200, False),
    Filter("busy", "/support/my-tickets", "page", 200, False),
    Filter("admin", "/banking/transfer/internal", "owner_user_id", 404, False),
    Filter("admin", "/banking/transfer/external", "owner_user_id", 404, False),
    Filter("visitor", "/auth/login", "next", 200, False),
]


def _client(world, viewer: str) -> FlaskClient:
    return world.app.test_client() if viewer == "visitor" else world.clients[viewer]


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
@pytest.mark.parametrize("case", FILTERS, ids=lambda f: f"{f.path.strip('/').replace('/', '_')}-{f.param}")
def test_reflected_filter_value_is_inert(world, case, payload_id):
    """Reflected XSS (CWE-79; template injection CWE-1336): when this query parameter carries
    script, markup or a template expression, does the page answer as designed (a 400 with a
    message for a malformed filter, an empty list for a malformed page, 404 for an unknown
    customer) and show the value — where it echoes it at all — only as escaped text?"""
    value = _tagged(payload_id)
    response = _client(world, case.viewer).get(case.path, query_string={case.param: value})
    assert response.status_code == case.status
    assert_rendered_inert(Shown(case.viewer, response, value if case.echoed else None), value)


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
def test_reflected_filters_survive_the_staff_redirect(world, payload_id):
    """Reflected XSS / header injection (CWE-79, CWE-113): when an admin's /banking/transactions
    filters carry script, does the redirect to /audit/transactions carry them URL-encoded only?"""
    value = _tagged(payload_id)
    response = world.clients["admin"].get("/banking/transactions", query_string={"date_from": value, "type": value})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert not any(sign in location for sign in (*RAW_SIGNS, " ", "\n")), location
    assert parse_qs(urlsplit(location).query)["date_from"] == [value]
    assert injected_markup(response.get_data(as_text=True)) == []


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
def test_login_next_is_never_reflected_as_markup_or_a_script_url(world, payload_id):
    """Reflected XSS (CWE-79): does a sign-in with `next` holding script or a javascript: URL
    redirect to a URL-encoded local path or the dashboard — never to `javascript:`, never with
    raw markup in the Location header or the redirect page?"""
    value = _tagged(payload_id)
    customer = make_user(world.app, "customer")
    response = world.app.test_client().post(f"/auth/login?{urlencode({'next': value})}",
                                            data={"email": customer.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert not location.lower().lstrip().startswith("javascript:"), location
    assert not any(sign in location for sign in (*RAW_SIGNS, " ")), location
    assert injected_markup(response.get_data(as_text=True)) == []


PAGED_LISTS = [
    ("busy", "/banking/transactions"),
    ("busy", "/support/my-tickets"),
    ("auditor", "/audit/transactions"),
    ("auditor", "/audit/logs"),
    ("admin", "/banking/admin/users"),
    ("admin", "/banking/admin/accounts"),
    ("support", "/support/tickets"),
]


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
@pytest.mark.parametrize(("viewer", "path"), PAGED_LISTS, ids=[p.strip("/").replace("/", "_") for _, p in PAGED_LISTS])
def test_unknown_parameter_carried_into_pager_links_is_url_encoded(world, viewer, path, payload_id):
    """Reflected XSS (CWE-79): the pager links keep every query parameter, known or not; when an
    unknown one carries script, is it only ever URL-encoded inside the rel="next" href?"""
    value = _tagged(payload_id)
    response = world.clients[viewer].get(path, query_string={"utm_source": value})
    assert response.status_code == 200
    href = link(response, "next")
    assert href, "the list has no next page (the check would be vacuous)"
    assert parse_qs(urlsplit(href).query)["utm_source"] == [value]
    assert_rendered_inert(Shown(viewer, response, None), value)


# ---------------------------------------------------------------------------------------------
# Reflected: form fields echoed back on a 400 re-render
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    viewer: str
    path: str
    field: str
    base: Callable  # world -> the other fields, chosen so the form is refused
    shown: str      # "echoed": shown escaped; "absent": never echoed (passwords); "any" (selects)


def _register_base(world):
    return {"full_name": "Reg Ister", "email": unique_email("echo"), "phone": VALID_PHONE,
            "password": STRONG_PASSWORD, "confirm_password": "a different passphrase entirely"}


def _edit_base(world):
    return {"full_name": "Edited", "email": world.actor.email, "phone": "not a phone", "role": "customer",
            "is_active": "y"}


def _internal_base(world):
    return {"source_account": str(world.checking.id), "target_account": str(world.savings.id), "amount": "no",
            "description": "", "idempotency_key": issued_key(world.app, world.actor.id)}


def _external_base(world):
    return {"source_account": str(world.checking.id), "target_account_number": "000000000000", "amount": "no",
            "description": "", "idempotency_key": issued_key(world.app, world.actor.id)}


FORM_FIELDS = [
    FormField("visitor", "/auth/register", "full_name", _register_base, "echoed"),
    FormField("visitor", "/auth/register", "email", _register_base, "echoed"),
    FormField("visitor", "/auth/register", "phone", _register_base, "echoed"),
    FormField("visitor", "/auth/register", "password", _register_base, "absent"),
    FormField("visitor", "/auth/register", "confirm_password", _register_base, "absent"),
    FormField("visitor", "/auth/login", "email", lambda w: {"password": "wrong password entirely"}, "echoed"),
    FormField("visitor", "/auth/login", "password", lambda w: {"email": "nobody@example.com"}, "absent"),
    FormField("actor", "/auth/profile", "full_name", lambda w: {"phone": ""}, "echoed"),
    FormField("actor", "/auth/profile", "phone", lambda w: {"full_name": "Actor"}, "echoed"),
    FormField("actor", "/auth/change-password", "current_password",
              lambda w: {"new_password": "x", "confirm_password": "y"}, "absent"),
    FormField("actor", "/auth/change-password", "new_password",
              lambda w: {"current_password": "wrong", "confirm_password": "y"}, "absent"),
    FormField("admin", "/banking/admin/users/{actor}/edit", "full_name", _edit_base, "echoed"),
    FormField("admin", "/banking/admin/users/{actor}/edit", "email", _edit_base, "echoed"),
    FormField("admin", "/banking/admin/users/{actor}/edit", "phone", _edit_base, "echoed"),
    FormField("admin", "/banking/admin/users/{actor}/edit", "role", _edit_base, "any"),
    FormField("actor", "/banking/open-account", "opening_balance", lambda w: {"type": "checking"}, "echoed"),
    FormField("actor", "/banking/open-account", "type", lambda w: {"opening_balance": "0.00"}, "any"),
    FormField("actor", "/banking/transfer/internal", "amount", _internal_base, "echoed"),
    FormField("actor", "/banking/transfer/internal", "description", _internal_base, "echoed"),
    FormField("actor", "/banking/transfer/internal", "idempotency_key", _internal_base, "echoed"),
    FormField("actor", "/banking/transfer/internal", "source_account", _internal_base, "any"),
    FormField("actor", "/banking/transfer/external", "amount", _external_base, "echoed"),
    FormField("actor", "/banking/transfer/external", "description", _external_base, "echoed"),
    FormField("actor", "/banking/transfer/external", "target_account_number", _external_base, "echoed"),
    FormField("actor", "/banking/transfer/external", "idempotency_key", _external_base, "echoed"),
    FormField("actor", "/support/create", "subject", lambda w: {"description": ""}, "echoed"),
    FormField("actor", "/support/create", "description", lambda w: {"subject": ""}, "echoed"),
    FormField("support", "/support/tickets/{ticket}", "note", lambda w: {"status": "bogus"}, "echoed"),
    FormField("support", "/support/tickets/{ticket}", "status", lambda w: {"note": ""}, "any"),
]


def _actor_state(world) -> tuple:
    """Row counts, and the rows a refused form of the actor could have changed."""
    with world.app.app_context():
        ticket_status = db.session.scalar(select(SupportTicket.status).where(SupportTicket.id == world.ticket))
    return (row_counts(world.app, ("user", "account", "transaction", "support_ticket", "ticket_note")),
            user_row(world.app, world.actor.id), balances(world.app, [world.checking.id, world.savings.id]),
            ticket_status)


@pytest.mark.parametrize("payload_id", list(XSS_PAYLOADS))
@pytest.mark.parametrize("case", FORM_FIELDS, ids=lambda f: f"{f.path.strip('/').split('/')[-1].strip('{}')}-{f.field}")
def test_form_value_echoed_on_a_refused_submission_is_inert(world, case, payload_id):
    """Reflected XSS (CWE-79; template injection CWE-1336): when a refused form (400) is shown
    again with what was typed, is this field's script, markup or template expression echoed
    only as escaped text (inputs, selects and textareas alike), and a password never echoed?"""
    value = _tagged(payload_id)
    path = case.path.format(actor=world.actor.id, ticket=world.ticket)
    data = case.base(world) | {case.field: value}
    extra = {"environ_base": {"REMOTE_ADDR": unique_ip()}} if case.path == "/auth/login" else {}
    before = _actor_state(world)
    response = _client(world, case.viewer).post(path, data=data, **extra)
    assert response.status_code == 400
    assert _actor_state(world) == before, "a refused form changed data"
    assert_rendered_inert(Shown(case.viewer, response, value if case.shown == "echoed" else None), value)
    if case.shown == "absent":
        assert value not in page_text(response), "a password was echoed back"
