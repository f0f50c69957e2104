"""Request rate limits (Flask-Limiter, DESIGN.md section 5b; OWASP ASVS 4.0.3 2.2.1 and 11.1.4):
transfers and ticket creation per user, login and registration per IP, each limit taken from
configuration, each refusal a plain 429 page with the security headers that changes nothing.
(Login, registration and tickets are also covered in tests/integration; the cross-process Redis
case in tests/e2e/test_multiprocess_throttle.py.)"""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.factories import DEFAULT_PASSWORD, issued_key
from tests.integration.test_headers_and_errors import assert_security_headers
from tests.security.test_session_lifetime import MINUTE

LIMITED = {"RATELIMIT_ENABLED": True, "TRANSFER_RATE_LIMIT": "2 per minute"}
RATE_LIMIT_MESSAGE = "Too many attempts. Please wait a few minutes and try again."


def _transfer(client, app, user, path, source, target):
    data = {"source_account": source.id, "amount": "1.00", "description": "",
            "idempotency_key": issued_key(app, user.id)}
    if path.endswith("internal"):
        data["target_account"] = target.id
    else:
        data["target_account_number"] = target.account_number
    return client.post(path, data=data)


def _balance(app, account_id) -> Decimal:
    from app.extensions import db
    from app.models import Account

    with app.app_context():
        return db.session.get(Account, account_id).balance


@pytest.mark.parametrize("app_overrides", [LIMITED])
@pytest.mark.parametrize("path", ["/banking/transfer/internal", "/banking/transfer/external"])
def test_resource_exhaustion_transfers_are_limited_per_user(app, client, auth, customer, other_customer,
                                                            make_account, path):
    """Missing rate limiting (CWE-770): with TRANSFER_RATE_LIMIT at 2 a minute, is a customer's
    third transfer a plain 429 that moves nothing, while another customer (same address) can still
    transfer?"""
    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00", type="savings") if path.endswith("internal") else make_account(
        other_customer, "0.00")
    auth.login(customer.email)

    statuses = [_transfer(client, app, customer, path, source, target).status_code for _ in range(2)]
    refused = _transfer(client, app, customer, path, source, target)

    assert statuses == [302, 302]
    assert refused.status_code == 429
    page = refused.get_data(as_text=True)
    assert RATE_LIMIT_MESSAGE in page and 'name="amount"' not in page
    assert_security_headers(refused)
    assert _balance(app, source.id) == Decimal("98.00") and _balance(app, target.id) == Decimal("2.00")
    assert client.get(path).status_code == 200, "the form itself is not limited"

    other_source = make_account(other_customer, "10.00")
    other_target = make_account(other_customer, "0.00", type="savings") if path.endswith("internal") else source
    auth.logout()
    auth.login(other_customer.email)
    assert _transfer(client, app, other_customer, path, other_source, other_target).status_code == 302


@pytest.mark.parametrize("app_overrides", [LIMITED])
def test_resource_exhaustion_both_transfer_forms_share_one_allowance(app, client, auth, customer, other_customer,
                                                                     make_account):
    """Missing rate limiting (CWE-770): is TRANSFER_RATE_LIMIT a customer's allowance for
    transfer POSTs on both forms together, so switching forms doesn't double it?"""
    source = make_account(customer, "100.00")
    own = make_account(customer, "0.00", type="savings")
    other = make_account(other_customer, "0.00")
    auth.login(customer.email)

    statuses = [_transfer(client, app, customer, "/banking/transfer/internal", source, own).status_code,
                _transfer(client, app, customer, "/banking/transfer/external", source, other).status_code,
                _transfer(client, app, customer, "/banking/transfer/internal", source, own).status_code,
                _transfer(client, app, customer, "/banking/transfer/external", source, other).status_code]

    assert statuses == [302, 302, 429, 429]
    assert _balance(app, source.id) == Decimal("98.00")


@pytest.mark.parametrize("app_overrides", [LIMITED])
def test_resource_exhaustion_transfer_limit_resets_after_its_window(app, client, auth, customer, make_account):
    """Missing rate limiting (CWE-770): is the limit a window, so transfers work again a minute
    later (the limit slows an attacker, it doesn't lock the customer out)?"""
    import time_machine

    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00", type="savings")
    path = "/banking/transfer/internal"
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        auth.login(customer.email)
        assert [_transfer(client, app, customer, path, source, target).status_code for _ in range(3)] == [302, 302, 429]
        clock.shift(MINUTE + 1)
        assert _transfer(client, app, customer, path, source, target).status_code == 302


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": False, "TRANSFER_RATE_LIMIT": "1 per minute"}])
def test_resource_exhaustion_limits_can_be_switched_off_for_load_tests(app, client, auth, customer, make_account):
    """Is RATELIMIT_ENABLED=false (DESIGN section 8, for load tests) the one way to lift the
    request limits, so the test above fails for the right reason?"""
    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00", type="savings")
    auth.login(customer.email)
    statuses = [_transfer(client, app, customer, "/banking/transfer/internal", source, target).status_code
                for _ in range(3)]
    assert statuses == [302, 302, 302]


