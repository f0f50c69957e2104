"""CSRF protection with Flask-WTF switched on, as in production: every POST needs the token of
its own session (DESIGN.md sections 5 and 6: "CSRF first for every POST")."""

from __future__ import annotations

import pytest

from tests.conftest import csrf_token_from
from tests.factories import DEFAULT_PASSWORD

CSRF_MESSAGE = "The form expired or was not sent by this site"


@pytest.fixture
def app_overrides() -> dict:
    return {"WTF_CSRF_ENABLED": True}


def token_of(client, path="/auth/login") -> str:
    """The CSRF token that `path` renders for this client's session."""
    return csrf_token_from(client.get(path).get_data(as_text=True))


def login_with_token(client, email, password=DEFAULT_PASSWORD, token=None):
    token = token_of(client) if token is None else token
    return client.post("/auth/login", data={"email": email, "password": password, "csrf_token": token})


def assert_csrf_refused(response) -> None:
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert CSRF_MESSAGE in page
    assert "Traceback" not in page
    assert 'name="password"' not in page  # the plain error page, not the form re-rendered


def test_every_form_page_carries_a_csrf_token(client):
    """Do the anonymous form pages embed a hidden csrf_token?"""
    for path in ("/auth/login", "/auth/register"):
        assert token_of(client, path)


def test_login_post_without_token_is_refused(client, customer):
    """Is a sign-in POST without a token a 400 plain page, even with the right password?"""
    response = client.post("/auth/login", data={"email": customer.email, "password": DEFAULT_PASSWORD})
    assert_csrf_refused(response)
    assert client.get("/banking/dashboard").status_code == 302


def test_register_post_without_token_is_refused(client):
    """Is a registration POST without a token refused before anything is created?"""
    response = client.post("/auth/register", data={
        "full_name": "Alice Example", "email": "alice@example.com", "phone": "+44 20 7946 0000",
        "password": "purple otter quietly sings 1987", "confirm_password": "purple otter quietly sings 1987",
    })
    assert_csrf_refused(response)


@pytest.mark.parametrize("forged", ["forged", "", "IjAxMjM0NTY3ODlhYmNkZWYi.Zm9yZ2Vk.c2lnbmF0dXJl"])
def test_login_post_with_forged_token_is_refused(client, customer, forged):
    """Is a made-up token refused with 400?"""
    client.get("/auth/login")
    assert_csrf_refused(login_with_token(client, customer.email, token=forged))


def test_token_from_another_session_is_refused(app, client, customer):
    """Is a valid token issued to one session refused when sent with another session?"""
    attacker = app.test_client()
    attackers_token = token_of(attacker)
    token_of(client)  # the victim has a session and a token of their own
    assert_csrf_refused(login_with_token(client, customer.email, token=attackers_token))


def test_token_without_any_session_is_refused(app, customer):
    """Is a token refused when the request carries no session at all (a cross-site POST)?"""
    token = token_of(app.test_client())
    fresh = app.test_client()
    assert_csrf_refused(login_with_token(fresh, customer.email, token=token))


def test_valid_token_lets_the_form_through(client, customer):
    """Does a sign-in with its own session's token succeed?"""
    response = login_with_token(client, customer.email)
    assert response.status_code == 302
    assert client.get("/banking/dashboard").status_code == 200


def test_login_issues_a_new_csrf_token(client, customer):
    """Is the token issued before sign-in useless afterwards (new session, new token)?"""
    before = token_of(client)
    assert login_with_token(client, customer.email, token=before).status_code == 302
    after = token_of(client, "/auth/logout")
    assert after != before
    assert_csrf_refused(client.post("/auth/logout", data={"csrf_token": before}))
    assert client.get("/banking/dashboard").status_code == 200


def test_logout_post_without_token_is_refused_and_keeps_the_session(client, customer):
    """Can a cross-site page not log the user out: is a logout POST without the token refused?"""
    assert login_with_token(client, customer.email).status_code == 302
    assert_csrf_refused(client.post("/auth/logout"))
    assert client.get("/banking/dashboard").status_code == 200


def test_logout_post_with_token_logs_out(client, customer):
    """Does the logout confirmation form's token log the user out?"""
    assert login_with_token(client, customer.email).status_code == 302
    response = client.post("/auth/logout", data={"csrf_token": token_of(client, "/auth/logout")})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/auth/login")
    assert client.get("/banking/dashboard").status_code == 302


def test_navbar_logout_button_carries_a_token_that_works(client, customer):
    """Does the logout button on every signed-in page carry a working token?"""
    assert login_with_token(client, customer.email).status_code == 302
    token = token_of(client, "/banking/dashboard")
    assert client.post("/auth/logout", data={"csrf_token": token}).status_code == 302


@pytest.mark.parametrize("path", ["/auth/profile", "/auth/change-password", "/banking/open-account",
                                  "/banking/transfer/internal", "/banking/transfer/external"])
def test_signed_in_posts_without_token_are_refused(client, customer, path):
    """Is every state-changing form of a signed-in user refused without its token?"""
    assert login_with_token(client, customer.email).status_code == 302
    assert_csrf_refused(client.post(path, data={"full_name": "Changed Name", "phone": "+1 555 0100"}))


def test_anonymous_post_without_token_is_refused_before_the_login_redirect(client):
    """Is the CSRF check first: an anonymous POST without a token is a 400, not a login redirect?"""
    assert_csrf_refused(client.post("/auth/profile", data={"full_name": "X", "phone": "+1 555 0100"}))
