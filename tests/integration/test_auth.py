"""Identity through the routes: registration, sign-in, throttling, sessions, profile and password
(DESIGN.md sections 5, 6 and 8)."""

from __future__ import annotations

import html
import json
import time
from datetime import timedelta

import itsdangerous.timed
import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select, update

from app.auth import services as auth_services
from app.extensions import db
from app.models import AuditLog, LoginAttempt, User, utcnow
from tests import factories
from tests.conftest import build_app
from tests.factories import DEFAULT_PASSWORD

GENERIC_LOGIN_ERROR = "Invalid email or password."
THROTTLED_MESSAGE = "Too many failed sign-in attempts"
NEW_PASSWORD = "violet harbour lanterns drift 2031"
REGISTER_PASSWORD = "purple otter quietly sings 1987"
OTHER_IP = "198.51.100.7"


# --- helpers ------------------------------------------------------------------------------


def registration(**changes) -> dict:
    data = {
        "full_name": "Alice Example",
        "email": "alice@example.com",
        "phone": "+44 20 7946 0000",
        "password": REGISTER_PASSWORD,
        "confirm_password": REGISTER_PASSWORD,
    }
    data.update(changes)
    return data


def login(client, email, password=DEFAULT_PASSWORD, *, ip=None, next_url=None):
    url = "/auth/login" + (f"?next={next_url}" if next_url is not None else "")
    kwargs = {"environ_base": {"REMOTE_ADDR": ip}} if ip else {}
    return client.post(url, data={"email": email, "password": password}, **kwargs)


def user_row(app, user_id):
    """A detached copy of the user's columns."""
    with app.app_context():
        user = db.session.get(User, user_id)
        return {c: getattr(user, c) for c in ("email", "role", "full_name", "phone", "password_hash",
                                              "is_active", "must_change_password", "session_token")}


def find_user(app, email):
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def set_user(app, user_id, **values):
    """Arrange a state straight in the database (set-up only, like the factories)."""
    with app.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(**values))
        db.session.commit()


def audit_rows(app, action):
    """[(user_id, details dict)] of the audit rows with `action`, oldest first."""
    with app.app_context():
        rows = db.session.execute(
            select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == action).order_by(AuditLog.id)
        ).all()
    return [(user_id, json.loads(details)) for user_id, details in rows]


def failures_for(app, email):
    with app.app_context():
        return db.session.scalar(select(func.count(LoginAttempt.id)).where(LoginAttempt.email == email))


def is_logged_in(client) -> bool:
    """True when the dashboard opens; False when the client is sent to the login page."""
    response = client.get("/banking/dashboard")
    if response.status_code == 200:
        return True
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]
    return False


def session_cookie(client):
    cookie = client.get_cookie("session")
    return cookie.value if cookie else None


def get_paths(app):
    """Every GET route without URL arguments, from the app's own url_map (so new pages are covered)."""
    return sorted(
        rule.rule for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.arguments and not rule.endpoint.endswith("static")
    )


# --- registration -------------------------------------------------------------------------


def test_register_page_opens_for_anonymous_users(client):
    """Does GET /auth/register show the form with every field of the contract?"""
    response = client.get("/auth/register")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for field in ("full_name", "email", "phone", "password", "confirm_password"):
        assert f'name="{field}"' in page


def test_register_creates_a_customer_and_redirects_to_login(client, app):
    """Does a valid registration create a customer with a normalized email, log REGISTER_SUCCESS,
    and redirect to the login page without logging in?"""
    response = client.post("/auth/register", data=registration(email="  Alice@Example.COM "))
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/login")
    user_id = find_user(app, "alice@example.com")
    assert user_id is not None
    row = user_row(app, user_id)
    assert row["role"] == "customer"
    assert row["password_hash"].startswith("$argon2id$")
    assert REGISTER_PASSWORD not in row["password_hash"]
    assert [uid for uid, _ in audit_rows(app, "REGISTER_SUCCESS")] == [user_id]
    assert not is_logged_in(client)
    follow = client.get("/auth/login")
    assert "Your account was created" in follow.get_data(as_text=True)


@pytest.mark.parametrize("role", ["admin", "auditor", "support"])
def test_register_ignores_a_posted_role(client, app, role):
    """Is the new user always a customer, even when the POST smuggles in a staff role?"""
    response = client.post("/auth/register", data=registration(role=role, is_active="y"))
    assert response.status_code == 302
    assert user_row(app, find_user(app, "alice@example.com"))["role"] == "customer"


@pytest.mark.parametrize("typed", ["taken@example.com", "TAKEN@example.com", " Taken@Example.Com "])
def test_register_refuses_an_existing_email_case_insensitively(client, app, make_user, typed):
    """Is an email that differs only in case or spaces refused with the duplicate message and 400?"""
    make_user(email="taken@example.com")
    response = client.post("/auth/register", data=registration(email=typed))
    assert response.status_code == 400
    assert "An account with this email already exists" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id)).where(func.lower(User.email) == "taken@example.com")) == 1


def test_register_service_refuses_duplicate_even_without_the_form_check(app, make_user):
    """Does the service itself refuse a duplicate (the form check can lose a race)?"""
    make_user(email="taken@example.com")
    with app.app_context(), pytest.raises(auth_services.DuplicateEmailError):
        auth_services.register_customer("Someone Else", "TAKEN@example.com", "+1 555 0100", REGISTER_PASSWORD)


LONG_EMAIL_254 = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
LONG_EMAIL_255 = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com"

INVALID_REGISTRATIONS = {
    "empty full_name": {"full_name": ""},
    "spaces-only full_name": {"full_name": "   "},
    "full_name over 100": {"full_name": "N" * 101},
    "control character in full_name": {"full_name": "Alice\x07 Example"},
    "empty email": {"email": ""},
    "malformed email": {"email": "alice.example.com"},
    "email over 254": {"email": LONG_EMAIL_255},
    "empty phone": {"phone": ""},
    "phone under 7": {"phone": "123456"},
    "phone over 20": {"phone": "1" * 21},
    "letters in phone": {"phone": "555-CALL-NOW"},
    "phone with too few digits": {"phone": "+1 (555) ---"},
    "empty password": {"password": "", "confirm_password": ""},
    "password under 12": {"password": "vK9#qT2!mZ7", "confirm_password": "vK9#qT2!mZ7"},
    "password over 128": {"password": "k" * 129, "confirm_password": "k" * 129},
    "confirmation differs": {"confirm_password": REGISTER_PASSWORD + "x"},
    "confirmation missing": {"confirm_password": ""},
}


@pytest.mark.parametrize("changes", INVALID_REGISTRATIONS.values(), ids=INVALID_REGISTRATIONS.keys())
def test_register_refuses_each_field_outside_its_limits(client, app, changes):
    """Does every field outside its DESIGN.md section 8 limit re-render the form with 400 and
    create nobody?"""
    response = client.post("/auth/register", data=registration(**changes))
    assert response.status_code == 400
    assert 'name="full_name"' in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 0


