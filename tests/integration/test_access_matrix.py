"""Who may open what: every route of the app × every role against an explicit table (DESIGN.md §6).

The cases are generated from the application's own `url_map`, so a route added without a row in
EXPECTED fails the suite (test_every_route_has_an_expectation and its own matrix cases), and a
row whose route disappeared fails too. POSTs carry no form fields: the matrix checks who gets
through the login and role checks, not what the form then does (CSRF is off in this module; the
CSRF module checks it comes first).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from app.extensions import db
from app.models import AuditLog, User
from tests import factories
from tests.conftest import build_app, dispose_engines

ROLES = ("anonymous", "customer", "support", "auditor", "admin")
PRINCIPALS = (*ROLES, "deactivated")  # deactivated: signed in, then deactivated by an admin
STAFF = ("support", "auditor", "admin")
SIGNED_IN = ("customer", *STAFF)

# Outcomes
OK = "200"                    # the page (or file) is served
INVALID = "400"               # let through; the empty form is refused by validation
LOGIN = "login"               # 302 to /auth/login (anonymous on a protected page)
DASHBOARD = "dashboard"       # 302 to /banking/dashboard (signed-in user on login/register, or /)
DENIED = "403"                # wrong role: 403 plus one ACCESS_DENIED audit row
NOT_FOUND = "404"             # allowed role, but the object does not exist
LOGGED_OUT = "logged out"     # 302 to /auth/login and the session no longer works
AUDIT_VIEW = "audit view"     # 302 to /audit/transactions
MFA_SETUP = "mfa setup"       # 302 to /auth/mfa/setup (turning off a second factor one doesn't have)


def _everyone(outcome: str) -> dict[str, str]:
    return {role: outcome for role in ROLES}


def _signed_in(anonymous: str, signed_in: str) -> dict[str, str]:
    return {"anonymous": anonymous} | {role: signed_in for role in SIGNED_IN}


def _customer_only(allowed: str) -> dict[str, str]:
    return {"anonymous": LOGIN, "customer": allowed, "support": DENIED, "auditor": DENIED, "admin": DENIED}


def _support_desk(allowed: str) -> dict[str, str]:
    return {"anonymous": LOGIN, "customer": DENIED, "support": allowed, "auditor": DENIED, "admin": allowed}


def _auditors(allowed: str) -> dict[str, str]:
    return {"anonymous": LOGIN, "customer": DENIED, "support": DENIED, "auditor": allowed, "admin": allowed}


def _admin_only(allowed: str) -> dict[str, str]:
    return {"anonymous": LOGIN, "customer": DENIED, "support": DENIED, "auditor": DENIED, "admin": allowed}


def _customer_and_admin(allowed: str) -> dict[str, str]:
    return {"anonymous": LOGIN, "customer": allowed, "support": DENIED, "auditor": DENIED, "admin": allowed}


# (rule, method) -> role -> outcome. Routes of later issues get their rows when they land.
EXPECTED: dict[tuple[str, str], dict[str, str]] = {
    ("/", "GET"): _signed_in(LOGIN, DASHBOARD),
    ("/static/<path:filename>", "GET"): _everyone(OK),
    ("/bootstrap/static/<path:filename>", "GET"): _everyone(OK),
    ("/auth/register", "GET"): _signed_in(OK, DASHBOARD),
    ("/auth/register", "POST"): _signed_in(INVALID, DASHBOARD),
    ("/auth/login", "GET"): _signed_in(OK, DASHBOARD),
    ("/auth/login", "POST"): _signed_in(INVALID, DASHBOARD),
    ("/auth/logout", "GET"): _signed_in(LOGIN, OK),
    ("/auth/logout", "POST"): _signed_in(LOGIN, LOGGED_OUT),
    ("/auth/profile", "GET"): _signed_in(LOGIN, OK),
    ("/auth/profile", "POST"): _signed_in(LOGIN, INVALID),
    ("/auth/change-password", "GET"): _signed_in(LOGIN, OK),
    ("/auth/change-password", "POST"): _signed_in(LOGIN, INVALID),
    # The code step: only after a correct password (no such step pending here → log in again).
    ("/auth/mfa", "GET"): _signed_in(LOGIN, DASHBOARD),
    ("/auth/mfa", "POST"): _signed_in(LOGIN, DASHBOARD),
    ("/auth/mfa/setup", "GET"): _signed_in(LOGIN, OK),
    ("/auth/mfa/setup", "POST"): _signed_in(LOGIN, INVALID),
    ("/auth/mfa/disable", "GET"): _signed_in(LOGIN, MFA_SETUP),
    ("/auth/mfa/disable", "POST"): _signed_in(LOGIN, MFA_SETUP),
    ("/banking/dashboard", "GET"): _signed_in(LOGIN, OK),
    ("/banking/open-account", "GET"): _customer_and_admin(OK),
    ("/banking/open-account", "POST"): _customer_and_admin(INVALID),
    ("/banking/transfer/internal", "GET"): _customer_and_admin(OK),
    # An admin who has not chosen the customer (?owner_user_id=) gets the customer picker (400).
    ("/banking/transfer/internal", "POST"): _customer_and_admin(INVALID),
    ("/banking/transfer/external", "GET"): _customer_and_admin(OK),
    ("/banking/transfer/external", "POST"): _customer_and_admin(INVALID),
    ("/banking/transactions", "GET"): {"anonymous": LOGIN, "customer": OK, "support": DENIED,
                                       "auditor": AUDIT_VIEW, "admin": AUDIT_VIEW},
    ("/banking/admin/users", "GET"): _admin_only(OK),
    # Object routes are sampled with an id that does not exist: the role check comes first.
    ("/banking/admin/users/<id:user_id>/edit", "GET"): _admin_only(NOT_FOUND),
    ("/banking/admin/users/<id:user_id>/edit", "POST"): _admin_only(NOT_FOUND),
    ("/banking/admin/accounts", "GET"): _admin_only(OK),
    ("/banking/admin/accounts/<id:account_id>/freeze", "POST"): _admin_only(NOT_FOUND),
    ("/banking/admin/accounts/<id:account_id>/unfreeze", "POST"): _admin_only(NOT_FOUND),
    ("/support/create", "GET"): _customer_only(OK),
    ("/support/create", "POST"): _customer_only(INVALID),
    ("/support/my-tickets", "GET"): _customer_only(OK),
    ("/support/tickets", "GET"): _support_desk(OK),
    ("/support/tickets/<id:ticket_id>", "GET"): _support_desk(NOT_FOUND),
    ("/support/tickets/<id:ticket_id>", "POST"): _support_desk(NOT_FOUND),
    ("/audit/logs", "GET"): _auditors(OK),
    ("/audit/logs/verify", "GET"): _auditors(OK),
    ("/audit/transactions", "GET"): _auditors(OK),
}

# Concrete paths for rules with variables.
SAMPLE_PATHS = {
    "/static/<path:filename>": "/static/css/main.css",
    "/bootstrap/static/<path:filename>": "/bootstrap/static/css/bootstrap.min.css",
    "/banking/admin/users/<id:user_id>/edit": "/banking/admin/users/999999/edit",
    "/support/tickets/<id:ticket_id>": "/support/tickets/999999",
    "/banking/admin/accounts/<id:account_id>/freeze": "/banking/admin/accounts/999999/freeze",
    "/banking/admin/accounts/<id:account_id>/unfreeze": "/banking/admin/accounts/999999/unfreeze",
}


def _routes_of_the_app() -> list[tuple[str, str]]:
    application = build_app(":memory:")
    return sorted(
        (rule.rule, method)
        for rule in application.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


APP_ROUTES = _routes_of_the_app()


@pytest.fixture(scope="module")
def matrix_app(test_backend):
    """One application and database for the whole matrix (the cases only read, or are refused),
    with one user per role."""
    url = test_backend.create()
    try:
        application = build_app(url)
        with application.app_context():
            users = {role: factories.make_user(role) for role in SIGNED_IN}
            users["deactivated"] = factories.make_user("customer")
        application.config["MATRIX_USERS"] = users
        yield application
    finally:
        dispose_engines(url)
        test_backend.drop(url)


def _access_denied_rows(application) -> list[tuple[int | None, str]]:
    with application.app_context():
        return db.session.execute(
            select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == "ACCESS_DENIED").order_by(AuditLog.id)
        ).all()


def _location_path(response) -> str:
    return urlsplit(response.headers.get("Location", "")).path


def test_every_route_has_an_expectation():
    """Does the table name every (route, method) the app serves, and nothing it doesn't serve?"""
    assert sorted(EXPECTED) == APP_ROUTES


