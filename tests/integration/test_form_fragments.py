"""The transaction lists' filter forms, rendered once per state (app/fragments.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask_wtf import FlaskForm
from jinja2 import meta
from wtforms import StringField

from app.fragments import EXTENSION_KEY, FRAGMENT_CACHE_SIZE, FRAGMENT_VALUE_LIMIT, render_form_fragment

URL = "/banking/transactions"
PARTIAL = "banking/_transaction_filters.html"


def _value_of(html: str, name: str) -> str | None:
    found = re.search(rf'<input[^>]*name="{name}"[^>]*>', html)
    value = found and re.search(r'value="([^"]*)"', found.group(0))
    return value.group(1) if value else None


def test_each_request_sees_the_filter_values_it_sent(client, logged_in_customer):
    """Is the cached form keyed by the request's own values: a second request with other values
    never gets the first one's markup?"""
    first = client.get(f"{URL}?min_amount=1.00&date_from=2024-01-02").get_data(as_text=True)
    second = client.get(f"{URL}?min_amount=2.50&date_from=2024-03-04").get_data(as_text=True)
    assert (_value_of(first, "min_amount"), _value_of(first, "date_from")) == ("1.00", "2024-01-02")
    assert (_value_of(second, "min_amount"), _value_of(second, "date_from")) == ("2.50", "2024-03-04")


def test_a_rejected_filter_shows_its_message_and_value_even_after_a_valid_one(client, logged_in_customer):
    """Errors are part of the key: bad input shows its message, whatever was cached before."""
    assert client.get(f"{URL}?min_amount=3.00").status_code == 200
    response = client.get(f"{URL}?min_amount=abc")
    body = response.get_data(as_text=True)
    assert response.status_code == 400
    assert _value_of(body, "min_amount") == "abc"
    assert "invalid-feedback" in body
    again = client.get(f"{URL}?min_amount=3.00").get_data(as_text=True)
    assert "invalid-feedback" not in again and _value_of(again, "min_amount") == "3.00"


def test_two_rejected_values_each_come_back_as_typed(client, logged_in_customer):
    """Two bad values read as the same nothing; the key holds what was sent, so each request
    gets its own text back to correct."""
    assert _value_of(client.get(f"{URL}?min_amount=abc").get_data(as_text=True), "min_amount") == "abc"
    assert _value_of(client.get(f"{URL}?min_amount=xyz").get_data(as_text=True), "min_amount") == "xyz"


def test_the_same_filters_render_the_form_once_and_the_same_markup(app, client, logged_in_customer):
    """Is the second page with the same filters served the first one's markup, without
    rendering the form's template again, and is that markup what a fresh render gives?"""
    query = f"{URL}?type=debit&max_amount=40.00"
    cache = app.extensions[EXTENSION_KEY]
    before = cache.cache_info()
    first = client.get(query).get_data(as_text=True)
    second = client.get(query).get_data(as_text=True)
    after = cache.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    app.jinja_env.auto_reload = True  # templates that reload are rendered every time, uncached
    try:
        fresh = client.get(query).get_data(as_text=True)
    finally:
        app.jinja_env.auto_reload = False
    assert cache.cache_info()[:2] == after[:2]
    form = re.compile(r'<form method="get".*?</form>', re.S)
    assert form.search(first).group(0) == form.search(second).group(0) == form.search(fresh).group(0)


def test_the_auditors_filter_form_is_keyed_by_its_own_fields(client, auth, auditor):
    """The audit view's form (with the account number) has its own template and key."""
    auth.login(auditor.email)
    first = client.get("/audit/transactions?account_number=123456789012").get_data(as_text=True)
    second = client.get("/audit/transactions?account_number=210987654321").get_data(as_text=True)
    assert _value_of(first, "account_number") == "123456789012"
    assert _value_of(second, "account_number") == "210987654321"


def test_a_form_with_a_csrf_token_is_never_cached(app):
    """A CSRF token is per session (OWASP ASVS 4.2.2): a form carrying one must not be served
    from a cache shared by every client of the process."""

    class PostForm(FlaskForm):
        name = StringField("Name")

    with app.test_request_context("/"):
        with pytest.raises(ValueError, match="CSRF"):
            render_form_fragment(PARTIAL, PostForm(meta={"csrf": True}))


def test_the_cache_is_bounded(app, client, logged_in_customer):
    """Distinct filter values can't grow the cache past FRAGMENT_CACHE_SIZE entries."""
    for cents in range(FRAGMENT_CACHE_SIZE + 20):
        assert client.get(f"{URL}?min_amount=0.{cents % 100:02d}&max_amount={cents + 1}.00").status_code == 200
    info = app.extensions[EXTENSION_KEY].cache_info()
    assert info.maxsize == FRAGMENT_CACHE_SIZE
    assert info.currsize == FRAGMENT_CACHE_SIZE


def test_cached_partials_read_nothing_but_their_form(app):
    """A partial served from the shared cache must not read the request, the session, the user
    or anything else that differs between clients (`request.host`, a CSRF token...): the first
    client's would be served to the next (cache poisoning). Each template passed to
    form_fragment may name no variable but `form`."""
    templates = Path(app.root_path) / "templates"
    used = set()
    for page in templates.rglob("*.html"):
        used |= set(re.findall(r"form_fragment\(\s*'([^']+)'", page.read_text(encoding="utf-8")))
    assert used == {"banking/_transaction_filters.html", "audit/_transaction_filters.html"}
    for name in sorted(used):
        source = app.jinja_env.loader.get_source(app.jinja_env, name)[0]
        assert meta.find_undeclared_variables(app.jinja_env.parse(source)) == {"form"}, name


def test_long_values_are_shown_but_never_kept(app, client, logged_in_customer):
    """A value longer than any filter needs is rendered (with its message) but not cached, so
    clients sending long query strings can't fill the process's memory with their pages."""
    cache = app.extensions[EXTENSION_KEY]
    long_value = "9" * (FRAGMENT_VALUE_LIMIT + 1)
    before = cache.cache_info()
    response = client.get(f"{URL}?min_amount={long_value}")
    assert response.status_code == 400
    assert _value_of(response.get_data(as_text=True), "min_amount") == long_value
    assert cache.cache_info()[:2] == before[:2]
    assert client.get(f"{URL}?min_amount={long_value[:FRAGMENT_VALUE_LIMIT]}").status_code == 400
    assert cache.cache_info().misses == before.misses + 1
