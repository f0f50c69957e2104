"""Multi-factor sign-in with TOTP (DESIGN.md sections 5 and 6; RFC 6238; OWASP ASVS 4.0.3 2.7,
2.8; PCI DSS v4.0 8.4): enrolment with a server-drawn QR code, the code step after a correct
password, single use within the window, one step of drift, throttling like passwords, audit
rows, disabling with the password, encrypted storage, and REQUIRE_STAFF_MFA.

Time is frozen with time-machine so codes and their 30-second steps are deterministic."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import time_machine
from sqlalchemy import select, text

from app.auth import mfa
from app.extensions import db
from app.models import AuditLog, LoginAttempt, User
from tests.factories import DEFAULT_PASSWORD
from tests.integration.test_auth import is_logged_in, session_cookie

NOW = 1_900_000_000  # a fixed instant, 20 s into its 30-second step
STEP = NOW // 30
KEY_TEXT = re.compile(r'<code class="fs-5" id="mfa-key">([A-Z2-7 ]+)</code>')


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False) as clock:
        yield clock


def offered_key(client) -> str:
    """The key the setup page shows as text (what a person would type into their app)."""
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    match = KEY_TEXT.search(page)
    assert match, "no key on the setup page"
    return match.group(1).replace(" ", "")


def enrol(client, step: int = STEP) -> str:
    """Enrol the signed-in user's authenticator with the code of `step`; returns the key."""
    key = offered_key(client)
    response = client.post("/auth/mfa/setup", data={"code": mfa.code_at(key, step)})
    assert response.status_code == 302, response.get_data(as_text=True)
    return key


def password_step(client, email, password=DEFAULT_PASSWORD, next_url=None):
    url = "/auth/login" + (f"?next={next_url}" if next_url else "")
    return client.post(url, data={"email": email, "password": password})


def code_step(client, code):
    return client.post("/auth/mfa", data={"code": code})


def audit(app, action):
    with app.app_context():
        return [json.loads(details) for details in
                db.session.scalars(select(AuditLog.details).where(AuditLog.action == action).order_by(AuditLog.id))]


def user_row(app, user_id) -> User:
    with app.app_context():
        user = db.session.get(User, user_id)
        db.session.expunge(user)
        return user


@pytest.fixture
def enrolled(app, client, auth, customer):
    """A customer with an enrolled authenticator, signed out; returns (customer, key)."""
    auth.login(customer.email)
    key = enrol(client)
    auth.logout()
    return customer, key


# --- enrolment -----------------------------------------------------------------------------


def test_setup_shows_the_key_as_a_qr_code_drawn_here_and_as_text(client, logged_in_customer):
    """Does the setup page show the key as text and as an inline SVG QR code (a data: URI, no
    outside service) holding the otpauth URI for this bank and user, the same key on reload?"""
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    key = KEY_TEXT.search(page).group(1).replace(" ", "")
    image = re.search(r'<img src="(data:image/svg\+xml[^"]+)"', page)
    assert image and len(key) == 32
    assert "http" not in image.group(1).split(",", 1)[0]
    assert offered_key(client) == key, "a reload keeps the offered key"
    with client.application.test_request_context():
        otpauth = urlsplit(mfa.provisioning_uri(key, logged_in_customer.email))
    assert otpauth.scheme == "otpauth" and otpauth.netloc == "totp"
    assert parse_qs(otpauth.query)["secret"] == [key] and parse_qs(otpauth.query)["issuer"] == ["Online Bank"]
    assert logged_in_customer.email in unquote(otpauth.path)


def test_offered_key_is_not_readable_in_the_session_cookie(app, client, logged_in_customer):
    """Is the key offered at enrolment kept in the session only sealed (the cookie is signed,
    not encrypted, so a plain key would be readable by anything that sees the cookie)?"""
    key = offered_key(client)
    data = app.session_interface.get_signing_serializer(app).loads(session_cookie(client))
    assert key not in json.dumps(data)
    assert key not in session_cookie(client)


