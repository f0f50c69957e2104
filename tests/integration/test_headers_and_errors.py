"""Security headers on every response, plain error pages, and pages that the Content-Security-Policy
can protect: no inline script or style anywhere (DESIGN.md sections 5b and 6)."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from sqlalchemy.exc import OperationalError

from tests.conftest import build_app
from tests.factories import DEFAULT_PASSWORD

EXPECTED_CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                "frame-ancestors 'none'; form-action 'self'")
EXPECTED_HEADERS = {
    "Content-Security-Policy": EXPECTED_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Powerful features a bank page never needs; the Permissions-Policy must switch them off.
DISABLED_FEATURES = ("camera", "microphone", "geolocation", "payment", "usb")
INTERNAL_DETAIL = "internal detail that must stay on the server 0xDEADBEEF"
STRONG_SECRET = "p" * 32


def assert_security_headers(response, *, production: bool = False) -> None:
    for name, value in EXPECTED_HEADERS.items():
        assert response.headers.get(name) == value, name
    policy = response.headers.get("Permissions-Policy", "")
    for feature in DISABLED_FEATURES:
        assert f"{feature}=()" in policy, feature
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe" not in csp
    if production:
        assert "max-age=" in response.headers.get("Strict-Transport-Security", "")
    else:
        assert "Strict-Transport-Security" not in response.headers


def assert_plain_error_page(response, status: int) -> None:
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert str(status) in page
    for leak in ("Traceback", "File \"", "werkzeug", "sqlalchemy", INTERNAL_DETAIL):
        assert leak not in page, leak


@pytest.fixture
def failing_routes(app):
    """Test-only routes that raise, registered before the app's first request."""

    def boom():
        raise RuntimeError(INTERNAL_DETAIL)

    def database_down():
        raise OperationalError("SELECT 1", {}, Exception(INTERNAL_DETAIL))

    app.add_url_rule("/test-only/boom", "test_boom", boom)
    app.add_url_rule("/test-only/database-down", "test_database_down", database_down)
    return app


