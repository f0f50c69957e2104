"""Session lifetime against a controllable clock (time-machine moves `time.time` and `datetime`
for the app, itsdangerous and the test client alike): the 15-minute sliding idle timeout
(PCI DSS v4.0 8.2.8, OWASP ASVS 4.0.3 3.3.2) and the 12-hour absolute limit (ASVS 3.3.2) are
enforced by the server, so a session cookie replayed after either is refused even when the
client (an attacker's tool) ignores the cookie's expiry."""

from __future__ import annotations

import time

import time_machine

from tests.integration.test_auth import is_logged_in, session_cookie

MINUTE = 60
HOUR = 60 * MINUTE


def _replay(client, cookie: str) -> None:
    """Send `cookie` again as a session cookie without an expiry, as a copied cookie would be."""
    client.set_cookie("session", cookie)


def test_session_expiry_idle_cookie_replayed_after_fifteen_minutes_is_refused(client, logged_in_customer):
    """Session expiry (CWE-613): is a cookie last used 15 minutes and a few seconds ago refused by
    the server, while one used 14 minutes ago still works?"""
    with time_machine.travel(time.time(), tick=False) as clock:
        client.get("/banking/dashboard")  # the cookie is re-signed at the travelled "now"
        cookie = session_cookie(client)
        clock.shift(14 * MINUTE)
        _replay(client, cookie)
        assert is_logged_in(client)

        fresh = session_cookie(client)  # that request slid the idle window
        clock.shift(15 * MINUTE + 5)
        _replay(client, fresh)
        assert not is_logged_in(client)


def test_session_expiry_absolute_limit_ends_an_active_session_after_twelve_hours(client, customer, auth):
    """Session expiry (CWE-613): does a session kept busy every 14 minutes (never idle) still end
    12 hours after sign-in, and not a minute before?"""
    with time_machine.travel(time.time(), tick=False) as clock:
        assert auth.login(customer.email).status_code == 302
        elapsed = 0
        while elapsed + 14 * MINUTE < 12 * HOUR - MINUTE:
            clock.shift(14 * MINUTE)
            elapsed += 14 * MINUTE
            assert is_logged_in(client), f"ended early, {elapsed / HOUR:.2f} h after sign-in"
        clock.shift(12 * HOUR - MINUTE - elapsed)
        assert is_logged_in(client), "ended before 12 hours"

        clock.shift(2 * MINUTE)  # 12 h 1 min after sign-in, 2 minutes after the last request
        response = client.get("/banking/dashboard")
        assert response.status_code == 302 and response.headers["Location"].endswith("/auth/login")
        assert not is_logged_in(client)


def test_session_expiry_password_change_keeps_the_absolute_limit(client, customer, auth):
    """Session expiry (CWE-613): does changing the password (which rotates the session token)
    keep the original sign-in time, so the 12-hour limit can't be extended by it?"""
    new_password = "a fresh cobalt lighthouse 7731"
    with time_machine.travel(time.time(), tick=False) as clock:
        assert auth.login(customer.email).status_code == 302
        for _ in range(50):  # 11 h 40 min of activity
            clock.shift(14 * MINUTE)
            assert is_logged_in(client)
        response = client.post("/auth/change-password", data={
            "current_password": "correct horse battery staple 42", "new_password": new_password,
            "confirm_password": new_password})
        assert response.status_code == 302, response.get_data(as_text=True)
        clock.shift(14 * MINUTE)  # 11 h 54 min
        assert is_logged_in(client)
        clock.shift(14 * MINUTE)  # 12 h 8 min
        assert not is_logged_in(client)


def _set_cookie_sent(response) -> bool:
    return any(header.startswith("session=") for header in response.headers.getlist("Set-Cookie"))


def test_session_expiry_cookie_not_re_signed_within_the_minute_still_ends_fifteen_minutes_after_signing(
        client, logged_in_customer):
    """Session expiry (CWE-613): an unchanged session is re-signed at most once a minute
    (app/sessions.py). Is a request 30 s after the signature answered without a new cookie, and
    does the idle clock still run from the signature, so the cookie is refused 15 minutes after
    it was signed even though it was used 30 s later (the timeout comes earlier, never later)?"""
    with time_machine.travel(time.time(), tick=False) as clock:
        clock.shift(2 * MINUTE)
        first = client.get("/banking/dashboard")
        assert first.status_code == 200 and _set_cookie_sent(first)  # signature 2 min old: re-signed
        signed = session_cookie(client)

        clock.shift(30)
        within = client.get("/banking/dashboard")
        assert within.status_code == 200 and not _set_cookie_sent(within)
        assert session_cookie(client) == signed

        clock.shift(15 * MINUTE - 30 + 1)  # 15 min 1 s after the signature, 14 min 31 s after use
        _replay(client, signed)
        assert not is_logged_in(client)


def test_session_expiry_changed_session_is_re_signed_at_once(client, logged_in_customer):
    """A session whose content changes inside the minute (here a flash message) gets its new
    cookie at once: the interval only spares re-signing an unchanged session."""
    with time_machine.travel(time.time(), tick=False):
        before = session_cookie(client)
        answer = client.post("/auth/logout")
        assert answer.status_code == 302 and _set_cookie_sent(answer)
        assert session_cookie(client) != before