def test_enrolment_with_the_right_code_turns_mfa_on_and_is_audited(app, client, customer, auth):
    """Does a correct code turn two-step sign-in on, store the key only encrypted and bound to
    this user, log MFA_ENROLLED, keep this session and end the user's other sessions?"""
    auth.login(customer.email)
    other = app.test_client()
    other.post("/auth/login", data={"email": customer.email, "password": DEFAULT_PASSWORD})
    key = enrol(client)

    row = user_row(app, customer.id)
    assert row.mfa_enabled and row.mfa_enrolled_at is not None and row.mfa_last_step == STEP
    assert key not in row.mfa_secret
    with app.app_context():
        assert mfa.decrypt_secret(row.mfa_secret, f"user:{customer.id}") == key
        with pytest.raises(mfa.MfaKeyError):
            mfa.decrypt_secret(row.mfa_secret, "user:999")  # a copy in another user's row won't open
    assert audit(app, "MFA_ENROLLED") == [{"user_id": customer.id, "time_step": STEP}]
    assert is_logged_in(client)
    assert not is_logged_in(other)


def test_key_is_never_shown_again_after_enrolment(app, client, logged_in_customer):
    """Once enrolled, does the setup page say so without the key or a QR code?"""
    key = enrol(client)
    page = client.get("/auth/mfa/setup").get_data(as_text=True)
    assert "Two-step sign-in is on" in page
    assert key not in page and key[:4] not in page.replace(" ", "") and "data:image" not in page


@pytest.mark.parametrize("code", ["000000", "12345", "1234567", "abcdef", "١٢٣٤٥٦", ""])
def test_enrolment_with_a_wrong_or_malformed_code_changes_nothing(app, client, logged_in_customer, code):
    """Is a wrong or malformed code at enrolment a 400 with a message, leaving MFA off?"""
    key = offered_key(client)
    if code == "000000" and mfa.code_at(key, STEP) == code:
        code = "000001"
    response = client.post("/auth/mfa/setup", data={"code": code})
    assert response.status_code == 400
    assert "code" in response.get_data(as_text=True).lower()
    assert not user_row(app, logged_in_customer.id).mfa_enabled
    assert offered_key(client) == key


def test_code_typed_with_a_space_in_the_middle_is_accepted(app, client, logged_in_customer):
    """Is "123 456" (as apps display codes) read as 123456?"""
    key = offered_key(client)
    code = mfa.code_at(key, STEP)
    assert client.post("/auth/mfa/setup", data={"code": f"{code[:3]} {code[3:]}"}).status_code == 302


# --- signing in ----------------------------------------------------------------------------


def test_password_alone_does_not_sign_in_an_enrolled_user(app, client, enrolled):
    """After a correct password, is the user sent to the code step and still signed out, with no
    LOGIN_SUCCESS yet?"""
    customer, _key = enrolled
    before = len(audit(app, "LOGIN_SUCCESS"))
    response = password_step(client, customer.email)
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/mfa")
    assert client.get("/auth/mfa").status_code == 200
    assert not is_logged_in(client)
    assert len(audit(app, "LOGIN_SUCCESS")) == before


def test_right_code_completes_the_sign_in_to_the_requested_page(app, client, enrolled, frozen_clock):
    """Does the code of the next step sign the user in (to `next`), logging MFA_SUCCESS and
    LOGIN_SUCCESS, with a new session?"""
    customer, key = enrolled
    frozen_clock.shift(30)
    password_step(client, customer.email, next_url="/banking/transactions")
    pending_cookie = session_cookie(client)
    response = code_step(client, mfa.code_at(key, STEP + 1))
    assert response.status_code == 302 and response.headers["Location"].endswith("/banking/transactions")
    assert is_logged_in(client)
    assert session_cookie(client) != pending_cookie
    assert audit(app, "MFA_SUCCESS")[-1] == {"user_id": customer.id, "time_step": STEP + 1}
    assert audit(app, "LOGIN_SUCCESS")[-1] == {"email": customer.email, "mfa": True}


def test_a_code_works_only_once(app, client, enrolled, frozen_clock):
    """Replay (RFC 6238 section 5.2; ASVS 2.8.4): is a code already accepted refused when used
    again within its window, logged MFA_FAILURE with the reason?"""
    customer, key = enrolled  # enrolment used STEP's code
    password_step(client, customer.email)
    response = code_step(client, mfa.code_at(key, STEP))
    assert response.status_code == 400
    assert not is_logged_in(client)
    assert audit(app, "MFA_FAILURE")[-1] == {"user_id": customer.id, "stage": "sign_in", "reason": "code_already_used"}

    frozen_clock.shift(30)
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 302
    client.post("/auth/logout")
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 400, "the sign-in's code, replayed"


