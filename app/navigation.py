"""The navbar links each role sees (spec section 9), limited to routes that exist, and the other
fixed links of the layout, built once per script root instead of on every page.

Every page's layout carries about fifteen links that never change while the app runs: the
navbar's, the stylesheet and the scripts (Bootstrap-Flask's `load_css`/`load_js`), the favicon.
Building each with `url_for` on every request cost about a twentieth of a list page's CPU, so
each app keeps them in a small LRU cache keyed by what they depend on: the endpoint, its
arguments (constants of the templates) and the request's script root (the prefix the app is
mounted under). The navbar's menu of links is kept rendered the same way, keyed by the role,
the menu's entry for the current page (marked active; None on a page not in the menu) and the
script root: building and rendering its links was another twentieth of a page. Nothing per user
or per session is kept: the logout form's CSRF token and the user's name are rendered on every
page as before.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, NamedTuple

from flask import Flask, current_app, request, url_for
from markupsafe import Markup

NAVIGATION: dict[str, tuple[tuple[str, str], ...]] = {
    "customer": (
        ("Dashboard", "banking.dashboard"),
        ("Open account", "banking.open_account"),
        ("Transfer between my accounts", "banking.transfer_internal"),
        ("Transfer to another account", "banking.transfer_external"),
        ("My transactions", "banking.transactions"),
        ("Support ticket", "support.create_ticket"),
        ("My tickets", "support.my_tickets"),
    ),
    "support": (
        ("Dashboard", "banking.dashboard"),
        ("Support tickets", "support.tickets"),
    ),
    "auditor": (
        ("Dashboard", "banking.dashboard"),
        ("Audit logs", "audit.logs"),
        ("Transactions", "audit.transactions"),
    ),
    "admin": (
        ("Dashboard", "banking.dashboard"),
        ("Users", "banking.admin_users"),
        ("Accounts", "banking.admin_accounts"),
        ("Open account", "banking.open_account"),
        ("Transfers", "banking.transfer_internal"),
        ("External transfer", "banking.transfer_external"),
        ("Tickets", "support.tickets"),
        ("Audit logs", "audit.logs"),
        ("Transactions", "audit.transactions"),
    ),
}

LAYOUT_CACHE_KEY = "layout_links"
# The layout's links and menus x script roots: under a hundred entries per script root (four
# roles' menus, each with one variant per menu entry plus one for every other page).
LAYOUT_CACHE_SIZE = 256
# The template of the navbar's menu (variables: `links`, NavLinks, and `current`, an endpoint).
MENU_TEMPLATE = "_navigation_menu.html"
# Per role, the endpoints its menu links to: any other page shows the menu with none active.
MENU_ENDPOINTS: dict[str, frozenset[str]] = {
    role: frozenset(endpoint for _, endpoint in links) for role, links in NAVIGATION.items()
}


class NavLink(NamedTuple):
    """One navbar link: its text, the endpoint it opens (to mark the current page) and its URL."""

    label: str
    endpoint: str
    href: str


def navigation_for(role: str) -> list[tuple[str, str]]:
    """(label, endpoint) pairs for `role`, leaving out endpoints this app does not serve yet."""
    served = current_app.view_functions
    return [(label, endpoint) for label, endpoint in NAVIGATION.get(role, ()) if endpoint in served]


def _build(kind: str, name: str, arguments: tuple, script_root: str) -> object:
    """A layout item, built in the current request: kind "url" (url_for(name, **arguments)),
    "menu" (MENU_TEMPLATE for role `name`, arguments `(("current", endpoint),)`) or "asset"
    (Bootstrap-Flask's load_css or load_js). `script_root` is part of the cache key only:
    url_for reads it from the request."""
    if kind == "url":
        return url_for(name, **dict(arguments))
    if kind == "menu":
        # Rendered by Jinja with autoescaping; the markup Jinja returns is kept as it is.
        return current_app.jinja_env.get_template(MENU_TEMPLATE).make_module(
            {"links": navigation_links(name), "current": dict(arguments)["current"]}).__html__()
    bootstrap = current_app.extensions["bootstrap"]  # both return Bootstrap-Flask's own Markup
    return bootstrap.load_css() if name == "css" else bootstrap.load_js()


def _cached(kind: str, name: str, arguments: tuple = ()) -> object:
    build: Callable[..., object] | None = current_app.extensions.get(LAYOUT_CACHE_KEY)
    if build is None or current_app.jinja_env.auto_reload:
        return _build(kind, name, arguments, request.script_root)
    return build(kind, name, arguments, request.script_root)


def layout_url(endpoint: str, **values: str) -> str:
    """url_for(endpoint, **values) for the layout's fixed links (values: constants of the
    templates, e.g. filename="css/main.css"), built once per script root. Raises what url_for
    raises (werkzeug.routing.BuildError for an unknown endpoint)."""
    return _cached("url", endpoint, tuple(sorted(values.items())))  # type: ignore[return-value]


def navigation_links(role: str) -> tuple[NavLink, ...]:
    """The navbar of `role` (navigation_for) with each link's URL (layout_url); an unknown role
    has no links."""
    return tuple(NavLink(label, endpoint, layout_url(endpoint)) for label, endpoint in navigation_for(role))


def navigation_menu(role: str) -> Markup:
    """The navbar's menu of `role` (MENU_TEMPLATE over navigation_links), the current page's
    link marked active, rendered once per role, current menu entry and script root. An unknown
    role gets an empty menu."""
    endpoint = request.endpoint
    current = endpoint if endpoint in MENU_ENDPOINTS.get(role, ()) else None
    return _cached("menu", role, (("current", current),))  # type: ignore[return-value]


def bootstrap_asset(kind: str) -> Markup:
    """Bootstrap-Flask's `load_css()` (kind "css") or `load_js()` (kind "js") markup, local files
    (BOOTSTRAP_SERVE_LOCAL, DESIGN.md section 5b), built once per script root. Raises
    ValueError for another kind."""
    if kind not in ("css", "js"):
        raise ValueError(f"no Bootstrap asset {kind!r}: 'css' or 'js'")
    return _cached("asset", kind)  # type: ignore[return-value]


def register_layout_links(app: Flask) -> None:
    """Give `app` its layout-link cache and the `layout_url`, `navigation_menu` and
    `bootstrap_asset` template globals."""
    app.extensions[LAYOUT_CACHE_KEY] = lru_cache(maxsize=LAYOUT_CACHE_SIZE)(_build)
    app.jinja_env.globals.update(layout_url=layout_url, navigation_menu=navigation_menu,
                                 bootstrap_asset=bootstrap_asset)