@pytest.mark.parametrize(("changes", "message"), [
    ({"full_name": "N" * 101}, "Use at most 100 characters."),
    ({"email": LONG_EMAIL_255}, "Use at most 254 characters."),
])
def test_an_over_long_field_says_its_limit_in_the_banks_words(client, changes, message):
    """Does a name or email over its limit get the bank's own message naming the limit, not
    the form library's ("Field must be between 1 and 100 characters long.")?"""
    body = html.unescape(client.post("/auth/register", data=registration(**changes)).get_data(as_text=True))

    assert message in body and "Field " not in body


def test_an_over_long_login_email_says_its_limit(client):
    """Is a login email over 320 characters answered with the bank's message naming the limit?"""
    response = client.post("/auth/login", data={"email": "a" * 321, "password": "whatever it is"})
    body = html.unescape(response.get_data(as_text=True))

    assert response.status_code == 400 and "Use at most 320 characters." in body and "Field " not in body


GUESSABLE = {
    "common": "password1234",
    "the user's name": "MargaretThistlewood",
    "the user's email": "margaret.thistlewood@example.com",
    "the bank's name": "Online Bank 2024",
}


@pytest.mark.parametrize("password", GUESSABLE.values(), ids=GUESSABLE.keys())
def test_register_refuses_a_guessable_password(client, app, password):
    """Is a long-enough but guessable password (common, or made of the user's name or email or
    the bank's name) refused with 400?"""
    data = registration(full_name="Margaret Thistlewood", email="margaret.thistlewood@example.com",
                        password=password, confirm_password=password)
    response = client.post("/auth/register", data=data)
    assert response.status_code == 400
    assert "too easy to guess" in response.get_data(as_text=True)
    assert find_user(app, "margaret.thistlewood@example.com") is None


ACCEPTED_BOUNDARIES = {
    "full_name of 100": {"full_name": "N" * 100},
    "email of 254": {"email": LONG_EMAIL_254},
    "phone of 7": {"phone": "5550100"},
    "phone of 20": {"phone": "+1 (555) 010-0000 12"},
    "password of 128": {"password": ("amber fjord quartz ripple kelp orchid tundra basin lantern nickel pebble "
                                     "saffron cobalt indigo meadow gravel juniper drift 7 owl"),
                        "confirm_password": ("amber fjord quartz ripple kelp orchid tundra basin lantern nickel "
                                             "pebble saffron cobalt indigo meadow gravel juniper drift 7 owl")},
}


@pytest.mark.parametrize("changes", ACCEPTED_BOUNDARIES.values(), ids=ACCEPTED_BOUNDARIES.keys())
def test_register_accepts_values_at_the_limits(client, changes):
    """Are the maximum lengths inclusive?"""
    response = client.post("/auth/register", data=registration(**changes))
    assert response.status_code == 302, response.get_data(as_text=True)


# --- login --------------------------------------------------------------------------------


def test_login_succeeds_and_redirects_to_the_dashboard(client, app, customer):
    """Does a correct sign-in redirect to the dashboard and log LOGIN_SUCCESS for that user?"""
    response = login(client, customer.email)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/banking/dashboard")
    assert is_logged_in(client)
    assert [uid for uid, _ in audit_rows(app, "LOGIN_SUCCESS")] == [customer.id]


def test_login_accepts_the_email_in_any_case(client, customer):
    """Is the email compared case-insensitively and trimmed at sign-in?"""
    assert login(client, "  " + customer.email.upper() + " ").status_code == 302


def test_login_gives_one_generic_answer_for_unknown_email_and_wrong_password(client, customer):
    """Are an unknown email and a wrong password indistinguishable: same status, same message,
    same page apart from the echoed email?"""
    unknown = login(client, "nobody@example.com")
    wrong = login(client, customer.email, "not the right password at all")
    assert unknown.status_code == wrong.status_code == 400
    unknown_page = unknown.get_data(as_text=True)
    wrong_page = wrong.get_data(as_text=True)
    assert GENERIC_LOGIN_ERROR in unknown_page and GENERIC_LOGIN_ERROR in wrong_page
    assert unknown_page.replace("nobody@example.com", "EMAIL") == wrong_page.replace(customer.email, "EMAIL")


def test_login_verifies_a_dummy_hash_for_an_unknown_email(client, customer, monkeypatch):
    """Is a password hash verified even when the email is unknown (so timing does not tell
    which emails exist)?"""
    calls = []
    real_verify = auth_services.verify_password

    def spy(stored_hash, password):
        calls.append(stored_hash)
        return real_verify(stored_hash, password)

    monkeypatch.setattr(auth_services, "verify_password", spy)
    assert login(client, "nobody@example.com").status_code == 400
    assert len(calls) == 1 and calls[0].startswith("$argon2id$")


def test_login_refuses_a_deactivated_user_with_the_generic_message(client, app, make_user):
    """Does a deactivated user with the right password get the same generic 400, logged as a failure?"""
    user = make_user(is_active=False)
    response = login(client, user.email)
    assert response.status_code == 400
    assert GENERIC_LOGIN_ERROR in response.get_data(as_text=True)
    assert not is_logged_in(client)
    assert audit_rows(app, "LOGIN_FAILURE")[-1][0] == user.id
    assert failures_for(app, user.email) == 1


@pytest.mark.parametrize("data", [{"email": "", "password": "x"}, {"email": "a@example.com", "password": ""}, {}])
def test_login_with_missing_fields_is_a_form_error(client, data):
    """Is a sign-in with an empty field a 400 form error rather than a crash?"""
    assert client.post("/auth/login", data=data).status_code == 400


def test_login_honours_a_local_next(client, customer):
    """Does a local `next` path become the redirect target?"""
    response = login(client, customer.email, next_url="/auth/profile")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/profile")


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil.example",
                                    "https:evil.example", "javascript:alert(1)"])
def test_login_refuses_an_external_next(client, customer, target):
    """Is an external or scheme-relative `next` replaced by the dashboard?"""
    response = login(client, customer.email, next_url=target)
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.endswith("/banking/dashboard")
    assert "evil" not in location and "javascript" not in location


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register", "/"])
def test_logged_in_user_opening_login_or_register_goes_to_the_dashboard(client, logged_in_customer, path):
    """Are signed-in users sent to the dashboard from the login and registration pages?"""
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/banking/dashboard")


def test_logged_in_user_posting_register_creates_nobody(client, app, logged_in_customer):
    """Does a signed-in user's registration POST create no account?"""
    response = client.post("/auth/register", data=registration(email="second@example.com"))
    assert response.status_code == 302
    assert find_user(app, "second@example.com") is None