def test_a_used_code_is_refused_with_the_advice_to_wait_for_the_next(app, client, enrolled, frozen_clock):
    """Is the code that confirmed enrolment, typed again at the next sign-in within its 30
    seconds, refused with a message saying it can't be used again and to wait for a new one,
    while a wrong code still gets the plain "not valid" message?"""
    customer, key = enrolled  # enrolment used STEP's code
    password_step(client, customer.email)
    used = code_step(client, mfa.code_at(key, STEP))
    assert used.status_code == 400
    assert "can&#39;t be used again" in used.text and "Wait until your authenticator app shows a new code" in used.text
    assert "That code is not valid" not in used.text

    current = {mfa.code_at(key, step) for step in (STEP - 1, STEP, STEP + 1)}
    wrong = next(code for code in ("000000", "111111", "222222", "333333") if code not in current)
    refused = code_step(client, wrong)
    assert refused.status_code == 400
    assert "That code is not valid" in refused.text and "used again" not in refused.text


@pytest.mark.parametrize(("offset", "accepted"), [(-2, False), (-1, True), (1, True), (2, False)])
def test_one_step_of_clock_drift_is_accepted_either_way(app, client, enrolled, frozen_clock, offset, accepted):
    """Are codes one 30-second step early or late accepted, and two steps refused?"""
    customer, key = enrolled
    frozen_clock.shift(10 * 30)  # well past the enrolment step
    password_step(client, customer.email)
    response = code_step(client, mfa.code_at(key, STEP + 10 + offset))
    assert (response.status_code == 302) is accepted


def test_wrong_codes_are_throttled_like_passwords(app, client, enrolled):
    """After 5 wrong codes for the user, is even the right code refused with 429 (logged
    LOGIN_THROTTLED), each wrong one logged MFA_FAILURE and counted as a sign-in failure?"""
    customer, key = enrolled
    password_step(client, customer.email)
    right = mfa.code_at(key, STEP + 1)
    wrong = "999999" if right != "999999" else "999998"
    statuses = [code_step(client, wrong).status_code for _ in range(5)]
    assert statuses == [400] * 5
    assert len(audit(app, "MFA_FAILURE")) == 5
    response = code_step(client, right)
    assert response.status_code == 429 and 590 <= int(response.headers["Retry-After"]) <= 600
    assert not is_logged_in(client)
    assert audit(app, "LOGIN_THROTTLED")[-1]["during"] == "mfa"


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "LOGIN_RATE_LIMIT": "3 per minute"}])
def test_code_steps_refused_by_the_request_rate_limit_are_logged_like_passwords(app, client, enrolled):
    """Is each code POST refused by LOGIN_RATE_LIMIT (429) logged LOGIN_THROTTLED under the user
    whose password was accepted, as a refused password POST is (DESIGN.md section 5b)?"""
    customer, _key = enrolled
    password_step(client, customer.email)
    statuses = [code_step(client, "000000").status_code for _ in range(5)]

    assert statuses == [400, 400, 400, 429, 429]
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details)
                                  .where(AuditLog.action == "LOGIN_THROTTLED").order_by(AuditLog.id)).all()
    assert [(user_id, json.loads(details)) for user_id, details in rows] == [
        (customer.id, {"reason": "request_rate_limit", "during": "mfa"})] * 2


def test_a_correct_password_does_not_reset_the_count_of_wrong_codes(app, client, enrolled):
    """Could someone who has the password, but not the phone, guess codes forever by entering the
    password again between guesses? (Failures are cleared only by a completed sign-in.)"""
    customer, key = enrolled
    wrong = "999999" if mfa.code_at(key, STEP + 1) != "999999" else "999998"
    for _ in range(5):
        assert password_step(client, customer.email).status_code == 302
        assert code_step(client, wrong).status_code == 400
    assert password_step(client, customer.email).status_code == 429
    with client.application.app_context():
        assert db.session.scalar(select(db.func.count(LoginAttempt.id))) == 5


def test_code_step_expires_five_minutes_after_the_password(app, client, enrolled, frozen_clock):
    """Is the code step refused (back to the login page) when more than 5 minutes have passed
    since the correct password?"""
    customer, key = enrolled
    password_step(client, customer.email)
    frozen_clock.shift(5 * 60 + 1)
    step = (NOW + 5 * 60 + 1) // 30
    response = code_step(client, mfa.code_at(key, step))
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/login")
    assert not is_logged_in(client)


