"""Attack suite: client-IP spoofing through forwarding headers (CWE-348, use of a less trusted
source; CWE-307 throttle bypass) against the sign-in throttle (20 failures per IP, 5 per email),
the audit log's `ip_address`, and Flask-Limiter's per-IP registration limit.

DESIGN.md section 5b: "The client IP is request.remote_addr; X-Forwarded-For is honoured only
when TRUSTED_PROXY_COUNT is set (Werkzeug's ProxyFix), so a client can't choose its own IP."
tests/integration/test_auth.py shows X-Forwarded-For alone is ignored; this module tries every
header a client could forge, and the proxied set-up where only the proxy's hop may be believed.
"""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import LoginAttempt, User
from tests import factories
from tests.conftest import build_app
from tests.factories import DEFAULT_PASSWORD
from tests.security.attack_support import audit_since, fresh_ip, last_audit_id, new_client, populated_app

PROXY = "192.0.2.1"            # the reverse proxy's own address, as the app's socket sees it
WRONG = "not the password at all"
_emails = itertools.count(1)


def _spoofed(n: int) -> str:
    return f"198.51.{n // 250}.{n % 250 + 1}"


# Headers a client might forge to choose "its" address; n numbers the attempt (a new address each time).
FORGED_HEADERS = {
    "X-Forwarded-For": lambda n: {"X-Forwarded-For": _spoofed(n)},
    "X-Forwarded-For with a chain": lambda n: {"X-Forwarded-For": f"{_spoofed(n)}, {_spoofed(n + 100)}"},
    "X-Real-IP": lambda n: {"X-Real-IP": _spoofed(n)},
    "Forwarded (RFC 7239)": lambda n: {"Forwarded": f"for={_spoofed(n)};proto=https"},
    "True-Client-IP": lambda n: {"True-Client-IP": _spoofed(n)},
    "CF-Connecting-IP": lambda n: {"CF-Connecting-IP": _spoofed(n)},
    "X-Client-IP": lambda n: {"X-Client-IP": _spoofed(n)},
    "X-Cluster-Client-IP": lambda n: {"X-Cluster-Client-IP": _spoofed(n)},
    "all of them at once": lambda n: {
        "X-Forwarded-For": _spoofed(n), "X-Real-IP": _spoofed(n), "Forwarded": f"for={_spoofed(n)}",
        "True-Client-IP": _spoofed(n), "CF-Connecting-IP": _spoofed(n), "X-Client-IP": _spoofed(n),
    },
}


@pytest.fixture(scope="module")
def world(test_backend):
    """TRUSTED_PROXY_COUNT unset, as when the app faces clients directly."""
    with populated_app(test_backend) as populated:
        yield populated


@pytest.fixture(scope="module")
def proxied(test_backend):
    """TRUSTED_PROXY_COUNT=1: one reverse proxy in front, which appends the address it saw."""
    with populated_app(test_backend, TRUSTED_PROXY_COUNT=1) as populated:
        yield populated


def _fail(client, email, headers, **kwargs):
    response = client.post("/auth/login", headers=headers, data={"email": email, "password": WRONG}, **kwargs)
    assert response.status_code == 400, response.status_code
    return response


def _recorded_ips(app, emails) -> set[str]:
    with app.app_context():
        return set(db.session.scalars(select(LoginAttempt.ip_address).where(LoginAttempt.email.in_(emails))))


@pytest.mark.parametrize("forge", FORGED_HEADERS.values(), ids=FORGED_HEADERS.keys())
def test_forged_headers_do_not_reset_the_per_ip_throttle(world, forge):
    """IP spoofing (CWE-348) to bypass the sign-in throttle (CWE-307): without trusted proxies,
    when 20 failed sign-ins (each for another email) come from one address with a new forged
    address in this header every time, is the 21st attempt — the right password of a real
    user — refused with 429, and are the throttle rows and the audit rows recorded under the
    real address only?"""
    client = new_client(world.app)
    real = client.environ_base["REMOTE_ADDR"]
    emails = [f"spray{next(_emails)}@example.com" for _ in range(20)]
    audit_head = last_audit_id(world.app)

    for n, email in enumerate(emails):
        _fail(client, email, forge(n))
    final = client.post("/auth/login", headers=forge(99),
                        data={"email": world.users["customer"].email, "password": DEFAULT_PASSWORD})

    assert final.status_code == 429
    assert _recorded_ips(world.app, emails) == {real}
    audited = audit_since(world.app, audit_head)
    assert [row.action for row in audited] == ["LOGIN_FAILURE"] * 20 + ["LOGIN_THROTTLED"]
    assert {row.ip_address for row in audited} == {real}


