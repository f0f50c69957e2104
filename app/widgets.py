"""WTForms' markup for hidden inputs and select options, written in one escaped string each.

WTForms writes every attribute of every input and option through `html_params`, one
`Markup.format` per attribute (string.Formatter, in Python), and its Select widget inspects the
signature of `render_option` on every render. For the transfer form's hidden inputs (the CSRF
token and the idempotency key) and its select of the customer's accounts, that was about a
tenth of the page's CPU. The two helpers here produce the same markup, character for character
(tests/integration/test_widgets.py compares them with WTForms' and Flask-WTF's own output),
and fall back to WTForms for anything they don't write themselves (render_kw, a disabled flag,
another widget). Every value is escaped by markupsafe, as WTForms escapes it: the token, a
submitted key, an account label.
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from markupsafe import Markup
from wtforms import Form
from wtforms import SelectField as WTFormsSelectField
from wtforms.fields.choices import Choice
from wtforms.widgets import HiddenInput
from wtforms.widgets import Select as WTFormsSelect

# Constant markup with placeholders: `Markup % values` escapes every value it inserts (as
# Markup.format does, without string.Formatter's cost), so only these literals are marked safe.
# nosemgrep: markup-call
_HIDDEN_INPUT = Markup('<input id="%s" name="%s" type="hidden" value="%s">')
# nosemgrep: markup-call
_OPTION = Markup('<option value="%s">%s</option>')
# nosemgrep: markup-call
_SELECTED_OPTION = Markup('<option selected value="%s">%s</option>')
# nosemgrep: markup-call
_LINE_BREAK = Markup("\n")


def hidden_inputs(form: Form) -> Markup:
    """The hidden inputs of `form` (a bound WTForms form: its CSRF token and every HiddenField),
    one per line, as Markup: the same markup as Flask-WTF's `form.hidden_tag()`, values escaped
    (OWASP ASVS 5.3.3). A field with render_kw or a disabled flag, or with another widget than
    WTForms' HiddenInput, is rendered by WTForms itself."""
    inputs = []
    for item in form:
        if not isinstance(item.widget, HiddenInput):
            continue
        if type(item.widget) is HiddenInput and not item.render_kw and not item.flags.disabled:
            inputs.append(_HIDDEN_INPUT % (item.id, item.name, item._value()))
        else:
            inputs.append(item())
    return _LINE_BREAK.join(inputs)


class OptionSelect(WTFormsSelect):
    """WTForms' Select widget with each plain option written as one escaped string: value and
    label escaped, `selected` where chosen. An option with render_kw, or called with extra
    attributes, is rendered by WTForms' own render_option. No optgroup or `multiple` of WTForms
    changes: the `<select>` element and the groups are still WTForms' code."""

    @classmethod
    def _dispatch_render_option(cls):
        # WTForms inspects render_option's signature on every render, to warn about overrides
        # written for its older (value, label, selected) signature; this one takes a choice.
        return cls.render_option

    @classmethod
    def render_option(cls, choice: Choice, **kwargs) -> Markup:
        """`<option [selected ]value="…">label</option>` for `choice` (WTForms' Choice: value,
        label, selected, render_kw), as WTForms writes it (attributes in name order). Returns
        Markup; raises nothing of its own."""
        if kwargs or choice.render_kw:
            return super().render_option(choice, **kwargs)
        template = _SELECTED_OPTION if choice.selected else _OPTION
        return template % (choice.value, choice.label or choice.value)


# WTForms' own message for a value its `coerce` can't convert ("Invalid Choice: could not
# coerce.") speaks of the code, not of the form.
UNCONVERTIBLE_CHOICE_MESSAGE = "Choose one of the listed options."


class SelectField(WTFormsSelectField):
    """WTForms' SelectField drawn by OptionSelect; every select of the app's forms is one.

    A submitted value that `coerce` can't convert (text for an id, say) gets
    UNCONVERTIBLE_CHOICE_MESSAGE unless the field names its own `invalid_value_message`."""

    widget = OptionSelect()

    def __init__(self, *args: Any, invalid_value_message: str | None = UNCONVERTIBLE_CHOICE_MESSAGE,
                 **kwargs: Any) -> None:
        super().__init__(*args, invalid_value_message=invalid_value_message, **kwargs)


def register_widgets(app: Flask) -> None:
    """Give `app`'s templates the `hidden_inputs(form)` global."""
    app.jinja_env.globals["hidden_inputs"] = hidden_inputs