def test_every_expectation_names_every_role():
    """Does every row of the table say what happens for each of the five roles?"""
    for route, outcomes in EXPECTED.items():
        assert set(outcomes) == set(ROLES), route


def _set_active(application, user_id: int, active: bool) -> None:
    with application.app_context():
        db.session.execute(update(User).where(User.id == user_id).values(is_active=active))
        db.session.commit()


@pytest.mark.parametrize("role", PRINCIPALS)
@pytest.mark.parametrize(("rule", "method"), APP_ROUTES)
def test_route_answers_each_role_as_designed(matrix_app, rule, method, role):
    """Does this route answer this principal as DESIGN.md section 6 says: the page, a login
    redirect for anonymous visitors, or 403 plus an ACCESS_DENIED row for a wrong role? A user
    deactivated while signed in is treated exactly as an anonymous visitor."""
    assert (rule, method) in EXPECTED, f"no access rule for {method} {rule}: add it to EXPECTED"
    outcome = EXPECTED[(rule, method)]["anonymous" if role == "deactivated" else role]
    client = matrix_app.test_client()
    user = matrix_app.config["MATRIX_USERS"].get(role)
    if user is not None:
        login = client.post("/auth/login", data={"email": user.email, "password": factories.DEFAULT_PASSWORD})
        assert login.status_code == 302, f"{role} could not log in"
    if role == "deactivated":
        _set_active(matrix_app, user.id, False)
        try:
            _check_outcome(matrix_app, client, rule, method, outcome, role, None)
        finally:
            _set_active(matrix_app, user.id, True)
        return
    _check_outcome(matrix_app, client, rule, method, outcome, role, user)