def test_resource_exhaustion_limits_are_on_by_default():
    """Are the request limits on by default outside tests, each with a configured limit?"""
    from app.config import BaseConfig, ProductionConfig

    assert BaseConfig.RATELIMIT_ENABLED is True and ProductionConfig.RATELIMIT_ENABLED is True
    for name in ("LOGIN_RATE_LIMIT", "REGISTER_RATE_LIMIT", "TRANSFER_RATE_LIMIT", "TICKET_RATE_LIMIT",
                 "ACCESS_DENIED_RATE_LIMIT"):
        assert " per " in getattr(ProductionConfig, name), name


def _denied_rows(app) -> list[int]:
    from sqlalchemy import select

    from app.extensions import db
    from app.models import AuditLog

    with app.app_context():
        return list(db.session.scalars(select(AuditLog.user_id).where(AuditLog.action == "ACCESS_DENIED")))


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "ACCESS_DENIED_RATE_LIMIT": "3 per minute"}])
def test_resource_exhaustion_refusals_by_role_cannot_fill_the_audit_log(app, client, auth, customer, other_customer):
    """Audit log flooding (CWE-779): with ACCESS_DENIED_RATE_LIMIT at 3 a minute, does a customer
    opening staff pages get 403 and an ACCESS_DENIED row three times, then a plain 429 that
    writes no row, while another customer's refusals are still recorded, and their own allowed
    pages still open?"""
    auth.login(customer.email)
    statuses = [client.get("/audit/logs").status_code for _ in range(5)]
    refused = client.get("/support/tickets")

    assert statuses == [403, 403, 403, 429, 429] and refused.status_code == 429
    assert RATE_LIMIT_MESSAGE in refused.get_data(as_text=True)
    assert_security_headers(refused)
    assert _denied_rows(app) == [customer.id] * 3
    assert client.get("/banking/dashboard").status_code == 200

    other = app.test_client()
    other.post("/auth/login", data={"email": other_customer.email, "password": DEFAULT_PASSWORD})
    assert other.get("/audit/logs").status_code == 403
    assert _denied_rows(app) == [customer.id] * 3 + [other_customer.id]


# --- Retry-After (RFC 6585 section 4, RFC 9110 section 10.2.3) ---------------------------------


@pytest.mark.parametrize("app_overrides", [LIMITED])
def test_a_transfer_refused_by_the_rate_limit_says_when_to_retry(app, client, auth, customer, make_account):
    """Does the 429 of TRANSFER_RATE_LIMIT (2 a minute) carry Retry-After with the seconds until
    the oldest counted POST leaves the minute, and is a transfer refused one second before that
    time and accepted once it has passed?"""
    import time_machine

    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00", type="savings")
    path = "/banking/transfer/internal"
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        auth.login(customer.email)
        assert _transfer(client, app, customer, path, source, target).status_code == 302
        clock.shift(20)
        assert _transfer(client, app, customer, path, source, target).status_code == 302
        clock.shift(10)
        refused = _transfer(client, app, customer, path, source, target)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        clock.shift(29)
        refused = _transfer(client, app, customer, path, source, target)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        clock.shift(1.5)
        assert _transfer(client, app, customer, path, source, target).status_code == 302
    assert _balance(app, source.id) == Decimal("97.00")


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "ACCESS_DENIED_RATE_LIMIT": "3 per minute"}])
def test_a_refusal_by_role_past_its_allowance_says_when_to_retry(app, client, auth, customer):
    """Does the 429 that replaces a 403 past ACCESS_DENIED_RATE_LIMIT carry Retry-After: the
    seconds until the first counted refusal leaves the minute?"""
    import time_machine

    with time_machine.travel(1_900_000_000, tick=False) as clock:
        auth.login(customer.email)
        for _ in range(3):
            assert client.get("/audit/logs").status_code == 403
            clock.shift(5)
        refused = client.get("/audit/logs")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "45"


@pytest.mark.parametrize("app_overrides", [LIMITED])
def test_a_429_goes_out_without_retry_after_when_the_limit_storage_fails(app, client, auth, customer, make_account,
                                                                         monkeypatch):
    """When the limiter's storage can't give the window (Redis gone after the refusal), is the
    refusal still a plain 429, only without the hint, for both kinds of limit?"""
    from app.extensions import limiter

    def unavailable(*_args, **_kwargs):
        raise ConnectionError("storage down")

    source = make_account(customer, "100.00")
    target = make_account(customer, "0.00", type="savings")
    path = "/banking/transfer/internal"
    auth.login(customer.email)
    for _ in range(2):
        assert _transfer(client, app, customer, path, source, target).status_code == 302
    monkeypatch.setattr(limiter.limiter, "get_window_stats", unavailable)
    refused = _transfer(client, app, customer, path, source, target)
    assert refused.status_code == 429 and "Retry-After" not in refused.headers
    assert RATE_LIMIT_MESSAGE in refused.get_data(as_text=True)
    with app.test_request_context("/"):
        from werkzeug.exceptions import TooManyRequests

        from app.extensions import refuse_over_allowance

        with pytest.raises(TooManyRequests) as refusal:
            refuse_over_allowance("TRANSFER_RATE_LIMIT", "transfer")
    assert refusal.value.retry_after is None
