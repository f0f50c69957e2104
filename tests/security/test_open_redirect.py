"""Attack suite: open redirects (CWE-601) through `?next=` on /auth/login and through every other
place the app builds a redirect or a link from request input.

A browser is the judge: each Location (and each link of the pages involved) is resolved the way
a browser resolves it (attack_support.resolve_like_a_browser), and must stay on this site.
DESIGN.md section 5: "success → redirect to `next` (a local path only) or the dashboard".
"""

from __future__ import annotations

import ast
import html
import inspect
import itertools
from pathlib import Path

import pytest

from app.extensions import db
from app.models import LoginAttempt
from tests.factories import DEFAULT_PASSWORD
from tests.security.attack_support import (
    assert_stays_on_this_site,
    enrol_second_factor,
    is_signed_in,
    new_client,
    populated_app,
    route_app,
    sign_in,
    urls_in,
)

APP_PACKAGE = Path(__file__).resolve().parents[2] / "app"

# The value of `next` as the app receives it (sent percent-encoded, so it arrives exactly so).
NEXT_PAYLOADS = {
    "scheme-relative": "//evil.example",
    "slash backslash": "/\\evil.example",
    "double backslash": "\\\\evil.example",
    "scheme without slashes": "https:evil.example",
    "absolute https": "https://evil.example",
    "absolute with a local-looking path": "https://evil.example/banking/dashboard",
    "userinfo": "//localhost@evil.example/",
    "javascript": "javascript:alert(1)",
    "javascript upper-case after a space": " JavaScript:alert(1)",
    "data URL": "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "slash then encoded slashes": "/%2F%2Fevil.example",
    "encoded slashes": "%2F%2Fevil.example",
    "tab between slashes": "/\t/evil.example",
    "newline between slashes": "/\n/evil.example",
    "header injection": "/\r\nLocation: https://evil.example",
    "null byte between slashes": "/\x00/evil.example",
    "http with one slash": "http:/evil.example",
    "http with backslashes": "http:\\\\evil.example",
    "triple slash": "///evil.example",
    "leading space": " //evil.example",
    "fullwidth solidus": "\uff0f\uff0fevil.example",
    "slash then fullwidth solidus": "/\uff0fevil.example",
    "division slash": "/\u2215evil.example",
    "fraction slash": "/\u2044evil.example",
    "fullwidth reverse solidus": "/\uff3cevil.example",
    "small reverse solidus": "/\ufe68evil.example",
}

# The query string as an attacker writes it into a link (sent as is; the server decodes it).
RAW_NEXT_QUERIES = {
    "encoded scheme-relative": "next=%2F%2Fevil.example",
    "slash then encoded slashes": "next=/%2F%2Fevil.example",
    "encoded slash backslash": "next=%2F%5Cevil.example",
    "encoded tab": "next=/%09/evil.example",
    "encoded newline": "next=/%0A/evil.example",
    "encoded null": "next=/%00/evil.example",
    "encoded absolute URL": "next=https%3A%2F%2Fevil.example",
    "double-encoded slashes": "next=%252F%252Fevil.example",
    "plus as a leading space": "next=+//evil.example",
    "evil next first of two": "next=//evil.example&next=/banking/dashboard",
    "encoded fullwidth solidus": "next=/%EF%BC%8Fevil.example",
}

# Keyword arguments that Flask's url_for takes for itself: a query key of this name that reaches
# url_for(..., **request.args) changes the URL built (or breaks the build) instead of being a filter.
URL_FOR_RESERVED = {
    "endpoint": "endpoint=x",
    "_method": "_method=POST",
    "_external and _scheme": "_external=1&_scheme=https",
    "_scheme alone": "_scheme=https",
    "_anchor": "_anchor=%0Aevil",
}

# Where the app redirects to a target built from request input (module:function), and so what
# this module must attack; test_every_input_driven_redirect_is_attacked keeps the list true.
INPUT_DRIVEN_REDIRECTS = {"auth/routes.py:_signed_in", "banking/routes.py:transactions"}

_unknown_emails = itertools.count(1)


@pytest.fixture(scope="module")
def world(test_backend):
    with populated_app(test_backend) as populated:
        yield populated


def _login(client, email, password=DEFAULT_PASSWORD, *, next_value=None, raw_query=None):
    if raw_query is not None:
        return client.post(f"/auth/login?{raw_query}", data={"email": email, "password": password})
    return client.post("/auth/login", query_string={"next": next_value}, data={"email": email, "password": password})


def _arrange_failures(app, email: str, ip: str, count: int) -> None:
    """Record `count` failed sign-ins for `email` from `ip` (set-up only: the throttle itself is
    proven in tests/integration/test_auth.py)."""
    with app.app_context():
        db.session.add_all(LoginAttempt(email=email, ip_address=ip) for _ in range(count))
        db.session.commit()


def _assert_no_link_off_site(page: str, what: str) -> None:
    for tag, attribute, url in urls_in(page):
        assert_stays_on_this_site(url, base="http://localhost/auth/login", what=f"{what}: <{tag} {attribute}>")