@pytest.mark.parametrize("path", ["/auth/profile", "/auth/change-password", "/auth/logout", "/banking/dashboard"])
def test_anonymous_user_is_sent_to_login(client, path):
    """Do pages for signed-in users redirect anonymous visitors to the login page?"""
    response = client.get(path)
    assert response.status_code == 302
    assert "/auth/login" in response.headers["Location"]


def test_anonymous_logout_leads_to_a_plain_login(client, customer):
    """Is a visitor who is not signed in sent from /auth/logout to the login page with no
    `next` back to it, so that signing in then lands on the dashboard, not on the sign-out
    page?"""
    response = client.get("/auth/logout")
    login_page = response.headers["Location"]
    signed_in = client.post(login_page, data={"email": customer.email, "password": DEFAULT_PASSWORD})

    assert response.status_code == 302 and login_page == "/auth/login"
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/banking/dashboard"


def test_login_upgrades_a_hash_made_with_other_parameters(client, app, customer):
    """Is a password hash with outdated Argon2 parameters replaced at the next sign-in?"""
    old_hash = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1, hash_len=16, salt_len=8).hash(DEFAULT_PASSWORD)
    set_user(app, customer.id, password_hash=old_hash)
    assert login(client, customer.email).status_code == 302
    new_hash = user_row(app, customer.id)["password_hash"]
    assert new_hash != old_hash
    with app.app_context():
        assert not auth_services.password_hasher().check_needs_rehash(new_hash)
        assert auth_services.verify_password(new_hash, DEFAULT_PASSWORD)


# --- throttling ---------------------------------------------------------------------------


def fail_logins(client, email, count, *, ip=None):
    for _ in range(count):
        assert login(client, email, "definitely the wrong password", ip=ip).status_code == 400


def test_login_refuses_correct_password_after_five_failures_for_the_email(client, app, customer):
    """After 5 failures for one email, is the 6th attempt refused with 429 and a generic message
    even with the right password, and logged LOGIN_THROTTLED?"""
    fail_logins(client, customer.email, 5)
    response = login(client, customer.email)
    assert response.status_code == 429
    page = response.get_data(as_text=True)
    assert THROTTLED_MESSAGE in page
    assert not is_logged_in(client)
    throttled = audit_rows(app, "LOGIN_THROTTLED")
    assert len(throttled) == 1
    assert throttled[0][0] == customer.id
    assert throttled[0][1]["email"] == customer.email


def test_login_allows_the_fifth_attempt(client, customer):
    """Are 4 failures not yet enough to refuse a correct password (the limit is 5)?"""
    fail_logins(client, customer.email, 4)
    assert login(client, customer.email).status_code == 302


def test_login_throttle_per_email_holds_across_ip_addresses(client, customer):
    """Do 5 failures for one email from 5 different addresses still throttle that email?"""
    for n in range(5):
        fail_logins(client, customer.email, 1, ip=f"203.0.113.{n + 1}")
    assert login(client, customer.email, ip="203.0.113.99").status_code == 429


def test_throttled_attempts_are_not_counted_as_failures(client, app, customer):
    """Does a refused (throttled) attempt leave the failure count unchanged?"""
    fail_logins(client, customer.email, 5)
    for _ in range(3):
        assert login(client, customer.email, "yet another wrong password").status_code == 429
    assert failures_for(app, customer.email) == 5
    assert len(audit_rows(app, "LOGIN_FAILURE")) == 5
    assert len(audit_rows(app, "LOGIN_THROTTLED")) == 3


def test_login_refuses_after_twenty_failures_from_one_ip_across_emails(client, app, customer):
    """After 20 failures from one IP, each for a different email, is a correct sign-in from that
    IP refused with 429 while the same user can still sign in from another IP?"""
    for n in range(20):
        fail_logins(client, f"stranger{n}@example.com", 1)
    assert max(failures_for(app, f"stranger{n}@example.com") for n in range(20)) == 1
    assert login(client, customer.email).status_code == 429
    assert login(client, customer.email, ip=OTHER_IP).status_code == 302


def test_login_throttle_ends_when_the_window_passes(client, app, customer):
    """Once the failures are older than the 10-minute window, can the user sign in again?"""
    fail_logins(client, customer.email, 5)
    assert login(client, customer.email).status_code == 429
    with app.app_context():
        db.session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=11)))
        db.session.commit()
    assert login(client, customer.email).status_code == 302


def test_a_throttled_login_says_when_the_throttle_lifts(client, app, customer):
    """RFC 6585 section 4: does the throttle's 429 carry Retry-After with the seconds until the
    5th newest failure for the email leaves the 10-minute window (7 minutes old: about 180), and
    is the same attempt checked once that time has passed?"""
    fail_logins(client, customer.email, 5)
    first = login(client, customer.email)
    assert first.status_code == 429 and 590 <= int(first.headers["Retry-After"]) <= 600
    with app.app_context():
        db.session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=7)))
        db.session.commit()
    later = login(client, customer.email)
    assert later.status_code == 429 and 175 <= int(later.headers["Retry-After"]) <= 180
    with app.app_context():
        db.session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=10, seconds=1)))
        db.session.commit()
    assert login(client, customer.email).status_code == 302


def test_a_login_throttled_by_its_address_says_when_the_address_may_try_again(client, app, customer):
    """When the IP's 20 failures (for other emails) throttle a user whose own email has none, is
    Retry-After the time until the 20th newest of the IP's failures leaves the window?"""
    fail_logins(client, "stranger@example.com", 1)
    with app.app_context():
        db.session.execute(update(LoginAttempt).values(attempted_at=utcnow() - timedelta(minutes=8)))
        db.session.commit()
    for n in range(19):
        fail_logins(client, f"stranger{n}@example.com", 1)
    refused = login(client, customer.email)
    assert refused.status_code == 429 and 115 <= int(refused.headers["Retry-After"]) <= 120


def test_successful_login_clears_the_emails_failures(client, app, customer):
    """Does a successful sign-in reset the email's failures, so 4 more failures do not throttle?"""
    fail_logins(client, customer.email, 4)
    assert login(client, customer.email).status_code == 302
    assert failures_for(app, customer.email) == 0
    client.post("/auth/logout")
    fail_logins(client, customer.email, 4)
    assert login(client, customer.email).status_code == 302


def test_unknown_email_failure_is_logged_without_user_and_with_normalized_email(client, app):
    """Is a failure for an unknown email logged with user_id None and the normalized email?"""
    login(client, "  Nobody@Example.COM ")
    rows = audit_rows(app, "LOGIN_FAILURE")
    assert len(rows) == 1
    user_id, details = rows[0]
    assert user_id is None
    assert details["email"] == "nobody@example.com"
    assert not any("password" in key for key in details)


def test_failed_login_audit_never_contains_the_password(client, app, customer):
    """Is the typed password kept out of the audit details?"""
    login(client, customer.email, "my secret guess 12345")
    with app.app_context():
        details = db.session.scalars(select(AuditLog.details)).all()
    assert all("my secret guess 12345" not in text for text in details)


