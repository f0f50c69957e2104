"""The transaction lists' filter forms and the transfer forms' plain fields, rendered once per
state (app/fragments.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask_wtf import FlaskForm
from jinja2 import meta
from wtforms import PasswordField, SelectField, StringField

from app.fragments import (
    EXTENSION_KEY,
    FIELD_EXTENSION_KEY,
    FIELD_TEMPLATE,
    FRAGMENT_CACHE_SIZE,
    FRAGMENT_VALUE_LIMIT,
    _FieldState,
    render_field_fragment,
    render_form_fragment,
    render_select_fragment,
    select_shell_state,
)
from app.widgets import SelectField as AppSelectField

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
    source = app.jinja_env.loader.get_source(app.jinja_env, FIELD_TEMPLATE)[0]
    assert meta.find_undeclared_variables(app.jinja_env.parse(source)) == {"field", "options"}


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


# ---------------------------------------------------------------------------------------------
# One field at a time: field_fragment, for the forms that carry a CSRF token
# ---------------------------------------------------------------------------------------------

EXTERNAL = "/banking/transfer/external"
INTERNAL = "/banking/transfer/internal"
# How the transfer templates render each plain field (options as in the templates).
TRANSFER_FIELDS = {
    EXTERNAL: ("{{ %s(form.target_account_number, inputmode='numeric', autocomplete='off') }}",
               "{{ %s(form.amount, inputmode='decimal') }}", "{{ %s(form.description) }}",
               "{{ %s(form.submit, button_style='primary') }}"),
    INTERNAL: ("{{ %s(form.amount, inputmode='decimal') }}", "{{ %s(form.description) }}",
               "{{ %s(form.submit, button_style='primary') }}"),
}
DIRECT = "{% from 'bootstrap5/form.html' import render_field %}"


def _transfer_form(app, url: str, data: dict | None = None):
    """The transfer form of `url` as its view builds it, for the signed-in client's user, after
    validating `data` (a POST) when given."""
    from flask_login import current_user

    from app.banking import services
    from app.banking.forms import ExternalTransferForm, InternalTransferForm

    form_class = ExternalTransferForm if url == EXTERNAL else InternalTransferForm
    form = form_class.for_owner(services.list_accounts(current_user.id))
    if data is not None:
        form.validate()
    return form


@pytest.mark.parametrize("url", [EXTERNAL, INTERNAL])
@pytest.mark.parametrize("data", [None, {"amount": "abc", "description": "x" * 141, "target_account_number": "12"}])
def test_each_cached_field_is_bootstrap_flasks_own_markup(app, customer, make_account, url, data):
    """Is every field the transfer templates render with field_fragment the same markup as
    Bootstrap-Flask's render_field gives it directly, blank and with errors, served from the
    cache or not?"""
    make_account(customer, "10.00")
    method = "POST" if data else "GET"
    with app.test_request_context(url, method=method, data=data or {}):
        from flask_login import login_user

        from app.extensions import db
        from app.models import User

        login_user(db.session.get(User, customer.id))
        form = _transfer_form(app, url, data)
        for call in TRANSFER_FIELDS[url]:
            direct = app.jinja_env.from_string(DIRECT + call % "render_field").render(form=form)
            cached = app.jinja_env.from_string(call % "field_fragment")
            assert cached.render(form=form) == cached.render(form=form) == direct, call
            if data:
                assert "invalid-feedback" in direct or "submit" in call


def test_the_transfer_forms_plain_fields_are_rendered_once(app, client, logged_in_customer, make_account):
    """Is a second transfer form served its amount, description, target number and button from
    the cache (four hits, no miss), while its per-session hidden fields are new on each page?"""
    make_account(logged_in_customer, "10.00")
    cache = app.extensions[FIELD_EXTENSION_KEY]
    first = client.get(EXTERNAL).get_data(as_text=True)
    before = cache.cache_info()
    second = client.get(EXTERNAL).get_data(as_text=True)
    after = cache.cache_info()
    # amount, description, target number, button, and the account select's shell
    assert (after.hits - before.hits, after.misses - before.misses) == (5, 0)
    key = re.compile(r'name="idempotency_key" type="hidden" value="([^"]*)"')
    assert key.search(first).group(1) != key.search(second).group(1)


def test_a_refused_transfer_shows_its_own_values_and_messages(app, client, logged_in_customer, make_account):
    """Values and errors are part of a field's key: a refused amount comes back as typed with
    its message, and a blank form after it shows neither."""
    account = make_account(logged_in_customer, "10.00")
    key = re.search(r'name="idempotency_key" type="hidden" value="([^"]*)"',
                    client.get(EXTERNAL).get_data(as_text=True)).group(1)
    data = {"source_account": str(account.id), "target_account_number": "000000000000", "description": "",
            "idempotency_key": key}
    first = client.post(EXTERNAL, data=data | {"amount": "abc"})
    second = client.post(EXTERNAL, data=data | {"amount": "xyz"})
    assert first.status_code == second.status_code == 400
    assert _value_of(first.get_data(as_text=True), "amount") == "abc"
    assert _value_of(second.get_data(as_text=True), "amount") == "xyz"
    assert 'id="amount"' in second.get_data(as_text=True) and "invalid-feedback" in second.get_data(as_text=True)
    blank = client.get(EXTERNAL).get_data(as_text=True)
    assert _value_of(blank, "amount") in (None, "") and "invalid-feedback" not in blank


class _FieldsForm(FlaskForm):
    account = SelectField("Account", choices=[])
    note = StringField("Note")
    secret = PasswordField("Password")


def test_a_select_is_keyed_by_its_choices(app):
    """Two users' selects differ only in their choices (account numbers, balances): each must
    get its own options, never the other's."""
    template = app.jinja_env.from_string("{{ field_fragment(form.account) }}")
    with app.test_request_context("/"):
        first, second = _FieldsForm(meta={"csrf": False}), _FieldsForm(meta={"csrf": False})
        first.account.choices = [("1", "111111111111 checking 10.00")]
        second.account.choices = [("2", "222222222222 savings 99.00")]
        shown_first, shown_second = template.render(form=first), template.render(form=second)
    assert "111111111111" in shown_first and "222222222222" not in shown_first
    assert "222222222222" in shown_second and "111111111111" not in shown_second


