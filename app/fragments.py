"""Template fragments rendered once per state: the transaction lists' filter forms.

A filter form is a GET form without a CSRF token (nothing in it is secret or per user): its
markup follows from the submitted values, the values read from them and the errors found in
them, and nothing else. Rendered through Bootstrap-Flask's `render_field` macros (DESIGN.md
section 5b), five or six fields cost about a quarter of a page's CPU, at every page of a list
whose filters don't change from one page to the next. So each app keeps the markup of the
last FRAGMENT_CACHE_SIZE form states in an LRU cache, keyed by the fragment's template and
that state; the values in the key are the client's own, and come back only to a request that
sent the same values. Templates that reload (`TEMPLATES_AUTO_RELOAD`, debug) are never cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

from flask import Flask, current_app
from markupsafe import Markup
from wtforms import Form

FRAGMENT_CACHE_SIZE = 256
# Longer submitted values (no filter needs more than 12 characters) are rendered, never cached,
# so the cache holds at most FRAGMENT_CACHE_SIZE small forms whatever clients send.
FRAGMENT_VALUE_LIMIT = 64
EXTENSION_KEY = "form_fragments"


@dataclass(frozen=True)
class _FormState:
    """What a filter form's markup depends on; `form` rides along for a cache miss only."""

    template: str
    state: tuple
    form: Form = field(compare=False, hash=False)


def form_state(form: Form) -> tuple:
    """The state a form's fields render from: per field, its name, the submitted strings, the
    value read from them (repr) and its error messages (which these forms' validators derive
    from the rest; kept in the key should one ever read anything else). Equal states give
    equal markup."""
    return tuple(
        (item.name, None if item.raw_data is None else tuple(item.raw_data), repr(item.data),
         tuple(str(error) for error in item.errors))
        for item in form
    )


def _oversized(form: Form) -> bool:
    """Whether any submitted value is longer than FRAGMENT_VALUE_LIMIT characters."""
    return any(len(str(value)) > FRAGMENT_VALUE_LIMIT for item in form for value in (item.raw_data or ()))


def _render(key: _FormState) -> Markup:
    """The partial rendered by Jinja with autoescaping, as the safe markup Jinja itself returns
    for a template module (nothing here marks a string safe by hand)."""
    return current_app.jinja_env.get_template(key.template).make_module({"form": key.form}).__html__()


def render_form_fragment(template: str, form: Form) -> Markup:
    """The markup of `template` (a partial whose only variable is `form`) for this form's state.

    template: a template name, e.g. "banking/_transaction_filters.html". form: a validated (or
    not yet valid) GET filter form without CSRF token; a form carrying one is refused with
    ValueError, since its token is per session and must never be served to another client.
    Returns the cached markup when the same template has rendered an equal state before; a
    state with a value longer than FRAGMENT_VALUE_LIMIT is rendered and not kept.
    """
    if getattr(form.meta, "csrf", False):
        raise ValueError("a form with a CSRF token is per session: its markup is never cached")
    cached: Callable[[_FormState], Markup] | None = current_app.extensions.get(EXTENSION_KEY)
    if cached is None or current_app.jinja_env.auto_reload or _oversized(form):
        return _render(_FormState(template, (), form))
    return cached(_FormState(template, form_state(form), form))


def register_form_fragments(app: Flask) -> None:
    """Give `app` its own fragment cache and the `form_fragment(template, form)` template global."""
    app.extensions[EXTENSION_KEY] = lru_cache(maxsize=FRAGMENT_CACHE_SIZE)(_render)
    app.jinja_env.globals["form_fragment"] = render_form_fragment