def test_code_step_without_a_password_goes_to_the_login_page(client, enrolled):
    """Can the code page be used without first giving the password (e.g. to guess codes)? No."""
    customer, key = enrolled
    response = code_step(client, mfa.code_at(key, STEP + 1))
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/login")
    assert not is_logged_in(client)


def test_code_step_is_void_once_the_user_signs_out_everywhere(app, client, enrolled):
    """If the user logs out (rotating the session token) between the password and the code, is
    the half-finished sign-in void?"""
    customer, key = enrolled
    password_step(client, customer.email)
    with app.app_context():
        user = db.session.get(User, customer.id)
        user.session_token = "rotated-elsewhere"
        db.session.commit()
    response = code_step(client, mfa.code_at(key, STEP + 1))
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/login")
    assert not is_logged_in(client)


def test_audit_rows_never_hold_a_code_or_the_key(app, client, enrolled):
    """Do the MFA audit rows (and all others) leave out the one-time codes and the key?"""
    customer, key = enrolled
    password_step(client, customer.email)
    code_step(client, "123456")
    code = mfa.code_at(key, STEP + 1)
    code_step(client, code)
    with app.app_context():
        details = " ".join(db.session.scalars(select(AuditLog.details)))
    assert key not in details and code not in details and "123456" not in details


# --- disabling -----------------------------------------------------------------------------


def test_disabling_needs_the_password(app, client, auth, enrolled):
    """Is a wrong password a 400 that leaves MFA on (and counts as a failure), and the right one
    turns it off, logs MFA_DISABLED, and makes the next sign-in password-only?"""
    customer, key = enrolled
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 302
    response = client.post("/auth/mfa/disable", data={"password": "not my password at all"})
    assert response.status_code == 400
    assert user_row(app, customer.id).mfa_enabled
    response = client.post("/auth/mfa/disable", data={"password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    row = user_row(app, customer.id)
    assert not row.mfa_enabled and row.mfa_secret is None and row.mfa_last_step is None
    assert audit(app, "MFA_DISABLED") == [{"user_id": customer.id}]
    assert is_logged_in(client)
    auth.logout()
    response = password_step(client, customer.email)
    assert response.headers["Location"].endswith("/banking/dashboard")


def test_verify_audit_follows_enrolment_and_disabling(app, client, runner, auth, enrolled, other_customer):
    """After one user enrols and turns two-step sign-in off again through the app and another
    enrols and keeps it (each audited), do the users still match the trail?"""
    customer, key = enrolled
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 302
    assert client.post("/auth/mfa/disable", data={"password": DEFAULT_PASSWORD}).status_code == 302
    auth.logout()
    auth.login(other_customer.email)
    enrol(client)

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output
    assert "every user's email, role, active flag, two-step sign-in, password hash, name and phone, and every support ticket and reply, match it" in result.output


def test_verify_audit_reports_two_step_sign_in_removed_behind_the_app(app, runner, enrolled, other_customer):
    """Is an authenticator key removed with SQL (the second factor gone for whoever holds the
    password), or one copied onto a user who never enrolled, reported by verify-audit with exit
    status 1, naming each user, though the chain itself holds?"""
    customer, _ = enrolled
    with app.app_context():
        secret = db.session.get(User, customer.id).mfa_secret
        db.session.execute(text('UPDATE "user" SET mfa_secret = NULL WHERE id = :id'), {"id": customer.id})
        db.session.execute(text('UPDATE "user" SET mfa_secret = :secret WHERE id = :id'),
                           {"secret": secret, "id": other_customer.id})
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    assert "Audit chain holds" in result.output
    assert f"user {customer.id}: mfa_enabled is False, but the audit trail says True" in result.output
    assert f"user {other_customer.id}: mfa_enabled is True, but the audit trail says False" in result.output


def test_verify_audit_reports_a_used_code_made_usable_again(app, client, runner, enrolled, frozen_clock):
    """After a sign-in with a code (its time step recorded in MFA_SUCCESS), do the users match
    the trail; and is the stored last step set back with SQL, which would let a captured code
    (or the same one) be accepted again, reported by verify-audit?"""
    customer, key = enrolled
    frozen_clock.shift(30)
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 302
    intact = runner.invoke(args=["verify-audit"])
    with app.app_context():
        db.session.execute(text('UPDATE "user" SET mfa_last_step = 0 WHERE id = :id'), {"id": customer.id})
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert intact.exit_code == 0, intact.output
    assert result.exit_code == 1
    assert (f"user {customer.id}: the last accepted sign-in code's time step is 0, but audit row"
            in result.output and f"recorded {STEP + 1}" in result.output)


# --- operator recovery: flask reset-mfa ---------------------------------------------------


@pytest.fixture
def operator(monkeypatch):
    """The operating-system account the commands see: `opal`, not through sudo."""
    monkeypatch.setenv("LOGNAME", "opal")
    monkeypatch.delenv("SUDO_USER", raising=False)
    return "opal"


def test_reset_mfa_command_lets_the_owner_back_in_and_ends_the_key_holders_session(app, client, runner, enrolled,
                                                                                     operator):
    """A key enrolled from a stolen session (or a lost phone) would lock the owner out for good:
    does `reset-mfa` turn two-step sign-in off, end every open session (the one holding the key
    included), make the next sign-in password-only, and log MFA_DISABLED by the operator with
    the reason and no user id?"""
    customer, key = enrolled
    password_step(client, customer.email)
    assert code_step(client, mfa.code_at(key, STEP + 1)).status_code == 302
    assert is_logged_in(client)
    result = runner.invoke(args=["reset-mfa", customer.email.upper(), "--reason", "ticket 42: phone lost"])
    assert result.exit_code == 0, result.output
    assert f"Two-step sign-in is off for {customer.email}" in result.output
    row = user_row(app, customer.id)
    assert not row.mfa_enabled and row.mfa_secret is None and row.mfa_last_step is None
    assert not is_logged_in(client), "the session opened with the key must end"
    response = password_step(client, customer.email)
    assert response.headers["Location"].endswith("/banking/dashboard")
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details)
                                  .where(AuditLog.action == "MFA_DISABLED")).all()
    assert [(user_id, json.loads(details)) for user_id, details in rows] == [
        (None, {"user_id": customer.id, "email": customer.email, "by": "operator", "operator": operator,
                "reason": "ticket 42: phone lost"})]