@pytest.mark.parametrize("payload", NEXT_PAYLOADS.values(), ids=NEXT_PAYLOADS.keys())
def test_login_next_never_leads_off_site(world, payload):
    """Open redirect (CWE-601): after a successful sign-in with this `next`, and on a signed-in
    visit to the login page with it, does the browser stay on this site (never the attacker's
    host, never a javascript: or data: URL)?"""
    client = new_client(world.app)
    response = _login(client, world.users["customer"].email, next_value=payload)
    assert response.status_code == 302
    assert_stays_on_this_site(response.headers["Location"], what="sign-in redirect")

    again = client.get("/auth/login", query_string={"next": payload})
    assert again.status_code == 302
    assert_stays_on_this_site(again.headers["Location"], what="signed-in visit redirect")


# The code step only carries `next` (vetted at the password step), so a sample of each kind will do.
TWO_STEP_PAYLOADS = {name: NEXT_PAYLOADS[name] for name in (
    "scheme-relative", "slash backslash", "absolute https", "javascript", "tab between slashes", "triple slash",
    "userinfo", "slash then fullwidth solidus")}


@pytest.mark.parametrize("payload", TWO_STEP_PAYLOADS.values(), ids=TWO_STEP_PAYLOADS.keys())
def test_next_carried_through_two_step_sign_in_never_leads_off_site(world, payload):
    """Open redirect (CWE-601) across two-step sign-in: for a user with an authenticator, `next`
    waits in the session while the code is asked for. With this `next` on the login link, and
    again on the code step's own URL, do both redirects stay on this site?"""
    enrolled = enrol_second_factor(world)
    client = new_client(world.app)
    password_step = _login(client, enrolled.email, next_value=payload)
    assert password_step.status_code == 302
    assert assert_stays_on_this_site(password_step.headers["Location"]).path == "/auth/mfa"

    code_step = client.post("/auth/mfa", query_string={"next": payload}, data={"code": enrolled.next_code})
    assert code_step.status_code == 302
    assert_stays_on_this_site(code_step.headers["Location"], what="redirect after the code")
    assert is_signed_in(client), "the code step did not complete the sign-in: the case proves nothing"


@pytest.mark.parametrize("raw_query", RAW_NEXT_QUERIES.values(), ids=RAW_NEXT_QUERIES.keys())
def test_login_next_written_encoded_into_the_link_never_leads_off_site(world, raw_query):
    """Open redirect (CWE-601): when `next` is percent-encoded (once, twice, or repeated) in the
    link the attacker sends, does the sign-in still redirect only within this site?"""
    response = _login(new_client(world.app), world.users["customer"].email, raw_query=raw_query)
    assert response.status_code == 302
    assert_stays_on_this_site(response.headers["Location"], what="sign-in redirect")


@pytest.mark.parametrize("outcome", ["shown", "refused", "throttled"])
@pytest.mark.parametrize("payload", NEXT_PAYLOADS.values(), ids=NEXT_PAYLOADS.keys())
def test_login_page_never_turns_next_into_a_link(world, payload, outcome):
    """Open redirect (CWE-601) by reflection: when the login page is shown with this `next`,
    re-rendered after a wrong password (400) or refused by the throttle (429), does no link,
    form action or resource of the page lead off this site, and is `next` not echoed at all?"""
    client = new_client(world.app)
    email = f"nobody-{next(_unknown_emails)}@example.com"
    if outcome == "shown":
        response, status = client.get("/auth/login", query_string={"next": payload}), 200
    elif outcome == "refused":
        response, status = _login(client, email, "wrong password guess", next_value=payload), 400
    else:
        _arrange_failures(world.app, email, client.environ_base["REMOTE_ADDR"], 5)
        response, status = _login(client, email, "wrong password guess", next_value=payload), 429
    assert response.status_code == status
    page = response.get_data(as_text=True)
    _assert_no_link_off_site(page, f"login page ({outcome})")
    if payload.strip() not in ("", "/"):
        assert payload.strip() not in html.unescape(page)


def _staff_transactions_redirect_problems(world, query: str) -> list[str]:
    problems = []
    for role in ("admin", "auditor"):
        response = sign_in(world, role).get(f"/banking/transactions?{query}")
        if response.status_code != 302:
            problems.append(f"{role}: status {response.status_code}")
            continue
        location = response.headers["Location"]
        try:
            target = assert_stays_on_this_site(location, what="redirect")
        except AssertionError as exc:
            problems.append(f"{role}: {exc}")
            continue
        if target.path != "/audit/transactions":
            problems.append(f"{role}: redirected to {location!r}")
    return problems


def test_staff_transactions_redirect_keeps_the_filters(world):
    """Open redirect (CWE-601), the control case: does /banking/transactions send admins and
    auditors to /audit/transactions on this site, with their filters kept?"""
    for role in ("admin", "auditor"):
        response = sign_in(world, role).get("/banking/transactions?type=debit&min_amount=1.00")
        assert response.status_code == 302
        target = assert_stays_on_this_site(response.headers["Location"], what="redirect")
        assert (target.path, target.query) == ("/audit/transactions", "type=debit&min_amount=1.00")