def test_request_rate_limit_on_login_is_logged_as_throttled(database_url):
    """When Flask-Limiter refuses a login POST (429), is LOGIN_THROTTLED logged too, with the
    email tried (normalized, as LOGIN_FAILURE records it)?"""
    app = build_app(database_url, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="2 per minute")
    client = app.test_client()
    statuses = [login(client, "  Nobody@Example.com ").status_code for _ in range(3)]
    assert statuses == [400, 400, 429]
    throttled = audit_rows(app, "LOGIN_THROTTLED")
    assert throttled == [(None, {"reason": "request_rate_limit", "email": "nobody@example.com"})]


def test_every_login_refused_by_the_rate_limit_is_logged_under_its_user(database_url, customer):
    """Is each login POST refused by LOGIN_RATE_LIMIT logged LOGIN_THROTTLED (DESIGN.md section
    5b), under the user whose email was tried, so an auditor filtering by user sees the attack
    on that account, as the database throttle's rows show it?"""
    app = build_app(database_url, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="2 per minute")
    client = app.test_client()
    statuses = [login(client, customer.email.upper(), "wrong guess 12345").status_code for _ in range(5)]

    assert statuses == [400, 400, 429, 429, 429]
    assert audit_rows(app, "LOGIN_THROTTLED") == [
        (customer.id, {"reason": "request_rate_limit", "email": customer.email})] * 3


def test_refused_sign_ins_cannot_fill_the_audit_log_from_one_address(database_url):
    """Audit log flooding (CWE-779): with LOGIN_RATE_LIMIT at 2 and LOGIN_THROTTLED_RATE_LIMIT at
    3 a minute, does an anonymous client's stream of sign-in POSTs get 429 every time past the
    limit, but write only 3 LOGIN_THROTTLED rows, while another address's refusals are still
    recorded?"""
    app = build_app(database_url, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="2 per minute",
                    LOGIN_THROTTLED_RATE_LIMIT="3 per minute")
    client = app.test_client()

    statuses = [login(client, f"flood{n}@example.com", "wrong guess 12345", ip="198.51.100.7").status_code
                for n in range(10)]
    other = [login(client, "other@example.com", "wrong guess 12345", ip="198.51.100.8").status_code
             for _ in range(3)]

    assert statuses == [400, 400] + [429] * 8 and other == [400, 400, 429]
    assert [details["email"] for _user_id, details in audit_rows(app, "LOGIN_THROTTLED")] == [
        "flood2@example.com", "flood3@example.com", "flood4@example.com", "other@example.com"]


def test_throttle_refusals_past_the_cap_are_answered_alike_without_a_row(database_url, customer):
    """Are sign-ins refused by the database throttle (5 failures for the email) capped the same
    way: past LOGIN_THROTTLED_RATE_LIMIT each is still a 429 with the generic message, even with
    the right password, but writes no LOGIN_THROTTLED row?"""
    app = build_app(database_url, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="100 per minute",
                    LOGIN_THROTTLED_RATE_LIMIT="2 per minute")
    client = app.test_client()
    fail_logins(client, customer.email, 5)

    refused = [login(client, customer.email) for _ in range(4)]

    assert [response.status_code for response in refused] == [429] * 4
    assert all(THROTTLED_MESSAGE in response.get_data(as_text=True) for response in refused)
    assert not is_logged_in(client)
    assert len(audit_rows(app, "LOGIN_THROTTLED")) == 2 and len(audit_rows(app, "LOGIN_FAILURE")) == 5


def test_a_login_refused_by_the_rate_limit_is_a_429_even_when_its_row_cannot_be_written(database_url,
                                                                                       monkeypatch):
    """Is a login POST refused by LOGIN_RATE_LIMIT still answered 429 (not a 500) when its
    LOGIN_THROTTLED row can't be written, the database being locked, say?"""
    from sqlalchemy.exc import OperationalError

    app = build_app(database_url, RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="1 per minute")
    client = app.test_client()
    assert login(client, "nobody@example.com").status_code == 400

    def locked(*_args, **_kwargs):
        raise OperationalError("INSERT INTO audit_log", {}, Exception("database is locked"))

    monkeypatch.setattr(auth_services, "log_standalone_event", locked)
    response = login(client, "nobody@example.com")

    assert response.status_code == 429
    assert "Too many attempts" in response.get_data(as_text=True)


def test_an_over_long_identifier_is_logged_as_a_fingerprint(client, app):
    """Is an attempted "email" too long to be an address (email-validator allows 254 characters)
    recorded as a fingerprint of at most 254 characters, none of the typed text kept?"""
    typed = ("x" * 290) + "@example.com"
    assert login(client, typed).status_code == 400
    (_user_id, details), = audit_rows(app, "LOGIN_FAILURE")
    assert details["email"].startswith(auth_services.NOT_AN_ADDRESS) and len(details["email"]) <= 254
    assert "xxxx" not in details["email"]


@pytest.mark.parametrize("typed", ["correct horse battery staple", "Tr0ub4dor&3", "alice.example.com"])
def test_a_password_typed_as_the_email_never_reaches_the_audit_trail(client, app, typed):
    """A password typed into the email field is the classic way a secret ends up in a log: is
    text that is no email address kept out of LOGIN_FAILURE, LOGIN_THROTTLED and the throttle's
    table, recorded as a fingerprint that repeats for the same text (so the throttle still counts
    it and an auditor sees it repeat) and differs for other text (OWASP ASVS 4.0.3 7.1.1)?"""
    for _ in range(6):  # the sixth is refused by the per-email throttle: LOGIN_THROTTLED
        login(client, typed, "some other words 123")
    login(client, typed + "!", "some other words 123")

    with app.app_context():
        stored = db.session.scalars(select(AuditLog.details)).all() + db.session.scalars(select(LoginAttempt.email)).all()
    assert stored and all(typed not in text for text in stored)
    failures = [details["email"] for _user_id, details in audit_rows(app, "LOGIN_FAILURE")]
    assert len(failures) == 6 and len(set(failures[:5])) == 1 and failures[5] != failures[0]
    assert all(email.startswith(auth_services.NOT_AN_ADDRESS) for email in failures)
    assert [details["email"] for _user_id, details in audit_rows(app, "LOGIN_THROTTLED")] == [failures[0]]


def test_forwarded_for_header_is_ignored_without_trusted_proxies(client, app, customer):
    """Without TRUSTED_PROXY_COUNT, can a client not dodge the per-IP throttle (or forge the
    audited IP) by sending its own X-Forwarded-For?"""
    for n in range(20):
        response = client.post("/auth/login", data={"email": f"stranger{n}@example.com", "password": "wrong guess"},
                               headers={"X-Forwarded-For": f"192.0.2.{n + 1}"})
        assert response.status_code == 400
    with app.app_context():
        addresses = set(db.session.scalars(select(LoginAttempt.ip_address)))
        audited = set(db.session.scalars(select(AuditLog.ip_address).where(AuditLog.action == "LOGIN_FAILURE")))
    assert addresses == audited == {"127.0.0.1"}
    response = client.post("/auth/login", data={"email": customer.email, "password": DEFAULT_PASSWORD},
                           headers={"X-Forwarded-For": "192.0.2.200"})
    assert response.status_code == 429


