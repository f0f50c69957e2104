"""Attack suite: cross-site request forgery (CWE-352) with Flask-WTF switched on, as in production.

tests/integration/test_csrf.py proves the basics (no token, a made-up token, another session's
token at sign-in, the token renewed at sign-in). This module attacks what it leaves open: tokens
forged with the wrong key or out of date, a token replayed after logout and a new sign-in, an
attacker's own valid token in the victim's signed-in session, a token moved to the query string,
state changed by a GET (which no token would protect), and Flask-WTF's Referer check over HTTPS.
(Flask-WTF checks the Referer, not the Origin header; a browser can't send a same-origin Referer
with a foreign Origin, so a foreign Origin is covered by the Referer cases.)
"""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qsl

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.factories import DEFAULT_PASSWORD, issued_key
from tests.integration.test_csrf import assert_csrf_refused
from tests.security.attack_support import (
    PRINCIPALS,
    REALISTIC_FORMS,
    assert_unchanged,
    audit_since,
    is_signed_in,
    last_audit_id,
    page_token,
    path_for,
    rules_for,
    sign_in,
    snapshot,
)

PROFILE = "/auth/profile"
FORGED_NAME = "Forged Request Name"
CSRF_SALT = "wtf-csrf-token"  # Flask-WTF's serializer salt
OTHER_SECRET_KEY = "an-attackers-own-secret-key-0123456789abcdef"


def _session_csrf_value(app, client) -> str:
    """The raw CSRF value stored in the client's signed session cookie (what tokens sign)."""
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    return app.session_interface.get_signing_serializer(app).loads(cookie.value)["csrf_token"]


class _TwoHoursAgoSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(time.time()) - 2 * 3600


def _forged(kind: str, world, client) -> str:
    """A token of `kind` for the victim's session, made without the server issuing it."""
    app = world.app
    if kind == "random string":
        return secrets.token_urlsafe(40)
    if kind == "empty":
        return ""
    page_token(client)  # the session holds a CSRF value once a page has issued a token
    raw = _session_csrf_value(app, client)
    if kind == "session value signed with another SECRET_KEY":
        return URLSafeTimedSerializer(OTHER_SECRET_KEY, salt=CSRF_SALT).dumps(raw)
    if kind == "session value signed for another purpose (salt)":
        return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="itsdangerous").dumps(raw)
    if kind == "session value, signature expired (2 h, limit 1 h)":
        return URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=CSRF_SALT, signer=_TwoHoursAgoSigner).dumps(raw)
    if kind == "session value unsigned":
        return raw
    if kind == "valid token with its signature altered":
        signed, _, signature = page_token(client).rpartition(".")
        # The first character of the signature: all six of its bits count (the last one's don't).
        return f"{signed}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    if kind == "transfer idempotency key (signed by the server, other salt)":
        return issued_key(app, world.users["victim"].id)
    raise AssertionError(kind)


FORGERIES = [
    "random string",
    "empty",
    "session value signed with another SECRET_KEY",
    "session value signed for another purpose (salt)",
    "session value, signature expired (2 h, limit 1 h)",
    "session value unsigned",
    "valid token with its signature altered",
    "transfer idempotency key (signed by the server, other salt)",
]


def _post_profile(client, token, **kwargs):
    return client.post(PROFILE, data={"full_name": FORGED_NAME, "phone": "+1 555 0199", "csrf_token": token}, **kwargs)


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_token_is_refused_on_a_signed_in_change(world, kind):
    """CSRF (CWE-352), forged token: is a token the server never issued to this session (random,
    signed with another key or salt, expired, unsigned, altered) refused with the plain 400 page,
    leaving the victim's profile as it was?"""
    victim = sign_in(world, "victim")
    token = _forged(kind, world, victim)
    before = snapshot(world.app)

    assert_csrf_refused(_post_profile(victim, token))
    assert_unchanged(world.app, before, f"a profile change with a forged token ({kind})")
    assert is_signed_in(victim)


def test_control_the_sessions_own_token_is_accepted(world):
    """CSRF (CWE-352), the control for this module: does the same form with the session's own
    token get through the check (so the refusals above are the token's doing)? It posts the
    customer's current name and phone, so nothing changes."""
    client = sign_in(world, "customer")
    response = client.post(PROFILE, data={"full_name": world.users["customer"].full_name, "phone": "+1 555 0100",
                                          "csrf_token": page_token(client)})
    assert response.status_code == 302


def test_token_from_before_logout_fails_after_signing_in_again(world):
    """CSRF (CWE-352), replay: is a token captured in a signed-in session useless once that user
    has logged out and signed in again (the session, and its token, are new at sign-in)?"""
    client = sign_in(world, "victim")
    captured = page_token(client)
    assert client.post("/auth/logout", data={"csrf_token": captured}).status_code == 302
    assert not is_signed_in(client)
    sign_in_again = client.post("/auth/login", data={"email": world.users["victim"].email,
                                                     "password": DEFAULT_PASSWORD,
                                                     "csrf_token": page_token(client)})
    assert sign_in_again.status_code == 302
    before = snapshot(world.app)

    assert_csrf_refused(_post_profile(client, captured))
    assert_unchanged(world.app, before, "a replayed token")