def test_a_fields_options_are_part_of_its_key(app):
    """The same field with other macro options (inputmode, a button style) is another markup."""
    with app.test_request_context("/"):
        form = _FieldsForm(meta={"csrf": False})
        plain = str(render_field_fragment(form.note))
        numeric = str(render_field_fragment(form.note, inputmode="numeric"))
    assert 'inputmode="numeric"' in numeric and "inputmode" not in plain


def test_hidden_and_password_fields_are_never_cached(app, customer, make_account):
    """The CSRF token and the idempotency key are per session, a password is secret (OWASP ASVS
    4.2.2, 8.3.1): none of them may be kept in, or served from, the shared cache."""
    make_account(customer, "10.00")
    with app.test_request_context(EXTERNAL):
        from flask_login import login_user

        from app.extensions import db
        from app.models import User

        login_user(db.session.get(User, customer.id))
        form = _transfer_form(app, EXTERNAL)
        with pytest.raises(ValueError, match="never cached"):
            render_field_fragment(form.idempotency_key)
        with pytest.raises(ValueError, match="never cached"):
            render_field_fragment(_FieldsForm(meta={"csrf": True}).csrf_token)
        with pytest.raises(ValueError, match="never cached"):
            render_field_fragment(_FieldsForm(meta={"csrf": False}).secret)


def test_long_field_values_are_shown_but_never_kept(app):
    """A submitted value longer than FRAGMENT_VALUE_LIMIT is rendered, not cached."""
    cache = app.extensions[FIELD_EXTENSION_KEY]
    long_value = "n" * (FRAGMENT_VALUE_LIMIT + 1)
    with app.test_request_context("/", method="POST", data={"note": long_value}):
        form = _FieldsForm(meta={"csrf": False})
        before = cache.cache_info()
        assert _value_of(str(render_field_fragment(form.note)), "note") == long_value
        assert cache.cache_info()[:2] == before[:2]
    with app.test_request_context("/", method="POST", data={"note": long_value[:FRAGMENT_VALUE_LIMIT]}):
        render_field_fragment(_FieldsForm(meta={"csrf": False}).note)
        assert cache.cache_info().misses == before.misses + 1


# ---------------------------------------------------------------------------------------------
# Selects whose options change with every request: select_fragment
# ---------------------------------------------------------------------------------------------

# How the transfer templates render their account selects.
TRANSFER_SELECTS = {EXTERNAL: ("source_account",), INTERNAL: ("source_account", "target_account")}


@pytest.mark.parametrize("url", [EXTERNAL, INTERNAL])
@pytest.mark.parametrize("data", [None, {"source_account": "abc", "target_account": "999999", "amount": "1"},
                                  {"source_account": "{first}", "target_account": "{first}", "amount": "1"}])