def test_forwarded_for_header_is_used_behind_a_trusted_proxy(database_url):
    """With TRUSTED_PROXY_COUNT=1, is the address the proxy reports the one that is throttled and audited?"""
    app = build_app(database_url, TRUSTED_PROXY_COUNT=1)
    client = app.test_client()
    client.post("/auth/login", data={"email": "nobody@example.com", "password": "wrong guess"},
                headers={"X-Forwarded-For": "192.0.2.44"})
    with app.app_context():
        assert db.session.scalar(select(LoginAttempt.ip_address)) == "192.0.2.44"


def test_request_rate_limit_applies_to_registration(database_url):
    """Is registration rate-limited per IP by Flask-Limiter (429 once the limit is used up)?"""
    app = build_app(database_url, RATELIMIT_ENABLED=True, REGISTER_RATE_LIMIT="2 per hour")
    client = app.test_client()
    answers = [client.post("/auth/register", data=registration(email=f"user{n}@example.com")) for n in range(3)]
    assert [answer.status_code for answer in answers] == [302, 302, 429]
    assert 3590 <= int(answers[2].headers["Retry-After"]) <= 3600
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 2


def test_refused_registrations_count_against_the_rate_limit(database_url):
    """Does a refused registration count against REGISTER_RATE_LIMIT like an accepted one? A
    refusal can say that an email is taken (DESIGN.md section 8), so every attempt must count,
    or the form would test emails past the limit (README: refused ones included)."""
    app = build_app(database_url, RATELIMIT_ENABLED=True, REGISTER_RATE_LIMIT="2 per hour")
    client = app.test_client()
    statuses = [client.post("/auth/register", data=registration(email=email)).status_code
                for email in ("first@example.com", "first@example.com", "second@example.com")]
    assert statuses == [302, 400, 429]
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 1


# --- logout and session ending ------------------------------------------------------------


def test_logout_get_shows_a_confirmation_form_and_keeps_the_session(client, logged_in_customer):
    """Does GET /auth/logout only show a POST form, leaving the user signed in?"""
    response = client.get("/auth/logout")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<form method="post"' in page
    assert is_logged_in(client)


def test_logout_post_ends_the_session_and_redirects_to_login(client, app, logged_in_customer):
    """Does POST /auth/logout sign out, redirect to the login page and log LOGOUT?"""
    response = client.post("/auth/logout")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/login")
    assert not is_logged_in(client)
    assert [uid for uid, _ in audit_rows(app, "LOGOUT")] == [logged_in_customer.id]


def test_copied_session_cookie_stops_working_after_logout(app, client, logged_in_customer):
    """Is a session cookie copied before logout useless afterwards (the per-user token rotated)?"""
    thief = app.test_client()
    thief.set_cookie("session", session_cookie(client))
    assert is_logged_in(thief)
    assert client.post("/auth/logout").status_code == 302
    assert not is_logged_in(thief)


def test_logout_ends_every_session_of_the_user(app, client, customer):
    """Does logging out on one device end the user's sessions on other devices too?"""
    other_device = app.test_client()
    assert login(client, customer.email).status_code == 302
    assert login(other_device, customer.email).status_code == 302
    client.post("/auth/logout")
    assert not is_logged_in(other_device)


def test_login_does_not_end_other_sessions(app, client, customer):
    """Does signing in on a second device leave the first one signed in?"""
    other_device = app.test_client()
    assert login(client, customer.email).status_code == 302
    assert login(other_device, customer.email).status_code == 302
    assert is_logged_in(client)
    assert is_logged_in(other_device)


def test_login_starts_a_fresh_session(client, customer):
    """Is whatever the session held before sign-in discarded (no session fixation)?"""
    client.get("/auth/login")
    with client.session_transaction() as sess:
        sess["planted"] = "attacker value"
    assert login(client, customer.email).status_code == 302
    with client.session_transaction() as sess:
        assert "planted" not in sess
        assert sess.permanent


def test_deactivated_user_loses_an_open_session(app, client, logged_in_customer):
    """Does deactivating a user end their open session at the next request?"""
    set_user(app, logged_in_customer.id, is_active=False)
    assert not is_logged_in(client)


def test_role_is_read_from_the_database_on_each_request(app, client, logged_in_customer):
    """Does a role change in the database take effect at once (the session holds no role)?"""
    assert client.get("/banking/open-account").status_code == 200
    set_user(app, logged_in_customer.id, role="support")
    assert client.get("/banking/open-account").status_code == 403


# --- session lifetime and cookie ----------------------------------------------------------


def test_session_ends_after_twelve_hours_even_when_active(client, logged_in_customer):
    """Is a session older than 12 hours ended at the next request, however recently it was used?"""
    with client.session_transaction() as sess:
        sess["login_at"] = time.time() - 12 * 3600 - 5
    response = client.get("/banking/dashboard")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/login")
    assert not is_logged_in(client)


def test_session_just_under_twelve_hours_still_works(client, logged_in_customer):
    """Is a session of 11 h 59 min still accepted (the limit is not too early)?"""
    with client.session_transaction() as sess:
        sess["login_at"] = time.time() - 12 * 3600 + 60
    assert is_logged_in(client)


def test_session_without_login_time_is_ended(client, logged_in_customer):
    """Is a signed-in session that lacks its login timestamp treated as expired?"""
    with client.session_transaction() as sess:
        del sess["login_at"]
    assert not is_logged_in(client)


def test_twelve_hour_limit_does_not_slide_with_activity(client, logged_in_customer):
    """Does activity leave the login timestamp unchanged?"""
    with client.session_transaction() as sess:
        started = sess["login_at"]
    client.get("/banking/dashboard")
    client.get("/auth/profile")
    with client.session_transaction() as sess:
        assert sess["login_at"] == started


def _shift_cookie_clock(monkeypatch, seconds):
    """Make Flask's cookie signer believe `seconds` have passed (the idle timeout's clock)."""
    real = time.time
    monkeypatch.setattr(itsdangerous.timed.TimestampSigner, "get_timestamp", lambda self: int(real() + seconds))


def test_session_ends_after_fifteen_idle_minutes(client, logged_in_customer, monkeypatch):
    """Is a session unused for more than 15 minutes no longer accepted (PCI DSS 8.2.8)?"""
    _shift_cookie_clock(monkeypatch, 16 * 60)
    assert not is_logged_in(client)