def test_reset_mfa_command_records_the_account_behind_sudo_and_the_trimmed_reason(app, runner, enrolled, operator,
                                                                                  monkeypatch):
    """Is a sudo run recorded with the account that ran sudo, and a reason of 200 characters
    (the most) accepted and stored without the spaces around it?"""
    customer, _key = enrolled
    monkeypatch.setenv("LOGNAME", "root")
    monkeypatch.setenv("SUDO_USER", "opal")
    reason = "r" * 200

    result = runner.invoke(args=["reset-mfa", customer.email, "--reason", f"  {reason}  "])

    assert result.exit_code == 0, result.output
    assert audit(app, "MFA_DISABLED") == [{"user_id": customer.id, "email": customer.email, "by": "operator",
                                           "operator": "root (sudo from opal)", "reason": reason}]


@pytest.mark.parametrize("app_overrides", [{"REQUIRE_STAFF_MFA": True}])
def test_staff_reset_by_the_operator_must_enrol_again(app, client, auth, runner, make_user, operator):
    """With REQUIRE_STAFF_MFA on, does a staff member whose key the operator removed sign in
    with the password and then meet the enrolment page before any other?"""
    staff = make_user(role="auditor")
    auth.login(staff.email)
    enrol(client)
    auth.logout()
    assert runner.invoke(args=["reset-mfa", staff.email, "--reason", "ticket 7: seen in person"]).exit_code == 0

    response = password_step(client, staff.email)
    assert response.status_code == 302 and not response.headers["Location"].endswith("/auth/mfa")
    response = client.get("/audit/logs")
    assert response.status_code == 302 and response.headers["Location"].endswith("/auth/mfa/setup")


