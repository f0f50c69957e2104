"""The forms' hidden inputs and select options, written directly (app/widgets.py): WTForms' and
Flask-WTF's own markup, character for character, with every value escaped."""

from __future__ import annotations

import importlib
import inspect

import pytest
import wtforms
from flask_wtf import FlaskForm
from wtforms import HiddenField, StringField
from wtforms.fields.choices import Choice, SelectChoice
from wtforms.validators import DataRequired

from app.widgets import OptionSelect, SelectField, hidden_inputs

FORM_MODULES = ("app.forms_common", "app.auth.forms", "app.banking.forms", "app.support.forms", "app.audit.forms")
NASTY = "\"'><script>alert(1)</script>&amp;"


def _app_forms() -> list[type[FlaskForm]]:
    """Every FlaskForm class the app defines."""
    found: dict[str, type[FlaskForm]] = {}
    for name in FORM_MODULES:
        for _, value in inspect.getmembers(importlib.import_module(name), inspect.isclass):
            if issubclass(value, FlaskForm) and value.__module__.startswith("app."):
                found[f"{value.__module__}.{value.__qualname__}"] = value
    return [found[key] for key in sorted(found)]


class _HiddenForm(FlaskForm):
    plain = HiddenField()
    required = HiddenField(validators=[DataRequired()])
    styled = HiddenField(render_kw={"data_role": "marker"})
    text = StringField("Text")


@pytest.mark.parametrize("form_class", _app_forms(), ids=lambda cls: cls.__qualname__)
def test_hidden_inputs_are_flask_wtfs_hidden_tag(app, form_class):
    """Is hidden_inputs(form) exactly form.hidden_tag() for every form of the app, CSRF token
    included?"""
    with app.test_request_context("/"):
        form = form_class(meta={"csrf": True})
        assert "csrf_token" in str(hidden_inputs(form))
        assert hidden_inputs(form) == form.hidden_tag()


@pytest.mark.parametrize("value", ["", "plain", NASTY, "a\nb", "ünïcode·€"])
def test_hidden_values_are_escaped_as_wtforms_escapes_them(app, value):
    """Submitted hidden values (an idempotency key sent back with a refused form) are escaped,
    as WTForms escapes them; render_kw and a disabled flag go through WTForms itself."""
    with app.test_request_context("/", method="POST", data={"plain": value, "required": value, "styled": value}):
        form = _HiddenForm(meta={"csrf": True})
        form.required.flags.disabled = True
        markup = str(hidden_inputs(form))
        assert markup == form.hidden_tag()
        assert "<script>" not in markup and 'data-role="marker"' in markup and " disabled " in markup


CHOICES = [
    Choice(1, "123456789012 · checking · 5.00", False, {}),
    Choice("a&b", NASTY, True, {}),
    Choice(True, "yes", False, {}),
    Choice("", "", False, {}),
    Choice("x", "with attributes", True, {"data_kind": "x", "disabled": True}),
]


PLAIN_CHOICES = [SelectChoice(c.value, c.label) for c in CHOICES[:4]]


class _SelectForm(wtforms.Form):
    ours = SelectField("Account", choices=PLAIN_CHOICES, coerce=str)
    theirs = wtforms.SelectField("Account", choices=PLAIN_CHOICES, coerce=str)


def test_options_are_wtforms_own_markup():
    """Is each option, plain, selected, with a boolean or empty value, with markup-looking
    text, or with render_kw or extra attributes, what WTForms' Select writes?"""
    for choice in CHOICES:
        assert OptionSelect.render_option(choice) == wtforms.widgets.Select.render_option(choice)
        assert (OptionSelect.render_option(choice, class_="c") ==
                wtforms.widgets.Select.render_option(choice, class_="c"))
    assert "<script>" not in OptionSelect.render_option(CHOICES[1])


@pytest.mark.parametrize("submitted", [None, "a&b", "1", "unknown"])
def test_a_select_is_wtforms_own_markup(submitted):
    """Is a whole select, with the option chosen by the submitted value or none, and with the
    element's own attributes, the markup of WTForms' widget?"""
    from werkzeug.datastructures import MultiDict

    form = _SelectForm(MultiDict({} if submitted is None else {"ours": submitted, "theirs": submitted}))
    for extra in ({}, {"class_": "form-select", "required": True}):
        assert form.ours(**extra) == str(form.theirs(**extra)).replace('"theirs"', '"ours"')
    grouped = _SelectForm()
    grouped.ours.choices = grouped.theirs.choices = [SelectChoice("1", "A <1>", optgroup="Checking"),
                                                     SelectChoice("2", "B", optgroup="Savings & co")]
    assert grouped.ours() == str(grouped.theirs()).replace('"theirs"', '"ours"')


def test_every_select_of_the_app_is_drawn_by_option_select():
    """Does every select field of the app's forms use OptionSelect (app/widgets.SelectField)?"""
    selects = {(form.__qualname__, name): unbound.field_class for form in _app_forms()
               for name, unbound in vars(form).items()
               if isinstance(unbound, wtforms.fields.core.UnboundField)
               and issubclass(unbound.field_class, wtforms.SelectField)}
    assert len(selects) >= 8
    assert {key: cls for key, cls in selects.items() if cls is not SelectField} == {}