@pytest.mark.parametrize("attacker_role", ["anonymous", "customer"])
def test_attackers_own_token_is_refused_in_the_victims_session(world, attacker_role):
    """CSRF (CWE-352), cross-session token: the attacker loads the site (anonymously, or signed
    in as a customer) to get a genuine token, then makes the victim's browser send the victim's
    form with it. Is it refused, because the token belongs to another session?"""
    attackers_token = page_token(sign_in(world, attacker_role))
    victim = sign_in(world, "victim")
    before = snapshot(world.app)

    assert_csrf_refused(_post_profile(victim, attackers_token))
    assert_unchanged(world.app, before, "a change with the attacker's token")


def test_token_in_the_query_string_is_not_accepted(world):
    """CSRF (CWE-352), token moved to the URL: tokens in URLs leak through logs and Referer. Is a
    POST that carries its valid token only in the query string refused?"""
    victim = sign_in(world, "victim")
    token = page_token(victim)
    before = snapshot(world.app)

    response = victim.post(PROFILE, query_string={"csrf_token": token},
                           data={"full_name": FORGED_NAME, "phone": "+1 555 0199"})
    assert_csrf_refused(response)
    assert_unchanged(world.app, before, "a token in the query string")


@pytest.mark.parametrize("override", ["X-HTTP-Method-Override: GET", "_method=GET", "X-HTTP-Method: GET"])
def test_method_override_does_not_skip_the_check(world, override):
    """CSRF (CWE-352), method override: can a POST that claims to be a GET (a header or a `_method`
    field, as some frameworks honour) skip the token check?"""
    victim = sign_in(world, "victim")
    data = {"full_name": FORGED_NAME, "phone": "+1 555 0199"}
    headers = {}
    if override.startswith("_method"):
        data["_method"] = "GET"
    else:
        name, value = override.split(": ")
        headers[name] = value
    before = snapshot(world.app)

    assert_csrf_refused(victim.post(PROFILE, data=data, headers=headers))
    assert_unchanged(world.app, before, f"a POST with {override}")


GET_ROUTES = rules_for("GET")
STATE_READING_AUDIT = {"AUDIT_VIEWED", "ACCESS_DENIED"}  # reads that are logged by design (DESIGN.md §4, §6)


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("rule", GET_ROUTES)
def test_no_get_route_changes_state(world, sessions, rule, principal):
    """CSRF (CWE-352) via a state-changing GET: a GET needs no token, so any GET that changes
    something is forgeable by an image tag. Sent the same route's POST fields and a valid token
    in the query string, does every GET route leave users, accounts, ledger, tickets and the
    session as they were (the audit log gains only the reads it records by design)?"""
    client = sessions.client(principal)
    form = REALISTIC_FORMS.get(rule, lambda w, actor: {})(world, world.user(principal))
    query = form | {"csrf_token": sessions.token(principal)}
    path, _, path_query = path_for(rule, world).partition("?")
    query |= dict(parse_qsl(path_query))
    before, audit_head = snapshot(world.app), last_audit_id(world.app)

    response = client.get(path, query_string=query)
    response.close()  # static files are streamed from an open file

    assert response.status_code < 500
    assert_unchanged(world.app, before, f"GET {rule} as {principal}")
    actions = {row.action for row in audit_since(world.app, audit_head)}
    assert actions <= STATE_READING_AUDIT, actions
    assert is_signed_in(client) == (principal != "anonymous")


REFERER_CASES = {
    "missing Referer": None,
    "foreign site": "https://evil.example/transfer.html",
    "same host over plain http": "http://localhost/auth/profile",
    "look-alike host with this host as prefix": "https://localhost.evil.example/auth/profile",
    "this host as the attacker's userinfo": "https://localhost@evil.example/auth/profile",
    "same host on another port": "https://localhost:8443/auth/profile",
}


@pytest.mark.parametrize("referer", REFERER_CASES.values(), ids=REFERER_CASES.keys())
def test_https_post_with_a_valid_token_needs_a_same_origin_referer(world, referer):
    """CSRF (CWE-352), Flask-WTF's SSL strict check (WTF_CSRF_SSL_STRICT): over HTTPS, is a POST
    refused — even with a valid token — when its Referer is missing or names another origin
    (another site, plain http, another port, a look-alike host)?"""
    assert world.app.config["WTF_CSRF_SSL_STRICT"] is True
    victim = sign_in(world, "victim")
    token = page_token(victim)
    headers = {} if referer is None else {"Referer": referer}
    before = snapshot(world.app)

    response = _post_profile(victim, token, base_url="https://localhost", headers=headers)
    assert_csrf_refused(response)
    assert_unchanged(world.app, before, f"an HTTPS POST with {referer!r} as Referer")


def test_https_post_with_a_valid_token_and_same_origin_referer_goes_through(world):
    """CSRF (CWE-352), the control for the Referer cases: with the valid token and a Referer on
    this same HTTPS origin, is the change accepted (so those refusals are the Referer's doing)?"""
    client = sign_in(world, "customer")
    token = page_token(client)
    response = client.post(PROFILE, base_url="https://localhost", headers={"Referer": "https://localhost/auth/profile"},
                           data={"full_name": world.users["customer"].full_name, "phone": "+1 555 0100",
                                 "csrf_token": token})
    assert response.status_code == 302