@pytest.mark.parametrize(("who", "reason", "message"), [
    ("enrolled", "", "Give the reason"),
    ("enrolled", "   ", "Give the reason"),
    ("enrolled", "x" * 201, "Give the reason"),
    ("enrolled", "ticket\x1b[2J 42", "Give the reason"),
    ("nobody", "ticket 42", "No user has the email"),
    ("not enrolled", "ticket 42", "not on for this user"),
])
def test_reset_mfa_command_refuses_and_changes_nothing(app, runner, enrolled, make_user, who, reason, message):
    """Does `reset-mfa` refuse a missing, blank, over-long or control-character reason, an
    unknown email and a user without two-step sign-in, with a message, a non-zero exit, the
    key left in place and no audit row?"""
    customer, _key = enrolled
    email = {"enrolled": customer.email, "nobody": "nobody@example.com",
             "not enrolled": make_user(role="customer").email}[who]
    result = runner.invoke(args=["reset-mfa", email, "--reason", reason])
    assert result.exit_code != 0
    assert message in result.output
    assert user_row(app, customer.id).mfa_enabled
    assert audit(app, "MFA_DISABLED") == []


def test_reset_mfa_that_lost_a_race_to_another_removal_changes_nothing(app, runner, enrolled, operator, monkeypatch):
    """When the key is already gone by the time of the write (the user turned it off a moment
    after the check), is the reset refused with one MFA_DISABLED row in all, not two?"""
    from app.auth import services as auth_services

    customer, _key = enrolled
    stale = user_row(app, customer.id)  # read while still enrolled
    assert runner.invoke(args=["reset-mfa", customer.email, "--reason", "ticket 1"]).exit_code == 0
    monkeypatch.setattr(auth_services, "find_user_by_email", lambda _email: stale)

    with app.app_context(), pytest.raises(auth_services.MfaStateError):
        auth_services.reset_mfa(customer.email, "ticket 2", operator)

    assert [row["reason"] for row in audit(app, "MFA_DISABLED")] == ["ticket 1"]


def test_reset_mfa_command_needs_a_reason(app, runner, enrolled):
    """Is the reason required (no audit row without one, the key left in place)?"""
    customer, _key = enrolled
    result = runner.invoke(args=["reset-mfa", customer.email])
    assert result.exit_code != 0 and "--reason" in result.output
    assert user_row(app, customer.id).mfa_enabled
    assert audit(app, "MFA_DISABLED") == []


# --- REQUIRE_STAFF_MFA ---------------------------------------------------------------------


@pytest.mark.parametrize("app_overrides", [{"REQUIRE_STAFF_MFA": True}])
@pytest.mark.parametrize("role", ["support", "auditor", "admin"])
def test_staff_must_enrol_before_any_other_page(app, client, auth, make_user, role):
    """With REQUIRE_STAFF_MFA on, is every page but enrolment, password change and logout a
    redirect to /auth/mfa/setup for staff without a second factor, until they enrol; and may they
    not turn it off afterwards?"""
    staff = make_user(role)
    auth.login(staff.email)
    for path in ("/banking/dashboard", "/audit/logs", "/support/tickets", "/banking/admin/users", "/auth/profile"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].endswith("/auth/mfa/setup"), path
    assert client.get("/auth/change-password").status_code == 200
    assert client.get("/auth/logout").status_code == 200
    enrol(client)
    assert client.get("/banking/dashboard").status_code == 200
    response = client.post("/auth/mfa/disable", data={"password": DEFAULT_PASSWORD})
    assert response.status_code == 400 and "must keep" in response.get_data(as_text=True)
    assert user_row(app, staff.id).mfa_enabled


@pytest.mark.parametrize("app_overrides", [{"REQUIRE_STAFF_MFA": True}])
def test_customers_are_not_forced_to_enrol(client, logged_in_customer):
    """Does REQUIRE_STAFF_MFA leave customers free to choose?"""
    assert client.get("/banking/dashboard").status_code == 200


def test_staff_are_not_forced_to_enrol_when_the_setting_is_off(client, auth, make_user):
    """With REQUIRE_STAFF_MFA off (development and testing), do staff pages open without a second factor?"""
    auth.login(make_user("auditor").email)
    assert client.get("/audit/logs").status_code == 200


def test_the_same_code_sent_twice_at_once_signs_in_once(app, enrolled):
    """Replay race (ASVS 2.8.4): do two requests racing with the same fresh code get exactly one
    sign-in (the time step is claimed by one conditional UPDATE)?"""
    import threading

    from app.auth import services

    customer, key = enrolled
    token = user_row(app, customer.id).session_token
    code = mfa.code_at(key, STEP + 1)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def attempt():
        with app.app_context():
            barrier.wait()
            try:
                services.complete_mfa_sign_in(customer.id, token, code, "127.0.0.1")
                results.append("signed in")
            except services.MfaCodeError:
                results.append("refused")

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["refused", "signed in"]