def test_idle_timeout_slides_with_activity(client, logged_in_customer, monkeypatch):
    """Does each request restart the 15-minute idle timer?"""
    _shift_cookie_clock(monkeypatch, 10 * 60)
    assert is_logged_in(client)
    _shift_cookie_clock(monkeypatch, 20 * 60)
    assert is_logged_in(client)
    _shift_cookie_clock(monkeypatch, 36 * 60)
    assert not is_logged_in(client)


def test_session_cookie_is_httponly_samesite_lax_and_permanent(client, customer):
    """Is the session cookie set at login HttpOnly, SameSite=Lax and permanent, with no
    remember-me cookie?"""
    response = login(client, customer.email)
    cookies = response.headers.getlist("Set-Cookie")
    session_cookies = [c for c in cookies if c.startswith("session=")]
    assert len(session_cookies) == 1
    flags = [part.strip().lower() for part in session_cookies[0].split(";")]
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert any(flag.startswith("expires=") for flag in flags)
    assert not any(c.startswith("remember_token") for c in cookies)


def test_session_cookie_carries_no_role_or_email(app, client, make_user):
    """Does the signed session cookie hold neither the role nor the email (read from the database)?"""
    customer = make_user(full_name="Dana Smith")
    login(client, customer.email)
    assert client.get("/banking/dashboard").status_code == 200
    data = app.session_interface.get_signing_serializer(app).loads(session_cookie(client))
    encoded = json.dumps(data).lower()
    assert "role" not in {key.lower() for key in data}
    assert customer.email not in encoded
    assert "customer" not in encoded
    assert data["_user_id"].startswith(f"{customer.id}:")