def sign_in(client, email):
    response = client.post("/auth/login", data={"email": email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302
    return response


# --- headers on normal pages --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register"])
def test_anonymous_pages_send_every_security_header(client, path):
    """Do the public pages carry the exact CSP and the other section 5b headers, without HSTS?"""
    response = client.get(path)
    assert response.status_code == 200
    assert_security_headers(response)


def test_redirects_send_every_security_header(client):
    """Do redirects (here `/` for an anonymous user) carry the headers too?"""
    response = client.get("/")
    assert response.status_code == 302
    assert_security_headers(response)


def test_signed_in_pages_send_headers_and_no_store(client, logged_in_customer):
    """Do signed-in pages carry the headers and `Cache-Control: no-store`?"""
    for path in ("/banking/dashboard", "/auth/profile", "/auth/change-password", "/auth/logout"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert_security_headers(response)
        assert "no-store" in response.headers.get("Cache-Control", ""), path


def test_login_response_is_not_cached(client, customer):
    """Is the sign-in answer (which sets the session cookie) marked no-store?"""
    response = sign_in(client, customer.email)
    assert "no-store" in response.headers["Cache-Control"]
    assert_security_headers(response)


def test_static_files_carry_the_security_headers(client):
    """Do static files (Bootstrap from the installed package) get nosniff and the CSP as well?"""
    response = client.get("/bootstrap/static/css/bootstrap.min.css")
    assert response.status_code == 200
    assert_security_headers(response)
    response.close()


def test_production_adds_strict_transport_security(database_url):
    """In production, is HSTS sent, alongside all the other headers?"""
    app = build_app(database_url, APP_ENV="production", SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=STRONG_SECRET,
                    MFA_ENCRYPTION_KEY=STRONG_SECRET)
    response = app.test_client().get("/auth/login", base_url="https://bank.example")
    assert response.status_code == 200
    assert_security_headers(response, production=True)


# --- error pages --------------------------------------------------------------------------


def test_404_page_is_plain_and_carries_the_headers(client):
    """Does an unknown path get a plain 404 page with every header and no-store?"""
    response = client.get("/no/such/page")
    assert_plain_error_page(response, 404)
    assert_security_headers(response)
    assert "no-store" in response.headers["Cache-Control"]


def test_missing_static_file_is_a_plain_404_with_no_store(client):
    """Is a missing file under /static/ answered like any unknown page: plain 404, every
    header, and no-store (only files actually served may be cached)?"""
    response = client.get("/static/no-such-file.css")
    assert_plain_error_page(response, 404)
    assert_security_headers(response)
    assert "no-store" in response.headers["Cache-Control"]


def test_405_page_is_plain_and_carries_the_headers(client):
    """Does a wrong method get a plain 405 page with every header, and the `Allow` header
    naming the methods the path accepts (RFC 9110 §15.5.6)?"""
    response = client.delete("/auth/login")
    assert_plain_error_page(response, 405)
    assert_security_headers(response)
    assert sorted(method.strip() for method in response.headers["Allow"].split(",")) == ["GET", "HEAD", "OPTIONS", "POST"]
    assert response.headers["Content-Type"].startswith("text/html")


def test_403_page_is_plain_and_carries_the_headers(client, support_user):
    """Does a role refusal get a plain 403 page with every header?"""
    sign_in(client, support_user.email)
    response = client.get("/banking/open-account")
    assert_plain_error_page(response, 403)
    assert_security_headers(response)
    assert "no-store" in response.headers["Cache-Control"]


def test_400_csrf_page_is_plain_and_carries_the_headers(database_url):
    """Does a CSRF failure get a plain 400 page with every header?"""
    app = build_app(database_url, WTF_CSRF_ENABLED=True)
    response = app.test_client().post("/auth/login", data={"email": "a@example.com", "password": "x"})
    assert_plain_error_page(response, 400)
    assert_security_headers(response)


def test_400_form_error_page_carries_the_headers(client):
    """Does a form re-rendered with errors (400) carry the headers?"""
    response = client.post("/auth/register", data={"full_name": ""})
    assert response.status_code == 400
    assert_security_headers(response)


def test_413_page_for_an_oversized_body_is_plain_and_carries_the_headers(client):
    """Is a POST body above MAX_CONTENT_LENGTH refused with a plain 413 page and the headers?"""
    response = client.post("/auth/login", data={"email": "a@example.com", "password": "x" * (100 * 1024)})
    assert_plain_error_page(response, 413)
    assert_security_headers(response)


def test_429_throttled_login_carries_the_headers(client, customer):
    """Does the throttled sign-in answer (429) carry the headers?"""
    for _ in range(5):
        client.post("/auth/login", data={"email": customer.email, "password": "wrong password here"})
    response = client.post("/auth/login", data={"email": customer.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 429
    assert_security_headers(response)


def test_500_page_hides_the_exception_and_carries_the_headers(failing_routes, client):
    """Does an unexpected exception give a plain 500 page without traceback or message?"""
    response = client.get("/test-only/boom")
    assert_plain_error_page(response, 500)
    assert_security_headers(response)
    assert "no-store" in response.headers["Cache-Control"]


def test_database_failure_is_a_plain_503(failing_routes, client):
    """Does an unreachable database give a plain 503 page, never a 500 with SQL in it?"""
    response = client.get("/test-only/database-down")
    assert_plain_error_page(response, 503)
    assert_security_headers(response)
    assert "SELECT 1" not in response.get_data(as_text=True)


# --- no inline script or style ------------------------------------------------------------


class InlineCodeFinder(HTMLParser):
    """Collects what a strict CSP would block: inline <script>, <style>, style= and on*= attributes,
    and any script or stylesheet not served by this site."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.resources: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, _value in attrs:
            if name == "style":
                self.problems.append(f"style= on <{tag}>")
            if name.startswith("on"):
                self.problems.append(f"{name}= on <{tag}>")
        if tag == "style":
            self.problems.append("<style> element")
        if tag == "script":
            if attributes.get("src"):
                self.resources.append(attributes["src"])
            else:
                self._in_inline_script = True
                self.problems.append("inline <script>")
        if tag == "link" and "stylesheet" in (attributes.get("rel") or ""):
            self.resources.append(attributes.get("href") or "")
        for name in ("href", "src", "action", "formaction"):
            if (attributes.get(name) or "").strip().lower().startswith("javascript:"):
                self.problems.append(f"javascript: URL in {name}")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_inline_script = False


def inline_code_in(html: str) -> InlineCodeFinder:
    finder = InlineCodeFinder()
    finder.feed(html)
    finder.close()
    return finder


def test_inline_code_finder_catches_what_it_must():
    """Does the scanner itself notice each forbidden construct (so a clean result means something)?"""
    html = ('<div style="color:red" onclick="x()"></div><style>p{}</style><script>alert(1)</script>'
            '<a href="javascript:alert(1)">x</a><script src="https://cdn.example/x.js"></script>')
    finder = inline_code_in(html)
    assert len(finder.problems) == 5
    assert finder.resources == ["https://cdn.example/x.js"]


def get_paths(app):
    return sorted(
        rule.rule for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and not rule.arguments and not rule.endpoint.endswith("static")
    )


@pytest.fixture
def customer_with_history(app, client, customer, other_customer, make_account):
    """A signed-in customer with two accounts (one frozen), a transfer in the ledger, and a
    counterparty, so lists, selects and masked numbers are all rendered."""
    mine = make_account(customer, "2500.00")
    make_account(customer, "10.00", type="savings", status="frozen")
    theirs = make_account(other_customer, "50.00")
    sign_in(client, customer.email)
    page = client.get("/banking/transfer/external").get_data(as_text=True)
    key = page.split('name="idempotency_key" type="hidden" value="', 1)[1].split('"', 1)[0]
    response = client.post("/banking/transfer/external", data={
        "source_account": mine.id, "target_account_number": theirs.account_number, "amount": "1234.56",
        "description": "Rent <b>June</b>", "idempotency_key": key})
    assert response.status_code == 302, response.get_data(as_text=True)
    return customer


def check_page(client, path, finder_results):
    response = client.get(path, follow_redirects=True)
    html = response.get_data(as_text=True)
    finder = inline_code_in(html)
    finder_results[path] = (response.status_code, finder.problems, finder.resources)


def test_customer_pages_contain_no_inline_script_or_style(app, client, customer_with_history):
    """Does every GET page a customer can reach (from the app's url_map, with data on it) avoid
    inline <script>, <style>, style= and on*= attributes, and load scripts and styles only from
    this site?"""
    results: dict[str, tuple] = {}
    for path in get_paths(app):
        if path == "/auth/logout":
            continue  # GET is only a confirmation page; checked below without logging out
        check_page(client, path, results)
    check_page(client, "/auth/logout", results)
    check_page(client, "/banking/transactions?type=debit&min_amount=abc", results)
    assert results["/banking/dashboard"][0] == 200
    assert results["/banking/transactions"][0] == 200
    resources = set()
    for path, (_status, problems, page_resources) in results.items():
        assert problems == [], f"{path}: {problems}"
        resources.update(page_resources)
    for resource in sorted(resources):
        assert resource.startswith("/") and not resource.startswith("//"), resource
        static = client.get(resource)
        assert static.status_code == 200, resource
        static.close()


def test_anonymous_and_error_pages_contain_no_inline_script_or_style(client, failing_routes):
    """Do the public pages, forms with errors and every error page avoid inline script and style?"""
    pages = [client.get("/auth/login"), client.get("/auth/register"), client.get("/no/such/page"),
             client.delete("/auth/login"), client.get("/test-only/boom"),
             client.post("/auth/register", data={"full_name": "", "email": "bad"}),
             client.post("/auth/login", data={"email": "nobody@example.com", "password": "wrong one"})]
    for response in pages:
        finder = inline_code_in(response.get_data(as_text=True))
        assert finder.problems == [], (response.request.path, finder.problems)


def test_user_supplied_text_is_escaped(client, make_user):
    """Is a full name with HTML rendered as text, not markup?"""
    user = make_user(full_name='<script>alert("x")</script>')
    sign_in(client, user.email)
    html = client.get("/auth/profile").get_data(as_text=True)
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;" in html
    assert inline_code_in(html).problems == []
