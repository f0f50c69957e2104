"""The 503 page when the database fails while the signed-in user is being loaded (any backend).

tests/integration/test_database_faults.py shows this against a real PostgreSQL that goes away;
this is its regression test for every run: the error page must not query the database again
(Flask-Login's template context processor used to reload the user while rendering it, raising
the same error inside the handler, and the request ended as the server's bare 500).
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from app.errors import ERROR_TITLES
from app.extensions import db

INTERNAL_DETAIL = "connection to server at 10.0.0.5 failed (internal detail)"


def test_a_database_failure_while_loading_the_user_is_a_plain_503(client, auth, customer, monkeypatch):
    """When the database fails on the very first query of a signed-in request (loading the user),
    is the answer still the plain 503 page with the security headers, rather than a bare 500?"""
    assert auth.login(customer.email).status_code == 302
    healthy = client.get("/banking/dashboard")
    assert healthy.status_code == 200

    def unreachable(*args, **kwargs):
        raise OperationalError("SELECT user", {}, Exception(INTERNAL_DETAIL))

    monkeypatch.setattr(db.session, "execute", unreachable)  # the user loader's SELECT is the first
    response = client.get("/banking/dashboard")

    body = response.get_data(as_text=True)
    assert response.status_code == 503, body[:500]
    assert ERROR_TITLES[503][1] in body
    assert INTERNAL_DETAIL not in body and "SELECT" not in body and "Traceback" not in body
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy",
                 "Permissions-Policy", "Cache-Control"):
        assert response.headers.get(name) == healthy.headers.get(name), name
