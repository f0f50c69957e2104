"""Shared helpers of the attack suite, part A (tests/security): a populated application per
module, principals who sign in through the real login form (CSRF on or off), snapshots of
everything an attack could change, the app's own route lists with real ids and realistic forms,
and URL resolution done the way a browser does it.

Set-up writes straight to the database (as tests/factories.py does); everything under attack goes
through the routes. A module shares one application and database across its cases because the
attacks are refused (each case compares a snapshot taken just before and just after it); each
client gets an address of its own, so the per-IP sign-in throttle of one case never reaches another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from types import SimpleNamespace
from urllib.parse import SplitResult, urljoin, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Account, AuditLog, LoginAttempt, SupportTicket, TicketNote, Transaction, User
from tests import factories
from tests.conftest import build_app, csrf_token_from, dispose_engines
from tests.factories import DEFAULT_PASSWORD

PRINCIPALS = ("anonymous", "customer", "support", "auditor", "admin")
NEW_PASSWORD = "violet harbour lanterns drift 2031"
THIS_SITE = "http://localhost/"
# The forms of visitors not yet signed in (a signed-in user is sent to the dashboard): the
# password, registration, and the code step of two-step sign-in.
ANONYMOUS_FORMS = ("/auth/login", "/auth/register", "/auth/mfa")


# -------------------------------------------------------------------------------------------------
# The world: one app and database, a customer (the attacker's own login), a victim customer, staff
# -------------------------------------------------------------------------------------------------


@dataclass
class World:
    """An application with data to attack. users: customer, victim, support, auditor, admin.
    accounts: own_checking, own_savings (the customer's), victim_checking, victim_savings,
    victim_frozen. tickets: own, victim (the victim's carries a staff note)."""

    app: Flask
    users: dict[str, SimpleNamespace]
    accounts: dict[str, SimpleNamespace]
    tickets: dict[str, int]

    def user(self, principal: str) -> SimpleNamespace | None:
        """The user who plays `principal` (one of PRINCIPALS); None for anonymous."""
        return None if principal == "anonymous" else self.users[principal]


def _populate(app: Flask) -> World:
    with app.app_context():
        users = {role: factories.make_user(role) for role in ("customer", "support", "auditor", "admin")}
        users["victim"] = factories.make_user("customer", full_name="Victoria Victim")
        accounts = {
            "own_checking": factories.make_account(users["customer"], "500.00"),
            "own_savings": factories.make_account(users["customer"], "500.00", type="savings"),
            "victim_checking": factories.make_account(users["victim"], "1000.00"),
            "victim_savings": factories.make_account(users["victim"], "1000.00", type="savings"),
            "victim_frozen": factories.make_account(users["victim"], "50.00", status="frozen"),
        }
        tickets = {}
        for key, owner, subject in (("own", users["customer"], "Statement question"),
                                    ("victim", users["victim"], "Card lost abroad in Lisbon")):
            ticket = SupportTicket(customer_id=owner.id, subject=subject, description=f"{subject}: please help.",
                                   status="open")
            db.session.add(ticket)
            db.session.flush()
            tickets[key] = ticket.id
        db.session.add(TicketNote(ticket_id=tickets["victim"], author_id=users["support"].id,
                                  body="We blocked the card ending 4242 for Victoria."))
        db.session.commit()
    return World(app, users, accounts, tickets)


@contextmanager
def populated_app(test_backend, **overrides) -> Iterator[World]:
    """A World on a private copy of the migrated database (for a module-scoped fixture); the
    settings in `overrides` go over the testing configuration (CSRF is off unless asked for)."""
    url = test_backend.create()
    try:
        yield _populate(build_app(url, **overrides))
    finally:
        dispose_engines(url)
        test_backend.drop(url)


# -------------------------------------------------------------------------------------------------
# Clients and principals
# -------------------------------------------------------------------------------------------------

_addresses = itertools.count(1)


def fresh_ip() -> str:
    """An IPv4 address no other client of this run has used (10.x.y.z)."""
    n = next(_addresses)
    return f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"


def new_client(app: Flask, ip: str | None = None) -> FlaskClient:
    """A test client whose requests come from `ip` (default: an address of its own)."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = ip or fresh_ip()
    return client


def page_token(client: FlaskClient) -> str:
    """A valid CSRF token of the client's session: from the logout confirmation when signed in,
    otherwise from the login page."""
    response = client.get("/auth/logout")
    if response.status_code != 200:
        response = client.get("/auth/login")
    return csrf_token_from(response.get_data(as_text=True))


def sign_in_as(app: Flask, user: SimpleNamespace | None, *, ip: str | None = None) -> FlaskClient:
    """A client signed in as `user` through the login form (None: an anonymous client)."""
    client = new_client(app, ip)
    if user is not None:
        data = {"email": user.email, "password": DEFAULT_PASSWORD}
        if app.config["WTF_CSRF_ENABLED"]:
            data["csrf_token"] = page_token(client)
        response = client.post("/auth/login", data=data)
        assert response.status_code == 302, f"{user.email} could not sign in"
    return client


def sign_in(world: World, principal: str, *, ip: str | None = None) -> FlaskClient:
    """A client signed in as `principal` (one of PRINCIPALS, or "victim") of `world`."""
    return sign_in_as(world.app, world.user(principal), ip=ip)


class Sessions:
    """Signed-in clients kept for a module, one per principal, each made on first use, with its
    CSRF token fetched once: for the many cases that only read or are refused (each still checks
    the session afterwards), so they don't sign in again every time."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._clients: dict[str, FlaskClient] = {}
        self._tokens: dict[str, str] = {}

    def client(self, principal: str) -> FlaskClient:
        if principal not in self._clients:
            self._clients[principal] = sign_in(self.world, principal)
        return self._clients[principal]

    def token(self, principal: str) -> str:
        if principal not in self._tokens:
            self._tokens[principal] = page_token(self.client(principal))
        return self._tokens[principal]


def is_signed_in(client: FlaskClient) -> bool:
    """True when the dashboard opens, False when the client is sent to the login page."""
    response = client.get("/banking/dashboard")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def totp(secret: str, at: float) -> str:
    """The 6-digit RFC 6238 code of base32 `secret` at Unix time `at` (30-second steps, SHA-1),
    as an authenticator app shows it."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, int(at // 30).to_bytes(8, "big"), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    return f"{(int.from_bytes(digest[offset:offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


_MFA_KEY = re.compile(r'id="mfa-key">([A-Z2-7 ]+)<')


def enrol_second_factor(world: World) -> SimpleNamespace:
    """A new customer who turned two-step sign-in on through /auth/mfa/setup (DESIGN.md §5).
    Returns email, secret, `client` (still signed in) and `next_code`: a code for the next time
    step (the enrolment used the current one, and each step is accepted once)."""
    with world.app.app_context():
        user = factories.make_user("customer")
    client = sign_in_as(world.app, user)
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    secret = _MFA_KEY.search(page).group(1).replace(" ", "")
    now = time.time()
    data = {"code": totp(secret, now)}
    if world.app.config["WTF_CSRF_ENABLED"]:
        data["csrf_token"] = csrf_token_from(page)
    assert client.post("/auth/mfa/setup", data=data).status_code == 302, "enrolment failed"
    return SimpleNamespace(email=user.email, secret=secret, client=client, next_code=totp(secret, now + 30))


# -------------------------------------------------------------------------------------------------
# What an attack could change
# -------------------------------------------------------------------------------------------------

WATCHED = (User, Account, Transaction, SupportTicket, TicketNote, LoginAttempt)


def snapshot(app: Flask) -> dict:
    """Every row, every column, of user (password hash, session token and second factor
    included), account (balances, statuses, owners), transaction (the ledger), support_ticket,
    ticket_note and login_attempt, by table name. The audit log is apart: see audit_since."""
    with app.app_context():
        return {model.__tablename__: [tuple(row) for row in db.session.execute(
                    select(*model.__table__.columns).order_by(model.__table__.c.id)).all()]
                for model in WATCHED}


def last_audit_id(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.max(AuditLog.id))) or 0


def audit_since(app: Flask, after_id: int) -> list[SimpleNamespace]:
    """Audit rows with an id above `after_id`, oldest first (action, user_id, ip_address, details)."""
    with app.app_context():
        found = db.session.execute(
            select(AuditLog.action, AuditLog.user_id, AuditLog.ip_address, AuditLog.details)
            .where(AuditLog.id > after_id).order_by(AuditLog.id)
        ).all()
    return [SimpleNamespace(action=a, user_id=u, ip_address=ip, details=d) for a, u, ip, d in found]


def assert_unchanged(app: Flask, before: dict, what: str) -> None:
    """Assert that the snapshot of `app` equals `before`, naming the table that changed."""
    after = snapshot(app)
    for table in before:
        assert after[table] == before[table], f"{what} changed the {table} table"


# -------------------------------------------------------------------------------------------------
# The app's own routes, with real ids and realistic forms
# -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def route_app() -> Flask:
    """An application used only to read its url_map and view functions (never requested)."""
    return build_app(":memory:")


def app_routes() -> list[tuple[str, str]]:
    """Every (rule, method) the app serves, HEAD and OPTIONS aside, sorted."""
    return sorted((rule.rule, method) for rule in route_app().url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def rules_for(method: str) -> list[str]:
    """The rules that answer `method` (e.g. every POST route), sorted."""
    return sorted({rule for rule, served in app_routes() if served == method})


def rules_with_arguments() -> list[str]:
    """The rules with a URL variable (`<id:...>`, `<path:...>`), sorted."""
    return sorted({rule.rule for rule in route_app().url_map.iter_rules() if rule.arguments})


def view_of(rule: str):
    """The view function serving `rule`."""
    endpoint = next(r.endpoint for r in route_app().url_map.iter_rules() if r.rule == rule)
    return route_app().view_functions[endpoint]


def allowed_principal(rule: str) -> str:
    """A principal the route lets through: anonymous for login and registration, else the first
    role of its roles_required (a plain login_required page: a customer)."""
    if rule in ANONYMOUS_FORMS:
        return "anonymous"
    return getattr(view_of(rule), "allowed_roles", ("customer",))[0]


def _transfer_query(w: World) -> str:
    # Admins choose whose accounts the form lists; customers' own accounts are listed regardless.
    return f"?owner_user_id={w.users['customer'].id}"


# rule -> the concrete path to request, using real objects of the World: an account that is active
# for freeze, a frozen one for unfreeze, the customer's user for edit, the victim's ticket.
ROUTE_PATHS: dict[str, Callable[[World], str]] = {
    "/static/<path:filename>": lambda w: "/static/css/main.css",
    "/bootstrap/static/<path:filename>": lambda w: "/bootstrap/static/css/bootstrap.min.css",
    "/banking/admin/users/<id:user_id>/edit": lambda w: f"/banking/admin/users/{w.users['customer'].id}/edit",
    "/banking/admin/accounts/<id:account_id>/freeze":
        lambda w: f"/banking/admin/accounts/{w.accounts['victim_checking'].id}/freeze",
    "/banking/admin/accounts/<id:account_id>/unfreeze":
        lambda w: f"/banking/admin/accounts/{w.accounts['victim_frozen'].id}/unfreeze",
    "/support/tickets/<id:ticket_id>": lambda w: f"/support/tickets/{w.tickets['victim']}",
    "/banking/transfer/internal": lambda w: "/banking/transfer/internal" + _transfer_query(w),
    "/banking/transfer/external": lambda w: "/banking/transfer/external" + _transfer_query(w),
}


def path_for(rule: str, world: World) -> str:
    """The concrete path of `rule` in `world` (a rule without variables is its own path)."""
    return ROUTE_PATHS[rule](world) if rule in ROUTE_PATHS else rule


def _key_for(w: World, actor: SimpleNamespace | None) -> str:
    if w.app is None:  # form_fields' stand-in world
        return ""
    return factories.issued_key(w.app, (actor or w.users["customer"]).id)


# rule -> a form that the route would accept from an allowed principal, were its CSRF token there
# (`actor`: who sends it; None when anonymous). Every POST route must have one: see
# test_post_without_token.test_every_post_route_has_a_realistic_form.
REALISTIC_FORMS: dict[str, Callable[[World, SimpleNamespace | None], dict[str, str]]] = {
    "/auth/register": lambda w, actor: {
        "full_name": "Mallory Example", "email": "mallory@example.com", "phone": "+44 20 7946 0000",
        "password": "purple otter quietly sings 1987", "confirm_password": "purple otter quietly sings 1987",
    },
    "/auth/login": lambda w, actor: {"email": (actor or w.users["customer"]).email, "password": DEFAULT_PASSWORD},
    "/auth/logout": lambda w, actor: {"submit": "Confirm"},
    "/auth/profile": lambda w, actor: {"full_name": "Changed By Attacker", "phone": "+1 555 0199"},
    "/auth/change-password": lambda w, actor: {
        "current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
    },
    "/banking/open-account": lambda w, actor: {
        "type": "checking", "opening_balance": "100.00", "owner_user_id": str(w.users["customer"].id),
    },
    "/banking/transfer/internal": lambda w, actor: {
        "source_account": str(w.accounts["own_checking"].id), "target_account": str(w.accounts["own_savings"].id),
        "amount": "10.00", "description": "Moving savings", "idempotency_key": _key_for(w, actor),
    },
    "/banking/transfer/external": lambda w, actor: {
        "source_account": str(w.accounts["own_checking"].id),
        "target_account_number": w.accounts["victim_checking"].account_number,
        "amount": "10.00", "description": "Rent for May", "idempotency_key": _key_for(w, actor),
    },
    "/banking/admin/users/<id:user_id>/edit": lambda w, actor: {
        "full_name": w.users["customer"].full_name, "email": w.users["customer"].email,
        "phone": "+1 555 0100", "role": "admin", "is_active": "y",
    },
    "/banking/admin/accounts/<id:account_id>/freeze": lambda w, actor: {"submit": "Confirm"},
    "/banking/admin/accounts/<id:account_id>/unfreeze": lambda w, actor: {"submit": "Confirm"},
    "/support/create": lambda w, actor: {"subject": "Please raise my limit", "description": "I need a higher limit."},
    "/support/tickets/<id:ticket_id>": lambda w, actor: {"status": "resolved", "note": "Closing this ticket."},
    "/auth/mfa": lambda w, actor: {"code": "123456"},
    "/auth/mfa/setup": lambda w, actor: {"code": "123456"},
    "/auth/mfa/disable": lambda w, actor: {"password": DEFAULT_PASSWORD},
}


class _AnyObject(dict):
    def __missing__(self, key):
        return SimpleNamespace(id=0, email="", full_name="", account_number="")


def form_fields(rule: str) -> list[str]:
    """The field names of REALISTIC_FORMS[rule], known without a database (for parametrize)."""
    stand_in = World(app=None, users=_AnyObject(), accounts=_AnyObject(), tickets=_AnyObject())  # type: ignore[arg-type]
    return list(REALISTIC_FORMS[rule](stand_in, None))


# -------------------------------------------------------------------------------------------------
# Pages and URLs as a browser sees them
# -------------------------------------------------------------------------------------------------

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
SPECIAL_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "file"})
_C0_AND_SPACE = "".join(chr(code) for code in range(0x21))


def resolve_like_a_browser(url: str, base: str = THIS_SITE) -> SplitResult:
    """Where a browser goes for `url` (a Location header or a link) found on page `base`.

    Follows the WHATWG URL Standard where it differs from urllib: leading and trailing C0
    controls and spaces are stripped and tabs and newlines removed anywhere; in http(s) URLs a
    backslash is a slash; after a special scheme other than the base's, or after two or more
    leading slashes, any run of slashes is skipped and the host follows (`///evil.example`,
    `https:evil.example`, `http:\\\\evil.example` all lead to evil.example).
    """
    text = re.sub(r"[\t\n\r]", "", url.strip(_C0_AND_SPACE))
    base_scheme = urlsplit(base).scheme
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme is not None and scheme not in SPECIAL_SCHEMES:
        return urlsplit(text)
    text = text.replace("\\", "/")
    rest = text[match.end():] if match else text
    if scheme is not None and scheme != base_scheme:
        return urlsplit(f"{scheme}://{rest.lstrip('/')}")
    if rest.startswith("//"):
        return urlsplit(f"{scheme or base_scheme}://{rest.lstrip('/')}")
    return urlsplit(urljoin(base, rest))


def assert_stays_on_this_site(url: str, *, base: str = THIS_SITE, what: str = "URL") -> SplitResult:
    """Assert that a browser following `url` stays on http://localhost; returns where it goes."""
    target = resolve_like_a_browser(url, base)
    assert (target.scheme, target.netloc) == ("http", "localhost"), f"{what} {url!r} leads to {target.geturl()!r}"
    return target


class _UrlCollector(HTMLParser):
    URL_ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "data", "poster", "cite", "background",
                                "xlink:href"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in self.URL_ATTRIBUTES:
                self.urls.append((tag, name, value))
            elif name == "srcset":
                self.urls.extend((tag, name, part.split()[0]) for part in value.split(",") if part.strip())
            elif tag == "meta" and name == "content" and "url=" in value.lower():
                self.urls.append((tag, "refresh", value.split("=", 1)[1].strip("'\" ")))


def urls_in(page: str) -> list[tuple[str, str, str]]:
    """(tag, attribute, URL) of every URL a browser could follow or load from `page`."""
    collector = _UrlCollector()
    collector.feed(page)
    collector.close()
    return collector.urls