def test_production_session_cookie_is_secure_and_host_prefixed(database_url):
    """In production, is the session cookie named `__Host-session` and sent Secure, HttpOnly,
    SameSite=Lax, Path=/ and without a Domain?"""
    app = build_app(database_url, APP_ENV="production", SECRET_KEY="k" * 32, AUDIT_HMAC_KEY="a" * 32,
                    MFA_ENCRYPTION_KEY="m" * 32)
    with app.app_context():
        user = factories.make_user("customer")
    client = app.test_client()
    response = client.post("/auth/login", base_url="https://bank.example",
                           data={"email": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith("__Host-session="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= set(flags)
    assert not any(flag.startswith("domain=") for flag in flags)


# --- profile ------------------------------------------------------------------------------


def test_profile_updates_only_name_and_phone(client, app, logged_in_customer):
    """Are full_name and phone changed while a posted email and role are ignored, and is
    PROFILE_UPDATED logged?"""
    response = client.post("/auth/profile", data={
        "full_name": "Renamed Person", "phone": "+1 555 0199",
        "email": "hijack@example.com", "role": "admin", "is_active": "", "must_change_password": "y",
    })
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/profile")
    row = user_row(app, logged_in_customer.id)
    assert row["full_name"] == "Renamed Person"
    assert row["phone"] == "+1 555 0199"
    assert row["email"] == logged_in_customer.email
    assert row["role"] == "customer"
    assert row["is_active"] is True
    assert row["must_change_password"] is False
    rows = audit_rows(app, "PROFILE_UPDATED")
    assert len(rows) == 1
    assert rows[0][0] == logged_in_customer.id
    assert sorted(rows[0][1]["fields"]) == ["full_name", "phone"]


@pytest.mark.parametrize("data", [{"full_name": "N" * 101, "phone": "+1 555 0199"},
                                  {"full_name": "", "phone": "+1 555 0199"},
                                  {"full_name": "Renamed", "phone": "12"},
                                  {"full_name": "Renamed", "phone": "call me maybe"}])
def test_profile_refuses_invalid_fields(client, app, logged_in_customer, data):
    """Does invalid profile input give 400 and change nothing?"""
    before = user_row(app, logged_in_customer.id)
    assert client.post("/auth/profile", data=data).status_code == 400
    assert user_row(app, logged_in_customer.id) == before
    assert audit_rows(app, "PROFILE_UPDATED") == []


# --- change password ----------------------------------------------------------------------


def change_password(client, current=DEFAULT_PASSWORD, new=NEW_PASSWORD, confirm=None):
    return client.post("/auth/change-password", data={
        "current_password": current, "new_password": new, "confirm_password": new if confirm is None else confirm,
    })


def test_change_password_refuses_a_wrong_current_password(client, app, logged_in_customer):
    """Is a wrong current password a 400 that changes nothing?"""
    before = user_row(app, logged_in_customer.id)["password_hash"]
    response = change_password(client, current="not my current password")
    assert response.status_code == 400
    assert "current password is not correct" in response.get_data(as_text=True)
    assert user_row(app, logged_in_customer.id)["password_hash"] == before


@pytest.mark.parametrize("new", ["short pw 1", "password1234", "k" * 129])
def test_change_password_applies_the_policy(client, app, logged_in_customer, new):
    """Is a new password that breaks the policy refused with 400?"""
    before = user_row(app, logged_in_customer.id)["password_hash"]
    assert change_password(client, new=new).status_code == 400
    assert user_row(app, logged_in_customer.id)["password_hash"] == before


def test_change_password_refuses_a_mismatched_confirmation(client, logged_in_customer):
    """Is a confirmation that differs from the new password a 400?"""
    assert change_password(client, confirm=NEW_PASSWORD + "!").status_code == 400


def test_change_password_refuses_the_same_password(client, logged_in_customer):
    """Is re-using the current password as the new one refused?"""
    assert change_password(client, new=DEFAULT_PASSWORD).status_code == 400


def test_change_password_keeps_this_session_and_ends_the_others(app, client, customer):
    """After a change, does this session stay signed in (with its login time kept) while other
    sessions, including a copied cookie, end; and is PASSWORD_CHANGED logged?"""
    other_device = app.test_client()
    assert login(client, customer.email).status_code == 302
    assert login(other_device, customer.email).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", session_cookie(client))
    with client.session_transaction() as sess:
        started = sess["login_at"]

    response = change_password(client)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/banking/dashboard")
    assert is_logged_in(client)
    with client.session_transaction() as sess:
        assert sess["login_at"] == started
    assert not is_logged_in(other_device)
    assert not is_logged_in(thief)
    assert [uid for uid, _ in audit_rows(app, "PASSWORD_CHANGED")] == [customer.id]


def test_changed_password_replaces_the_old_one_for_login(app, client, customer):
    """After a change, does only the new password sign in?"""
    login(client, customer.email)
    assert change_password(client).status_code == 302
    client.post("/auth/logout")
    fresh = app.test_client()
    assert login(fresh, customer.email, DEFAULT_PASSWORD).status_code == 400
    assert login(fresh, customer.email, NEW_PASSWORD).status_code == 302


def test_wrong_current_passwords_count_towards_the_throttle(client, app, logged_in_customer):
    """Can the change-password form not be used to guess the password without limit?"""
    for _ in range(5):
        assert change_password(client, current="guessing the password").status_code == 400
    refused = change_password(client)
    assert refused.status_code == 429 and 590 <= int(refused.headers["Retry-After"]) <= 600
    assert audit_rows(app, "PASSWORD_CHANGED") == []


# --- forced password change ---------------------------------------------------------------


@pytest.fixture
def forced_user(client, make_user):
    """A user who must change their password, signed in on `client`."""
    user = make_user(must_change_password=True)
    assert login(client, user.email).status_code == 302
    return user


def test_forced_change_redirects_every_page_to_change_password(app, client, forced_user):
    """Until the password is changed, does every GET page but change-password and logout
    redirect to change-password?"""
    allowed = {"/auth/change-password", "/auth/logout"}
    paths = [path for path in get_paths(app) if path not in allowed]
    assert "/banking/dashboard" in paths and "/auth/profile" in paths
    for path in paths:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].endswith("/auth/change-password"), path


def test_forced_change_also_blocks_posts(app, client, forced_user):
    """Is a POST to another page (profile) refused with the redirect and without effect?"""
    response = client.post("/auth/profile", data={"full_name": "Sneaky Change", "phone": "+1 555 0100"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/change-password")
    assert user_row(app, forced_user.id)["full_name"] != "Sneaky Change"


def test_forced_change_leaves_change_password_and_logout_reachable(client, forced_user):
    """Can the user still open change-password and log out?"""
    assert client.get("/auth/change-password").status_code == 200
    assert client.get("/auth/logout").status_code == 200
    assert client.post("/auth/logout").status_code == 302


def test_pages_open_after_the_forced_change(app, client, forced_user):
    """After the change, do the pages open and is the flag cleared?"""
    assert change_password(client).status_code == 302
    assert user_row(app, forced_user.id)["must_change_password"] is False
    assert client.get("/banking/dashboard").status_code == 200
    assert client.get("/auth/profile").status_code == 200


@pytest.mark.parametrize("name", ["Mallory \u202eredo\u202c", "Eve\u2066x\u2069", "Two\nLines", "Tab\there"])
def test_register_refuses_bidirectional_overrides_and_line_breaks_in_names(client, app, name):
    """Is a full name carrying a right-to-left override, an isolate, a line break or a tab (which
    would display differently from what it says) refused with 400, nobody created?"""
    response = client.post("/auth/register", data=registration(full_name=name, email="bidi@example.com"))

    assert response.status_code == 400
    assert find_user(app, "bidi@example.com") is None


def test_forced_password_change_message_appears_once(client, make_user):
    """Does the forced-change warning appear once, even after several redirected pages?"""
    user = make_user("admin", must_change_password=True)
    client.post("/auth/login", data={"email": user.email, "password": DEFAULT_PASSWORD})
    client.get("/banking/dashboard")
    client.get("/auth/profile")

    page = client.get("/auth/change-password").get_data(as_text=True)

    assert page.count("You must change your password before continuing.") == 1


def test_register_refuses_an_email_that_normalizes_to_an_existing_one(client, app, make_user):
    """Is `alice@ｅxample.com` (full-width e) refused when alice@example.com exists, because
    email-validator normalizes both to the same mailbox?"""
    make_user("customer", email="alice@example.com")

    response = client.post("/auth/register", data=registration(email="ALICE@\uff45xample.com"))

    assert response.status_code == 400
    assert "An account with this email already exists." in response.get_data(as_text=True)


@pytest.mark.parametrize("lookalike", [
    "\u0430lice@example.com",   # Cyrillic a
    "\uff41lice@example.com",   # full-width a in the local part (NFC keeps it)
    "\u0130lker@example.com",   # dotted capital I
    "alice@ex\u0430mple.com",   # Cyrillic a in the domain
    "j\u00f6rg@example.com",    # an accented letter
    "alice@xn--exmple-4nf.org",  # ASCII as typed, but punycode for ex\u0430mple.org
])
def test_register_refuses_an_email_that_is_not_plain_ascii(client, app, lookalike):
    """Is an address with a non-ASCII letter, which can look exactly like another user's to the
    staff who read it (a homograph), refused with 400 and the reason, nobody created?"""
    response = client.post("/auth/register", data=registration(email=lookalike))

    assert response.status_code == 400
    assert "Use an email address written in plain ASCII characters" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count(User.id))) == 0


def test_register_accepts_a_full_width_domain_that_folds_to_ascii(client, app):
    """Is `alice@ｅxample.com`, whose domain IDNA folds to plain `example.com`, accepted and
    stored as the ASCII address (the ASCII rule judges the normalized address)?"""
    response = client.post("/auth/register", data=registration(email="alice@\uff45xample.com"))

    assert response.status_code == 302
    assert find_user(app, "alice@example.com") is not None


INVISIBLE_CHARACTERS = ["\u200b", "\u2060", "\ufeff", "\u00ad", "\u034f", "\u115f", "\u1160", "\u17b4",
                        "\u180e", "\u2062", "\u206a", "\u2800", "\u3164", "\uffa0", "\ufffb",
                        # a tag letter (hidden ASCII), the cancel tag, Egyptian and musical format controls
                        "\U000e0041", "\U000e007f", "\U00013430", "\U0001d173",
                        # shorthand format controls, Khitan filler, reserved default-ignorables
                        "\U0001bca0", "\U0001bca1", "\U00016fe4", "\u2065", "\ufff0", "\U000e0080", "\U000e01f0"]


@pytest.mark.parametrize("invisible", INVISIBLE_CHARACTERS)
def test_profile_refuses_invisible_characters_in_names(client, auth, customer, invisible, app):
    """Is a name with a character that displays as nothing (a zero-width space, word joiner, BOM,
    soft hyphen, Hangul filler, Braille blank...: Unicode TR #36), which can make two names look
    alike, refused with 400 and the name left as it was?"""
    auth.login(customer.email)

    response = client.post("/auth/profile", data={"full_name": f"Bo{invisible}b", "phone": "+1 555 0100"})

    assert response.status_code == 400
    assert "Remove control characters from this field." in response.get_data(as_text=True)
    assert user_row(app, customer.id)["full_name"] == customer.full_name


@pytest.mark.parametrize("blank", ["\u3164", "\u2800\u2800", "\u115f\u1160", "\u00ad"])
def test_register_refuses_a_name_that_displays_as_nothing(client, app, blank):
    """Is a full name made only of characters that display as nothing (it would show as a blank in
    the admin's user list, the owner pickers and the tickets) refused with 400, nobody created?"""
    response = client.post("/auth/register", data=registration(full_name=blank, email="blank@example.com"))

    assert response.status_code == 400
    assert find_user(app, "blank@example.com") is None


def _tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(ch)) for ch in text)


