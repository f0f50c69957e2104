"""Response content types (OWASP ASVS 4.0.3 14.4.1, 14.4.2): every HTML response names its
character set, so a browser never guesses one (UTF-7 tricks), and the bank serves no API
responses that a browser could be made to render: every page, redirect and error is HTML."""

from __future__ import annotations

import re

import pytest

from tests.security.test_page_content_policy import EXTRA_PAGES, get_routes, populated  # noqa: F401 (fixture)


@pytest.mark.parametrize("role", ["anonymous", "customer", "admin"])
def test_content_type_sniffing_every_response_declares_html_and_utf8(app, client, auth, populated, role):
    """Content sniffing (CWE-430, ASVS 14.4.1): does every GET route (redirects followed, error
    pages included) answer `text/html; charset=utf-8` and `nosniff`?"""
    if role != "anonymous":
        auth.login(populated["principals"][role].email)
    wrong = {}
    for path in [*get_routes(app, populated["ids"]), *EXTRA_PAGES, "/no/such/page"]:
        if path.startswith(("/static/", "/bootstrap/static/")):
            continue
        response = client.get(path, follow_redirects=True)
        if response.headers.get("Content-Type") != "text/html; charset=utf-8" or \
                response.headers.get("X-Content-Type-Options") != "nosniff":
            wrong[path] = (response.status_code, response.headers.get("Content-Type"))
    assert wrong == {}


def test_content_type_sniffing_static_files_have_their_own_types(client):
    """Are the stylesheets and scripts the pages load served with their real types (and nosniff),
    so a browser never runs a file as something else?"""
    page = client.get("/auth/login").get_data(as_text=True)
    stylesheets = re.findall(r'<link[^>]+rel="stylesheet"[^>]+href="([^"]+)"', page)
    scripts = re.findall(r'<script[^>]+src="([^"]+)"', page)
    assert stylesheets and scripts
    for paths, expected in ((stylesheets, "text/css"), (scripts, "text/javascript")):
        for path in paths:
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.mimetype == expected and response.headers["X-Content-Type-Options"] == "nosniff", path
            response.close()
