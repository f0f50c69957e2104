"""Template fragments rendered once per state: the transaction lists' filter forms, and the
fields of a form that say nothing about who asks (the transfer forms' amount, description...).

A filter form is a GET form without a CSRF token (nothing in it is secret or per user): its
markup follows from the submitted values, the values read from them and the errors found in
them, and nothing else. Rendered through Bootstrap-Flask's `render_field` macros (DESIGN.md
section 5b), five or six fields cost about a quarter of a page's CPU, at every page of a list
whose filters don't change from one page to the next. So each app keeps the markup of the
last FRAGMENT_CACHE_SIZE form states in an LRU cache, keyed by the fragment's template and
that state; the values in the key are the client's own, and come back only to a request that
sent the same values. Templates that reload (`TEMPLATES_AUTO_RELOAD`, debug) are never cached.

A form with a CSRF token can't be cached whole, but most of its fields can, one at a time:
`field_fragment(form.amount, inputmode="decimal")` is Bootstrap-Flask's `render_field` for that
field alone, kept in a second LRU cache keyed by the field's class, name, id, label,
description, flags, submitted strings, value, errors and choices, and the macro's options.
Hidden fields (the CSRF token, the transfer forms' idempotency key) and password fields are
refused: their values are per session or secret, and must neither be served to anyone else nor
kept in a cache's keys.

A select whose options change with every request (the transfer forms' accounts, labelled with
their balances) keeps only its shell there: `select_fragment(form.source_account)` caches the
macro's markup around an empty `<select>` and writes the options for each request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from flask import Flask, current_app
from markupsafe import Markup
from wtforms import Field, Form
from wtforms.fields import HiddenField, PasswordField

from .widgets import OptionSelect

FRAGMENT_CACHE_SIZE = 256
# Longer submitted values (no filter needs more than 12 characters) are rendered, never cached,
# so the cache holds at most FRAGMENT_CACHE_SIZE small forms whatever clients send.
FRAGMENT_VALUE_LIMIT = 64
EXTENSION_KEY = "form_fragments"
FIELD_EXTENSION_KEY = "field_fragments"
# The one-field template behind field_fragment: Bootstrap-Flask's render_field, and nothing else.
FIELD_TEMPLATE = "_field_fragment.html"
# Fields never cached: the CSRF token and other hidden values are per session, passwords secret.
UNCACHED_FIELDS = (HiddenField, PasswordField)


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


def _oversized(fields: Iterable[Field]) -> bool:
    """Whether any value submitted to `fields` (a form, or some of its fields) is longer than
    FRAGMENT_VALUE_LIMIT characters."""
    return any(len(str(value)) > FRAGMENT_VALUE_LIMIT for item in fields for value in (item.raw_data or ()))


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


@dataclass(frozen=True)
class _FieldState:
    """What one field's markup depends on; the field and the macro's options ride along for a
    cache miss only."""

    state: tuple
    item: Field = field(compare=False, hash=False)
    options: dict = field(compare=False, hash=False)


def field_state(item: Field) -> tuple:
    """The state one field renders from: its class, name, id, label, description, render_kw
    and flags (fixed by its form's class, but kept in the key should an instance change them),
    the submitted strings, the value read from them (repr), its errors and its choices (repr,
    for a select: the labels are the account texts). Equal states give equal markup."""
    return (
        type(item).__module__, type(item).__qualname__, item.name, item.id, str(item.label.text),
        str(item.description), repr(item.render_kw), repr(sorted(vars(item.flags).items())),
        None if item.raw_data is None else tuple(item.raw_data), repr(item.data),
        tuple(str(error) for error in item.errors), repr(getattr(item, "choices", None)),
    )


def _render_field(key: _FieldState) -> Markup:
    """FIELD_TEMPLATE rendered by Jinja with autoescaping, as for _render."""
    return current_app.jinja_env.get_template(FIELD_TEMPLATE).make_module(
        {"field": key.item, "options": key.options}).__html__()


def _field_cache(options: dict) -> tuple[Callable[[_FieldState], Markup] | None, tuple]:
    """The app's field cache and the macro options as part of a key; no cache when the cache is
    off (templates reload) or an option's value can't be hashed."""
    key_options = tuple(sorted(options.items()))
    try:
        hash(key_options)
    except TypeError:
        return None, key_options
    if current_app.jinja_env.auto_reload:
        return None, key_options
    return current_app.extensions.get(FIELD_EXTENSION_KEY), key_options


def render_field_fragment(item: Field, **options) -> Markup:
    """Bootstrap-Flask's `render_field(item, **options)` markup, from the cache when an equal
    field state with the same options was rendered before.

    item: a bound WTForms field (e.g. `form.amount`). options: the macro's keyword arguments
    (e.g. `inputmode="decimal"`, `button_style="primary"`), hashable values only; others render
    uncached. Raises ValueError for a hidden field (the CSRF token, an idempotency key) or a
    password field (OWASP ASVS 4.2.2, 8.3.1: never kept, never served to another client). A
    submitted value longer than FRAGMENT_VALUE_LIMIT is rendered and not kept.
    """
    if isinstance(item, UNCACHED_FIELDS):
        raise ValueError(f"field {item.name!r} is hidden or a password: its markup is never cached")
    cached, key_options = _field_cache(options)
    if cached is None or _oversized((item,)):
        return _render_field(_FieldState((), item, options))
    return cached(_FieldState((field_state(item), key_options), item, options))


def select_shell_state(item: Field) -> tuple:
    """field_state without what only the `<option>` list shows (the choices, the value read and
    the strings submitted): what Bootstrap-Flask's markup around a select's options depends on."""
    return (
        type(item).__module__, type(item).__qualname__, item.name, item.id, str(item.label.text),
        str(item.description), repr(item.render_kw), repr(sorted(vars(item.flags).items())),
        tuple(str(error) for error in item.errors),
    )


def _with_options(head: Markup, item: Field) -> Markup:
    """`head` followed by the `<option>` elements of `item`, each written by its OptionSelect
    widget as its `<select>` writes them (values and labels escaped; Markup + Markup)."""
    for choice in item.iter_choices():
        head += item.widget.render_option(choice)
    return head


def render_select_fragment(item: Field, **options) -> Markup:
    """Bootstrap-Flask's `render_field(item, **options)` for a select whose options change from
    one request to the next (the transfer forms' accounts, whose labels carry balances).

    The markup around the options (label, classes, errors, the `<select>` element itself) is
    rendered once per select_shell_state and options, from the field with no choices,
    and kept in the field cache; the `<option>` elements are written for each request by the
    field's widget and put inside that empty `<select>`. So the cache never holds an option, a
    label or a balance. A field that isn't a single-choice select drawn by OptionSelect without
    groups (or whose shell holds anything but one `</select>`) is rendered whole, uncached.
    Returns Markup equal to render_field's (tests/integration/test_form_fragments.py).
    """
    cached, key_options = _field_cache(options)
    widget = getattr(item, "widget", None)
    if cached is None or not isinstance(widget, OptionSelect) or widget.multiple or item.has_groups():
        return _render_field(_FieldState((), item, options))
    # The shell is rendered (on a cache miss) from the field itself with its choices taken away
    # for that moment: the field belongs to this request's form, which nothing else reads meanwhile.
    choices, item.choices = item.choices, []
    try:
        markup = cached(_FieldState(("select shell", select_shell_state(item), key_options), item, options))
    finally:
        item.choices = choices
    head, end_tag, tail = markup.partition("</select>")
    if not end_tag or "</select>" in tail:
        return _render_field(_FieldState((), item, options))
    return _with_options(head, item) + end_tag + tail


def register_form_fragments(app: Flask) -> None:
    """Give `app` its own fragment caches and the `form_fragment(template, form)` and
    `field_fragment(field, **options)` and `select_fragment(field, **options)` template globals."""
    app.extensions[EXTENSION_KEY] = lru_cache(maxsize=FRAGMENT_CACHE_SIZE)(_render)
    app.extensions[FIELD_EXTENSION_KEY] = lru_cache(maxsize=FRAGMENT_CACHE_SIZE)(_render_field)
    app.jinja_env.globals["form_fragment"] = render_form_fragment
    app.jinja_env.globals["field_fragment"] = render_field_fragment
    app.jinja_env.globals["select_fragment"] = render_select_fragment