@pytest.mark.parametrize("trusted_proxies", [0, 1], ids=["direct", "behind one proxy"])
def test_changing_address_does_not_reset_the_per_email_throttle(world, proxied, trusted_proxies):
    """IP spoofing (CWE-348) against the per-email throttle (CWE-307): when 5 failures for one
    email each come from another address — forged (direct), or genuinely different as the proxy
    reports it — is the right password for that email then refused with 429?"""
    target = world if trusted_proxies == 0 else proxied
    email = f"victim{next(_emails)}@example.com"
    with target.app.app_context():
        factories.make_user("customer", email=email)
    for n in range(5):
        client = new_client(target.app, PROXY if trusted_proxies else None)
        _fail(client, email, {"X-Forwarded-For": _spoofed(n)})

    final = new_client(target.app, PROXY if trusted_proxies else None).post(
        "/auth/login", headers={"X-Forwarded-For": _spoofed(77)}, data={"email": email, "password": DEFAULT_PASSWORD})
    assert final.status_code == 429


def test_behind_one_proxy_only_the_proxys_hop_is_believed(proxied):
    """IP spoofing (CWE-348) behind a trusted proxy: with TRUSTED_PROXY_COUNT=1 the proxy appends
    the address it saw to whatever X-Forwarded-For the client sent. When a client prepends a new
    forged address to every one of 20 failures, are they all counted (and audited) under the
    address the proxy appended, so the 21st attempt is refused with 429?"""
    client = new_client(proxied.app, PROXY)
    real = fresh_ip()
    emails = [f"spray{next(_emails)}@example.com" for _ in range(20)]
    audit_head = last_audit_id(proxied.app)

    for n, email in enumerate(emails):
        _fail(client, email, {"X-Forwarded-For": f"{_spoofed(n)}, {_spoofed(n + 50)}, {real}",
                              "X-Real-IP": _spoofed(n), "Forwarded": f"for={_spoofed(n)}"})
    final = client.post("/auth/login", headers={"X-Forwarded-For": f"{_spoofed(99)}, {real}"},
                        data={"email": proxied.users["customer"].email, "password": DEFAULT_PASSWORD})

    assert final.status_code == 429
    assert _recorded_ips(proxied.app, emails) == {real}
    assert {row.ip_address for row in audit_since(proxied.app, audit_head)} == {real}


def test_behind_one_proxy_other_forwarding_headers_are_not_believed(proxied):
    """IP spoofing (CWE-348) behind a trusted proxy: ProxyFix believes X-Forwarded-For only. When
    a request carries no X-Forwarded-For but forged X-Real-IP, Forwarded and True-Client-IP, is
    the failure recorded under the address of the connection (the proxy), not a forged one?"""
    client = new_client(proxied.app, PROXY)
    email = f"spray{next(_emails)}@example.com"
    _fail(client, email, {"X-Real-IP": "203.0.113.5", "Forwarded": "for=203.0.113.6", "True-Client-IP": "203.0.113.7"})
    assert _recorded_ips(proxied.app, [email]) == {PROXY}


@pytest.fixture
def rate_limited_app(make_database):
    """`rate_limited_app(**settings)`: an app of this case alone with Flask-Limiter on and
    REGISTER_RATE_LIMIT at 2 an hour (its memory storage starts empty when the app is built)."""
    return lambda **settings: build_app(make_database(), RATELIMIT_ENABLED=True, REGISTER_RATE_LIMIT="2 per hour",
                                        **settings)


def _registration(n: int) -> dict:
    password = "purple otter quietly sings 1987"
    return {"full_name": "Sybil Example", "email": f"sybil{n}@example.com", "phone": "+44 20 7946 0000",
            "password": password, "confirm_password": password}


@pytest.mark.parametrize("trusted_proxies", [0, 1], ids=["direct", "behind one proxy"])
def test_registration_rate_limit_is_not_escaped_by_rotating_forwarded_for(rate_limited_app, trusted_proxies):
    """IP spoofing (CWE-348) to escape a request rate limit (CWE-770): with registration limited
    to 2 an hour per address, does a client rotating a forged X-Forwarded-For (directly, or
    prepended in front of the proxy's hop) still get 429 on its third registration, with only
    two users created?"""
    application = rate_limited_app(TRUSTED_PROXY_COUNT=trusted_proxies)
    client = new_client(application, PROXY if trusted_proxies else None)
    real = fresh_ip()

    def forwarded(n):
        return f"{_spoofed(n)}, {real}" if trusted_proxies else _spoofed(n)

    statuses = [client.post("/auth/register", headers={"X-Forwarded-For": forwarded(n), "X-Real-IP": _spoofed(n)},
                            data=_registration(n)).status_code for n in range(3)]

    assert statuses == [302, 302, 429]
    with application.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 2
