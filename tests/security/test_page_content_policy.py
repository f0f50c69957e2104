"""Every GET route, as every role, with data on the pages: no inline script, inline style,
event-handler attribute, `javascript:` URL or resource from another origin (the strict
Content-Security-Policy of DESIGN.md section 5b would block them, so each would be a broken page
or a hole; OWASP ASVS 4.0.3 14.4.3, 5.3.3), and every response carries the security headers and,
once signed in, `Cache-Control: no-store` (ASVS 8.2.1).

The routes come from the app's url_map, ids filled in with real objects, so a new page is
checked as soon as it exists; a route with an argument this module can't fill fails the test."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from app.extensions import db
from app.models import SupportTicket
from tests.factories import issued_key
from tests.integration.test_headers_and_errors import assert_security_headers, inline_code_in

ROLES = ("anonymous", "customer", "support", "auditor", "admin")
# Query strings that put filters, errors and pagination on the list pages.
EXTRA_PAGES = (
    "/banking/transactions?type=debit&min_amount=1&date_from=2000-01-01",
    "/banking/transactions?min_amount=abc",
    "/audit/logs?action=LOGIN_SUCCESS",
    "/audit/logs?date_from=not-a-date",
    "/audit/transactions?account_number=0000",
    "/banking/admin/accounts?account_number=12",
    "/support/tickets?status=open",
)
# Tags whose URL attribute makes the browser fetch something.
FETCHING = {"script": "src", "img": "src", "iframe": "src", "frame": "src", "embed": "src", "object": "data",
            "source": "src", "audio": "src", "video": "src", "track": "src", "link": "href",
            "form": "action", "input": "formaction", "button": "formaction", "base": "href"}


class FetchFinder(HTMLParser):
    """Every URL a page makes the browser load or submit to (scripts, styles, images, frames,
    form targets)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        attribute = FETCHING.get(tag)
        for name, value in attrs:
            if name == attribute and value is not None:
                self.urls.append((tag, value))
            if name == "srcset" and value:
                self.urls += [(tag, part.strip().split(" ")[0]) for part in value.split(",")]


def off_site(urls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The URLs that resolve to another origin than the app's (http://localhost). A `data:`
    image is not off-site (the CSP allows `img-src data:`; the QR code of two-step sign-in is one)."""
    base = "http://localhost/some/page"
    return [(tag, url) for tag, url in urls
            if not (tag == "img" and url.startswith("data:image/"))
            and (urlsplit(urljoin(base, url)).netloc != "localhost" or urlsplit(urljoin(base, url)).scheme != "http")]


def test_fetch_finder_sees_foreign_resources_and_forms():
    """Does the checker itself catch each kind of foreign fetch (so a clean result means something)?"""
    html = ('<img src="https://evil.example/x.png"><iframe src="//evil.example"></iframe>'
            '<link rel="icon" href="http://evil.example/i.ico"><form action="https://evil.example/steal"></form>'
            '<button formaction="https:evil.example">x</button><img src="/static/ok.png"><form action=""></form>'
            '<img src="data:image/svg+xml,%3Csvg%3E"><iframe src="data:text/html,x"></iframe>')
    finder = FetchFinder()
    finder.feed(html)
    assert [tag for tag, _ in off_site(finder.urls)] == ["img", "iframe", "link", "form", "button", "iframe"]


@pytest.fixture
def populated(app, client, auth, customer, other_customer, admin, support_user, auditor, make_account):
    """Accounts (one frozen), transfers both ways, a ticket with a note: every list and detail page
    has rows. Returns the principals by role name and the ids to put in URLs."""
    mine = make_account(customer, "2500.00")
    make_account(customer, "10.00", type="savings", status="frozen")
    theirs = make_account(other_customer, "50.00")
    auth.login(customer.email)
    response = client.post("/banking/transfer/external", data={
        "source_account": mine.id, "target_account_number": theirs.account_number, "amount": "12.50",
        "description": "Rent <b>June</b>", "idempotency_key": issued_key(app, customer.id)})
    assert response.status_code == 302, response.get_data(as_text=True)
    assert client.post("/support/create", data={"subject": "Card <i>lost</i>", "description": "Help"}).status_code == 302
    auth.logout()
    with app.app_context():
        ticket_id = db.session.scalar(db.select(SupportTicket.id))
    auth.login(support_user.email)
    assert client.post(f"/support/tickets/{ticket_id}", data={"status": "in_progress", "note": "On it"}).status_code == 302
    auth.logout()
    return {"principals": {"customer": customer, "support": support_user, "auditor": auditor, "admin": admin},
            "ids": {"/banking/admin/users/<id:user_id>/edit": customer.id, "/support/tickets/<id:ticket_id>": ticket_id}}


def get_routes(app, ids: dict[str, int]) -> list[str]:
    """Every GET path of the app, with real ids filled in."""
    paths = []
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint.endswith("static"):
            continue
        if rule.arguments:
            assert rule.rule in ids, f"no id to check {rule.rule} with: add it to the `populated` fixture"
            paths.append(rule.rule.split("<", 1)[0] + str(ids[rule.rule]) + rule.rule.split(">", 1)[1])
        else:
            paths.append(rule.rule)
    return sorted(paths)


@pytest.mark.parametrize("role", ROLES)
def test_content_security_no_inline_code_or_foreign_resources_on_any_page(app, client, auth, populated, role):
    """Cross-site scripting defence in depth (CWE-79, ASVS 14.4.3): as this role, does every GET
    page (redirects followed, error pages included) carry the security headers, `no-store` once
    signed in, no inline script or style or event handler, and fetch or submit nothing off-site?"""
    if role != "anonymous":
        assert auth.login(populated["principals"][role].email).status_code == 302
    failures = []
    for path in [*get_routes(app, populated["ids"]), *EXTRA_PAGES]:
        response = client.get(path, follow_redirects=True)
        html = response.get_data(as_text=True)
        assert_security_headers(response)
        if role != "anonymous":
            assert "no-store" in response.headers.get("Cache-Control", ""), path
        finder = FetchFinder()
        finder.feed(html)
        problems = inline_code_in(html).problems + [f"off-site {tag}: {url}" for tag, url in off_site(finder.urls)]
        if problems:
            failures.append((path, response.status_code, problems))
    assert failures == []
    if role != "anonymous":
        assert client.get("/banking/dashboard").status_code == 200, "still signed in: every page was seen as the role"