def test_each_select_is_bootstrap_flasks_own_markup(app, customer, make_account, url, data):
    """Is each account select the transfer templates render with select_fragment the same markup
    as Bootstrap-Flask's render_field gives it directly: blank, with an error, with a submitted
    account selected, rendered afresh and from the cached shell?"""
    first = make_account(customer, "10.00")
    make_account(customer, "25.50", type="savings")
    if data:
        data = {name: value.replace("{first}", str(first.id)) for name, value in data.items()}
    with app.test_request_context(url, method="POST" if data else "GET", data=data or {}):
        from flask_login import login_user

        from app.extensions import db
        from app.models import User

        login_user(db.session.get(User, customer.id))
        form = _transfer_form(app, url, data)
        for name in TRANSFER_SELECTS[url]:
            direct = app.jinja_env.from_string(DIRECT + "{{ render_field(form.%s) }}" % name).render(form=form)
            shared = app.jinja_env.from_string("{{ select_fragment(form.%s) }}" % name)
            assert shared.render(form=form) == shared.render(form=form) == direct, name
            assert direct.count("<option") == 2 and "25.50" in direct


class _SelectForm(FlaskForm):
    account = AppSelectField("Account", choices=[])


def test_the_select_cache_holds_the_shell_and_never_an_option(app):
    """Two users' selects share one cached shell (a hit, no miss, for the second), each shows only
    its own options, and what the cache holds for that shell is an empty `<select>`: no option,
    no account number, no balance is ever kept or served to anyone else."""
    cache = app.extensions[FIELD_EXTENSION_KEY]
    with app.test_request_context("/"):
        first, second = _SelectForm(meta={"csrf": False}), _SelectForm(meta={"csrf": False})
        first.account.choices = [("1", "111111111111 · checking · 10.00")]
        second.account.choices = [("2", "222222222222 · savings · 99.00"), ("3", '<b>"&</b>')]
        shown_first = str(render_select_fragment(first.account))
        before = cache.cache_info()
        shown_second = str(render_select_fragment(second.account))
        after = cache.cache_info()
        kept = str(cache(_FieldState(("select shell", select_shell_state(second.account), ()), second.account, {})))
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)
    assert "111111111111" in shown_first and "222222222222" not in shown_first
    assert "222222222222" in shown_second and "111111111111" not in shown_second
    assert '<option value="3">&lt;b&gt;&#34;&amp;&lt;/b&gt;</option>' in shown_second
    assert '<select class="form-select" id="account" name="account"></select>' in kept
    assert "<option" not in kept and "111111111111" not in kept and "99.00" not in kept
    assert first.account.choices and second.account.choices  # each field keeps its choices


def test_a_select_with_errors_gets_its_own_shell(app):
    """Errors are part of the shell's key: the same select refused after a clean render shows its
    message and the invalid class, and the clean one after it neither."""
    with app.test_request_context("/"):
        clean, refused = _SelectForm(meta={"csrf": False}), _SelectForm(meta={"csrf": False})
        for form in (clean, refused):
            form.account.choices = [("1", "111111111111 · checking · 10.00")]
        refused.account.errors = ["Choose one of the listed options."]
        shown = [str(render_select_fragment(form.account)) for form in (clean, refused, clean)]
    assert "is-invalid" in shown[1] and "Choose one of the listed options." in shown[1]
    assert "is-invalid" not in shown[0] and shown[0] == shown[2]


@pytest.mark.parametrize("kind", ["wtforms widget", "groups"])
def test_other_selects_are_rendered_whole_and_uncached(app, kind):
    """A select not drawn by the app's OptionSelect, or with option groups, is rendered by
    render_field whole (its options included), without touching the cache."""
    from wtforms import SelectField as WTFormsSelectField

    class _OtherForm(FlaskForm):
        account = (WTFormsSelectField if kind == "wtforms widget" else AppSelectField)("Account", choices=[])

    cache = app.extensions[FIELD_EXTENSION_KEY]
    with app.test_request_context("/"):
        form = _OtherForm(meta={"csrf": False})
        form.account.choices = ([("1", "one")] if kind == "wtforms widget" else {"Group": [("1", "one")]})
        direct = app.jinja_env.from_string(DIRECT + "{{ render_field(form.account) }}").render(form=form)
        before = cache.cache_info()
        shown = str(render_select_fragment(form.account))
        after = cache.cache_info()
    assert shown == direct and ">one</option>" in shown
    assert after[:2] == before[:2] and after.currsize == before.currsize


def test_a_shell_holding_another_select_end_tag_is_rendered_whole(app):
    """The options go in before the shell's only `</select>`; a shell with more than one (a label
    given as markup that holds the tag: nothing in the app does) is rendered whole instead."""
    from markupsafe import Markup

    class _OddForm(FlaskForm):
        account = AppSelectField(Markup("Account </select>"), choices=[])

    with app.test_request_context("/"):
        form = _OddForm(meta={"csrf": False})
        form.account.choices = [("1", "one")]
        direct = app.jinja_env.from_string(DIRECT + "{{ render_field(form.account) }}").render(form=form)
        shown = str(render_select_fragment(form.account))
    assert shown == direct and '<select class="form-select" id="account" name="account"><option value="1">' in shown
