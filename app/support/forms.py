"""Support desk forms: the shape of input. Who may do what to which ticket is the service's rule."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired

from ..forms_common import at_most, no_control_characters, single_line, strip_filter
from ..models import TICKET_STATUSES
from ..widgets import SelectField
from . import services

STATUS_CHOICES = [SelectChoice(status, services.status_label(status)) for status in TICKET_STATUSES]


def normalize_newlines(value: str | None) -> str | None:
    """Turn the CRLF and CR line breaks browsers send from a textarea into LF, so a line break
    counts as one character against the field's limit, as it is stored."""
    return value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else value


class TicketForm(FlaskForm):
    """A customer's new ticket: subject (1–120), description (1–5000), trimmed (DESIGN.md §8)."""

    subject = StringField(
        "Subject", filters=[strip_filter],
        validators=[DataRequired("Enter a subject."),
                    at_most(services.SUBJECT_MAX_LENGTH),
                    no_control_characters, single_line],
    )
    description = TextAreaField(
        "Describe your request", filters=[normalize_newlines, strip_filter],
        validators=[DataRequired("Describe your request."),
                    at_most(services.DESCRIPTION_MAX_LENGTH),
                    no_control_characters],
    )
    submit = SubmitField("Send to support")


class TicketUpdateForm(FlaskForm):
    """Staff update of a ticket: status (open / in_progress / resolved; anything else is a form
    error) and an optional note (0–2000) that the ticket's customer will read."""

    status = SelectField("Status", choices=STATUS_CHOICES, validators=[InputRequired("Choose a status.")])
    note = TextAreaField(
        "Reply to the customer (optional)", filters=[normalize_newlines, strip_filter],
        validators=[at_most(services.NOTE_MAX_LENGTH),
                    no_control_characters],
    )
    submit = SubmitField("Save")


class TicketFilterForm(FlaskForm):
    """Query-string filter of the staff list: status ("" for all); an unknown value is an error."""

    class Meta:
        csrf = False

    status = SelectField("Status", choices=[SelectChoice("", "All"), *STATUS_CHOICES], default="")
