"""Audit forms: the shape of the auditor's query-string filters (GET, no CSRF token needed)."""

from __future__ import annotations

import re

from flask_wtf import FlaskForm
from wtforms import DateField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Optional, StopValidation

from ..forms_common import NO_SUCH_DATE_MESSAGE, TransactionFilterForm, ascii_date, date_range_in_order, strip_filter
from ..routing import parse_id
from ..widgets import SelectField
from .services import ACTIONS

USER_ID_PATTERN = re.compile(r"[0-9]{1,18}")
ACCOUNT_NUMBER_PATTERN = re.compile(r"[0-9]{12}")


def _pattern(pattern: re.Pattern, message: str):
    """A validator that requires the whole (trimmed) value to match `pattern`, ASCII only.

    `re.fullmatch` rather than WTForms' Regexp: no `$` that lets a trailing newline through, and
    explicit `[0-9]` rather than `\\d`, which also matches non-ASCII digits.
    """

    def validate(form, field) -> None:
        if field.data and not pattern.fullmatch(field.data):
            raise StopValidation(message)

    return validate


class AuditLogFilterForm(FlaskForm):
    """Query-string filters of /audit/logs: action (one of ACTIONS, or "" for any), user_id
    (digits), date_from / date_to (ASCII YYYY-MM-DD, UTC days, inclusive). Any other action is a
    form error ("Not a valid choice."), never passed to the query."""

    class Meta:
        csrf = False

    action = SelectField("Action", choices=[SelectChoice("", "Any")] + [SelectChoice(a, a) for a in ACTIONS],
                         validators=[Optional()])
    user_id = StringField("User id", filters=[strip_filter],
                          validators=[Optional(), _pattern(USER_ID_PATTERN, "A user id is digits only, at most 18 of them.")])
    date_from = DateField("From (UTC)", format="%Y-%m-%d", validators=[ascii_date, Optional()],
                        invalid_value_message=NO_SUCH_DATE_MESSAGE)
    date_to = DateField("To (UTC)", format="%Y-%m-%d", validators=[ascii_date, Optional(), date_range_in_order],
                        invalid_value_message=NO_SUCH_DATE_MESSAGE)

    def filter_values(self) -> dict:
        """The validated values as keyword arguments of audit's AuditFilters."""
        return {
            "action": self.action.data or None,
            # A number outside the id range names no user: 0 matches no row (and, unlike the
            # number itself, fits the 32-bit column on PostgreSQL).
            "user_id": (parse_id(self.user_id.data) or 0) if self.user_id.data else None,
            "date_from": self.date_from.data, "date_to": self.date_to.data,
        }


class AuditTransactionFilterForm(TransactionFilterForm):
    """The customer's transaction filters plus `account_number` (exactly 12 ASCII digits)."""

    account_number = StringField(
        "Account number", filters=[strip_filter],
        validators=[Optional(), _pattern(ACCOUNT_NUMBER_PATTERN, "An account number is exactly 12 digits.")],
    )

    def filter_values(self) -> dict:
        """The validated values as keyword arguments of banking's TransactionFilters."""
        return super().filter_values() | {"account_number": self.account_number.data or None}