@pytest.mark.parametrize("query", URL_FOR_RESERVED.values(), ids=URL_FOR_RESERVED.keys())
def test_staff_transactions_redirect_ignores_url_for_arguments_in_the_query(world, query):
    """Open redirect (CWE-601) / unvalidated input (CWE-20): the admin's and auditor's redirect
    from /banking/transactions carries the filters over to /audit/transactions. Can a query key
    named like one of url_for's own arguments (`endpoint`, `_method`, `_external`, `_scheme`,
    `_anchor`) change the target's scheme, host or path, or break the redirect with a 500?

    Regression for a finding of this suite (at 18268ab the view did
    `redirect(url_for("audit.transactions", **request.args))`: `?endpoint=x` and `?_method=POST`
    were 500s, `?_scheme=https` chose the redirect's scheme).
    """
    problems = _staff_transactions_redirect_problems(world, query)
    assert not problems, f"/banking/transactions?{query}: {problems}"


# Pages with a pager, the principal who sees them, and a query that makes the pager show a link
# without needing a full page of rows (`page=2` always links back to page 1; `before=1` links to
# the newer rows).
PAGERS = {
    "/banking/transactions": ("customer", "page=2"),
    "/support/my-tickets": ("customer", "page=2"),
    "/support/tickets": ("support", "page=2"),
    "/banking/admin/users": ("admin", "page=2"),
    "/banking/admin/accounts": ("admin", "page=2"),
    "/audit/logs": ("auditor", "before=1"),
    "/audit/transactions": ("auditor", "before=1"),
}


def _paginated_rules() -> set[str]:
    application = route_app()
    found = set()
    for rule in application.url_map.iter_rules():
        source = inspect.getsource(application.view_functions[rule.endpoint]) if "static" not in rule.endpoint else ""
        if "page_number(" in source or "cursor(" in source:
            found.add(rule.rule)
    return found


def test_every_paginated_page_is_attacked():
    """Open redirect (CWE-601), coverage: does PAGERS name every page whose view reads `page` or
    `before` (and so builds pager links from the query), so a new list is attacked too?"""
    assert set(PAGERS) == _paginated_rules()


@pytest.mark.parametrize("path", PAGERS)
def test_pager_links_stay_on_this_page(world, path):
    """Open redirect (CWE-601) by reflection / unvalidated input (CWE-20): the pagers keep the
    current filters in their links. With a query key named like one of url_for's own arguments,
    or the page's path asked for with a doubled leading slash, does every link still lead to
    this same site with a relative URL, and does the page still answer (no 500)?

    Regression for a finding of this suite (at 18268ab the pagers used
    `url_for(request.endpoint, **dict(request.args, ...))`: `endpoint=x` and `_method=POST`
    made every paginated page a 500, `_scheme=https` made its links absolute).
    """
    role, pager_query = PAGERS[path]
    client = sign_in(world, role)
    control = client.get(f"{path}?{pager_query}")
    assert control.status_code == 200
    assert 'class="page-link"' in control.get_data(as_text=True), "the pager shows no link: the case proves nothing"

    problems = []
    attempts = {name: client.get(f"{path}?{pager_query}&{query}") for name, query in URL_FOR_RESERVED.items()}
    attempts["doubled leading slash"] = client.get(path, environ_overrides={"PATH_INFO": f"/{path}",
                                                                            "QUERY_STRING": pager_query})
    for name, response in attempts.items():
        if response.status_code != 200:
            problems.append(f"{name}: status {response.status_code}")
            continue
        for tag, attribute, url in urls_in(response.get_data(as_text=True)):
            try:
                assert_stays_on_this_site(url, base=f"http://localhost{path}", what="link")
            except AssertionError as exc:
                problems.append(f"{name}: {exc}")
                continue
            if tag == "a" and url.startswith(("http:", "https:", "//")):
                problems.append(f"{name}: absolute link {url!r} built from the query")
    assert not problems, f"{path}: {problems}"


def _redirect_sites() -> set[str]:
    """module:function of every redirect(...) in app/ whose target is not a url_for of constants
    (i.e. is built from something the request may carry)."""
    found = set()
    for path in APP_PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "redirect"):
                    continue
                target = node.args[0] if node.args else None
                built_from_constants = (
                    isinstance(target, ast.Call) and getattr(target.func, "id", None) == "url_for"
                    and all(isinstance(arg, ast.Constant) for arg in target.args)
                    and "request" not in ast.unparse(target)
                    and all(keyword.arg is not None for keyword in target.keywords)
                )
                if not built_from_constants:
                    found.add(f"{path.relative_to(APP_PACKAGE).as_posix()}:{function.name}")
    return found


def test_every_input_driven_redirect_is_attacked():
    """Open redirect (CWE-601): is every redirect whose target comes from the request (not a
    url_for of constants) one this module attacks, so a new one can't slip in unexamined?"""
    assert _redirect_sites() == INPUT_DRIVEN_REDIRECTS
