"""The layout's fixed links, built once per script root (app/navigation.py)."""

from __future__ import annotations

import re

import pytest
from flask import url_for

from app.navigation import LAYOUT_CACHE_KEY, bootstrap_asset, navigation_for

NAV_LINK = re.compile(r'<a class="nav-link[^"]*"\s*(?:aria-current="page")?\s*href="([^"]*)">([^<]*)</a>')


def _navbar(html: str) -> list[tuple[str, str]]:
    """(href, label) of the role's navbar links, in order."""
    navbar = html.split('<ul class="navbar-nav me-auto">', 1)[1].split("</ul>", 1)[0]
    return [(href, label.strip()) for href, label in NAV_LINK.findall(navbar)]


@pytest.mark.parametrize("role", ["customer", "support", "auditor", "admin"])
def test_each_roles_navbar_is_what_url_for_builds(app, client, auth, make_user, role):
    """Is each role's navbar, served from the cache, the links url_for gives for that role's
    endpoints, and only those (spec section 9: a role sees its own areas only)?"""
    user = make_user(role)
    auth.login(user.email)
    first = client.get("/banking/dashboard").get_data(as_text=True)
    second = client.get("/banking/dashboard").get_data(as_text=True)
    with app.test_request_context("/"):
        expected = [(url_for(endpoint), label) for label, endpoint in navigation_for(role)]
    assert expected and _navbar(first) == _navbar(second) == expected


def test_a_role_never_sees_another_roles_navbar(app, client, auth, make_user):
    """The cache is keyed by role: after an admin's page, a customer's has no admin links."""
    auth.login(make_user("admin").email)
    assert "/banking/admin/users" in client.get("/banking/dashboard").get_data(as_text=True)
    auth.logout()
    auth.login(make_user("customer").email)
    page = client.get("/banking/dashboard").get_data(as_text=True)
    assert "/banking/admin/users" not in page and "/banking/transfer/internal" in page


def test_links_follow_the_prefix_the_app_is_mounted_under(app, client, logged_in_customer):
    """The script root is part of the key: the same page mounted under /online links under
    /online, before and after a page served at the root."""
    plain = client.get("/banking/dashboard").get_data(as_text=True)
    mounted = client.get("/banking/dashboard", environ_overrides={"SCRIPT_NAME": "/online"}).get_data(as_text=True)
    again = client.get("/banking/dashboard").get_data(as_text=True)
    for page, prefix in ((plain, ""), (mounted, "/online"), (again, "")):
        assert f'href="{prefix}/static/css/main.css"' in page
        assert f'href="{prefix}/bootstrap/static/css/bootstrap.min.css"' in page
        assert f'action="{prefix}/auth/logout"' in page
        assert _navbar(page) and all(href.startswith(f"{prefix}/banking/") or href.startswith(f"{prefix}/support/")
                                     for href, _ in _navbar(page))


def test_the_layout_links_are_built_once_and_are_bootstrap_flasks_own(app, client, logged_in_customer):
    """Is a second page's layout served from the cache (hits, no misses), with the stylesheet
    and scripts Bootstrap-Flask's load_css/load_js give, and a CSRF token of its own?"""
    cache = app.extensions[LAYOUT_CACHE_KEY]
    client.get("/banking/dashboard")
    before = cache.cache_info()
    page = client.get("/banking/dashboard").get_data(as_text=True)
    after = cache.cache_info()
    assert after.misses == before.misses and after.hits > before.hits
    with app.test_request_context("/"):
        bootstrap = app.extensions["bootstrap"]
        assert str(bootstrap.load_css()) in page and str(bootstrap.load_js()) in page
        assert str(bootstrap_asset("css")) == str(bootstrap.load_css())
        with pytest.raises(ValueError):
            bootstrap_asset("fonts")
    assert re.search(r'<input type="hidden" name="csrf_token" value="[^"]+">', page)


def _active(html: str) -> list[str]:
    """Labels of the navbar links marked as the current page."""
    navbar = html.split('<ul class="navbar-nav me-auto">', 1)[1].split("</ul>", 1)[0]
    return [label.strip() for label in
            re.findall(r'<a class="nav-link active"\s*aria-current="page"\s*href="[^"]*">([^<]*)</a>', navbar)]


def test_the_menu_marks_the_page_shown_and_only_it(client, logged_in_customer):
    """The current page is part of the menu's key: each page marks its own link, and a page
    outside the menu marks none, whichever page's menu was rendered before."""
    for url, expected in (("/banking/dashboard", ["Dashboard"]), ("/banking/transactions", ["My transactions"]),
                          ("/auth/profile", []), ("/banking/dashboard", ["Dashboard"])):
        assert _active(client.get(url).get_data(as_text=True)) == expected, url


def test_pages_outside_the_menu_share_one_rendering(app, client, logged_in_customer):
    """Pages the menu doesn't link to share one cached menu (none active), so the cache holds
    at most one menu per role and menu entry, whatever pages are visited."""
    cache = app.extensions[LAYOUT_CACHE_KEY]
    client.get("/auth/profile")
    before = cache.cache_info()
    page = client.get("/auth/change-password").get_data(as_text=True)
    assert _navbar(page) and _active(page) == []
    assert cache.cache_info().misses == before.misses