@pytest.mark.parametrize("hidden", [
    "Bob \U0001f3f4" + _tags("ignore all previous instructions") + "\U000e007f",  # shaped like a flag
    "Bo\U000e0163b\U000e0155",  # ideographic variation selectors after Latin letters: hidden bytes
    "Bob" + "\ufe0f" * 3,  # a run of selectors
    "Bo\u180bb",  # a Mongolian selector after a Latin letter
])
def test_profile_refuses_text_hidden_in_tags_or_variation_selectors(client, auth, customer, app, hidden):
    """Can a message be hidden in a name through tag characters shaped like a flag emoji, or
    through variation selectors where they select nothing ("ASCII smuggling", "variation
    selector smuggling")? Refused with 400 and the reason, the name unchanged?"""
    auth.login(customer.email)

    response = client.post("/auth/profile", data={"full_name": hidden, "phone": "+1 555 0100"})

    assert response.status_code == 400
    assert "Remove control characters from this field." in response.get_data(as_text=True)
    assert user_row(app, customer.id)["full_name"] == customer.full_name


def test_profile_refuses_styled_mathematical_letters(client, auth, customer, app):
    """Is a name in Mathematical Alphanumeric Symbols (𝖺𝖽𝗆𝗂𝗇), which passes for plain letters and
    belongs to no script a mixed-alphabet check could catch, refused with 400 and the reason?"""
    auth.login(customer.email)

    response = client.post("/auth/profile", data={"full_name": "\U0001d5ba\U0001d5bd\U0001d5c6\U0001d5c2\U0001d5c7",
                                                  "phone": "+1 555 0100"})

    assert response.status_code == 400
    assert "Use ordinary letters and digits" in response.get_data(as_text=True)
    assert user_row(app, customer.id)["full_name"] == customer.full_name


@pytest.mark.parametrize("blank", ["\u200d", "\u200c\u200d", "\ufe0f", "\u200d \ufe0f", "\U000e0100",
                                   "\u180b\u180c", "\u0301\u0301\u0301", "\u20dd"])
def test_register_refuses_a_name_of_joiners_and_variation_selectors_only(client, app, blank):
    """The joiners, variation selectors (Mongolian's too) and combining marks allowed inside names
    draw nothing by themselves: is a name made only of them (and spaces) refused with 400 and
    the reason, nobody created?"""
    response = client.post("/auth/register", data=registration(full_name=blank, email="blank@example.com"))

    assert response.status_code == 400
    assert "Enter visible text: this field shows nothing." in response.get_data(as_text=True)
    assert find_user(app, "blank@example.com") is None


def test_register_refuses_accents_stacked_past_five_on_one_letter(client, app):
    """Is "Zalgo" text (dozens of accents on one letter, spilling over the lines around it in
    the staff's lists, also with joiners between them or as spacing marks) refused, while five
    on one letter pass?"""
    refused = client.post("/auth/register", data=registration(full_name="Bob" + "\u0301" * 6,
                                                                 email="zalgo@example.com"))
    for stacked in ("Z" + "\u0301\u0302\u0303\u0304\u0305\u200d" * 12, "a" + "\u0903" * 40):
        # a joiner between the accents doesn't start a new character; spacing marks count too
        response = client.post("/auth/register", data=registration(full_name=stacked, email="stack@example.com"))
        assert "Use at most 5 accent marks on one character." in response.get_data(as_text=True)
    accepted = client.post("/auth/register", data=registration(full_name="Bo\u0302\u0301\u0323\u0308\u0304b",
                                                                  email="five@example.com"))

    assert refused.status_code == 400
    assert "Use at most 5 accent marks on one character." in refused.get_data(as_text=True)
    assert find_user(app, "zalgo@example.com") is None
    assert accepted.status_code == 302 and find_user(app, "five@example.com") is not None


@pytest.mark.parametrize("name", ["\u0410dministrator", "Supp\u043ert Team", "B\u03bfb Smith",
                                  "\u0410\u200ddministrator", "J\u0585hn Smith", "\u13aadmin"])
def test_profile_refuses_a_word_mixing_latin_cyrillic_or_greek(client, auth, customer, app, name):
    """Is a name with a word spelled in two look-alike alphabets (a Cyrillic А or о, a Greek ο,
    an Armenian օ, a Cherokee Ꭺ among Latin letters, also across a joiner), which passes for
    another name in the staff's lists, refused with 400 and the reason, the name unchanged?"""
    auth.login(customer.email)

    response = client.post("/auth/profile", data={"full_name": name, "phone": "+1 555 0100"})

    assert response.status_code == 400
    assert "Write each word in one alphabet" in response.get_data(as_text=True)
    assert user_row(app, customer.id)["full_name"] == customer.full_name


@pytest.mark.parametrize("name", ["Ra\u200dhul", "\u0646\u0648\u06cc\u062f\u200c\u0647", "Bo \u2764\ufe0f", "Zo\u00eb",
                                  "Nguye\u0302\u0303n", "\u1828\u180b\u1820",  # Vietnamese NFD, Mongolian FVS
                                  "\u0418\u0432\u0430\u043d Smith", "\u03a3\u03c9\u03ba\u03c1\u03ac\u03c4\u03b7\u03c2 O\u2019Brien-Jones",
                                  "\u5c71\u7530\u305f\u308d\u3046",  # one alphabet per word; kanji with kana
                                  "\u041f\u0435\u0442\u0440\u043e\u0432\u0430-Smith",  # words joined by punctuation
                                  "\u845b\U000e0100\u5c71", "\U0001f468\u200d\u2764\ufe0f\u200d\U0001f468",  # IVS, ZWJ emoji
                                  "\u1000\u103c\u103d\u1031\u1038",  # Myanmar: four marks on one consonant
                                  # the flag of Scotland: black flag, tag letters "gbsct", cancel tag
                                  "Ailsa \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"])
def test_profile_keeps_joiners_and_variation_selectors_in_names(client, auth, customer, name, app):
    """Are the zero-width joiner and non-joiner (which several scripts need in ordinary names), an
    emoji's variation selector, the tags of a subdivision flag emoji, decomposed accents, and
    names whose words are each in one alphabet still accepted?"""
    auth.login(customer.email)

    response = client.post("/auth/profile", data={"full_name": name, "phone": "+1 555 0100"})

    assert response.status_code == 302
    assert user_row(app, customer.id)["full_name"] == name


def test_authenticate_service_survives_a_nul_byte_in_the_email(app):
    """Below the form (which refuses it), does the sign-in service itself treat an email with a
    NUL byte as an unknown address, recording the failure as a fingerprint without the byte
    (PostgreSQL can't store NUL), rather than failing with a 500?"""
    with app.app_context():
        with pytest.raises(auth_services.InvalidCredentialsError):
            auth_services.authenticate("a\x00b@example.com", "any password at all", "192.0.2.9")
        stored = db.session.scalar(select(LoginAttempt.email))
    assert stored.startswith(auth_services.NOT_AN_ADDRESS) and "\x00" not in stored