def _check_outcome(matrix_app, client, rule, method, outcome, role, user):
    denied_before = _access_denied_rows(matrix_app)
    path = SAMPLE_PATHS.get(rule, rule)

    # A POST carries one unrelated field: with an empty body Flask-WTF would treat the form as
    # not sent and fall back to the object's current values.
    response = client.open(path, method=method, data={"unrelated": "1"} if method == "POST" else None)
    status, location = response.status_code, _location_path(response)
    response.close()
    if outcome == OK:
        assert status == 200
    elif outcome == INVALID:
        assert status == 400
    elif outcome == LOGIN:
        assert (status, location) == (302, "/auth/login")
    elif outcome == DASHBOARD:
        assert (status, location) == (302, "/banking/dashboard")
    elif outcome == DENIED:
        assert status == 403
    elif outcome == NOT_FOUND:
        assert status == 404
    elif outcome == LOGGED_OUT:
        assert (status, location) == (302, "/auth/login")
        assert _location_path(client.get("/banking/dashboard")) == "/auth/login"
    elif outcome == AUDIT_VIEW:
        assert (status, location) == (302, "/audit/transactions")
    elif outcome == MFA_SETUP:
        assert (status, location) == (302, "/auth/mfa/setup")
    else:  # pragma: no cover - a typo in the table
        pytest.fail(f"unknown outcome {outcome!r}")

    new_denials = _access_denied_rows(matrix_app)[len(denied_before):]
    if outcome == DENIED:
        assert len(new_denials) == 1
        user_id, details = new_denials[0]
        assert user_id == user.id
        assert f'"path":"{path}"' in details and f'"role":"{role}"' in details
    else:
        assert new_denials == []


def _unserved_methods() -> list[tuple[str, str]]:
    served: dict[str, set[str]] = {}
    for rule, method in APP_ROUTES:
        served.setdefault(rule, set()).add(method)
    return sorted((rule, method) for rule, methods in served.items() for method in {"GET", "POST"} - methods)


@pytest.mark.parametrize("role", ["anonymous", "admin"])
@pytest.mark.parametrize(("rule", "method"), _unserved_methods())
def test_unserved_methods_answer_405(matrix_app, rule, method, role):
    """Does a GET on a POST-only route (a freeze link in an image tag, say) or a POST on a page
    that only reads answer 405 and change nothing, signed in or not?"""
    client = matrix_app.test_client()
    user = matrix_app.config["MATRIX_USERS"].get(role)
    if user is not None:
        client.post("/auth/login", data={"email": user.email, "password": factories.DEFAULT_PASSWORD})
    path = SAMPLE_PATHS.get(rule, rule)

    assert client.open(path, method=method).status_code == 405


def test_anonymous_login_redirect_keeps_the_requested_page(matrix_app):
    """Does the login redirect of a protected page carry `next` back to that page?"""
    response = matrix_app.test_client().get("/banking/transactions?type=debit")

    assert response.status_code == 302
    assert _location_path(response) == "/auth/login"
    assert "next=" in response.headers["Location"]
