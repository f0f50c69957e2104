"""Banking forms: the shape of input. Ownership, status and balance are the service's rules."""

from __future__ import annotations

from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, HiddenField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length, Optional, Regexp

from ..forms_common import (  # noqa: F401  (TransactionFilterForm is re-exported for the routes)
    AmountField,
    TransactionFilterForm,
    ascii_email,
    at_most,
    no_control_characters,
    phone_number,
    printable_only,
    single_line,
    strip_filter,
)
from ..models import ACCOUNT_TYPES, ROLES, User
from ..routing import parse_id
from ..widgets import SelectField
from . import services



def _coerce_id(value) -> int:
    """Coerce a select value to an int id; WTForms turns the ValueError into 'Not a valid choice'."""
    id_ = parse_id(value if isinstance(value, int) else str(value))
    if id_ is None:
        raise ValueError("not an id")
    return id_


class OpenAccountForm(FlaskForm):
    """type (checking/savings), opening_balance; admins also choose owner_user_id."""

    type = SelectField("Account type", choices=[SelectChoice(t, t.capitalize()) for t in ACCOUNT_TYPES])
    opening_balance = AmountField("Opening deposit", maximum_setting="MAX_OPENING_DEPOSIT", allow_zero=True,
                                  default="0.00")
    owner_user_id = SelectField("Owner", coerce=_coerce_id, validate_choice=True)
    submit = SubmitField("Open account")

    @classmethod
    def for_user(cls, user: User) -> OpenAccountForm:
        """The form for `user`: admins pick an active customer; for anyone else the owner field
        is removed, so a posted owner_user_id is ignored (decided by role, spec section 10)."""
        form = cls()
        if user.role == "admin":
            form.owner_user_id.choices = [
                SelectChoice(customer.id, f"{customer.full_name} <{customer.email}>") for customer in services.list_active_customers()
            ]
        else:
            del form.owner_user_id
        return form


class _TransferForm(FlaskForm):
    source_account = SelectField("From account", coerce=_coerce_id, validate_choice=True)
    amount = AmountField("Amount", maximum_setting="MAX_TRANSFER_AMOUNT")
    description = StringField(
        "Description", filters=[strip_filter],
        validators=[Optional(), at_most(140), no_control_characters, single_line],
    )
    idempotency_key = HiddenField(
        validators=[DataRequired("The form is incomplete; reload the page and try again."),
                    Regexp(f"^{services.IDEMPOTENCY_KEY_PATTERN}$", message="The form is invalid; reload the page.")]
    )
    submit = SubmitField("Transfer")
    reason_required = False

    def validate(self, extra_validators=None) -> bool:
        """Validate the fields, then require a description when an admin acts for a customer.

        The reason check can't be an inline `validate_description`: the field's Optional()
        validator stops the chain on empty input, so it would never run on the case it guards.
        """
        valid = super().validate(extra_validators)
        if self.reason_required and not (self.description.data or "").strip():
            self.description.errors = [*self.description.errors,
                                       "As an administrator, give the reason for this transfer."]
            return False
        return valid

    def _setup(self, accounts: list[services.AccountSummary], reason_required: bool) -> None:
        self.reason_required = reason_required
        self.source_account.choices = [SelectChoice(a.id, services.account_label(a)) for a in accounts]
        if not self.is_submitted():
            self.idempotency_key.data = services.new_idempotency_key(current_user.id)


class InternalTransferForm(_TransferForm):
    """source_account, target_account (both the owner's), amount, description, idempotency_key."""

    target_account = SelectField("To account", coerce=_coerce_id, validate_choice=True)

    @classmethod
    def for_owner(cls, accounts: list[services.AccountSummary], *, reason_required: bool = False) -> InternalTransferForm:
        """Form listing `accounts` (the owner's, frozen ones included) in both selects; a new
        form preselects the second account as the target, so the two selects don't start on the
        same account (which the form would refuse)."""
        form = cls()
        form._setup(accounts, reason_required)
        form.target_account.choices = list(form.source_account.choices)
        if not form.is_submitted() and form.target_account.data is None and len(accounts) > 1:
            form.target_account.data = accounts[1].id
        return form


class ExternalTransferForm(_TransferForm):
    """source_account (the owner's), target_account_number (12 digits), amount, description, key."""

    target_account_number = StringField(
        "To account number", filters=[strip_filter],
        validators=[InputRequired("Enter the 12-digit account number."),
                    Regexp(r"^[0-9]{12}$", message="An account number is exactly 12 digits.")],
    )

    @classmethod
    def for_owner(cls, accounts: list[services.AccountSummary], *, reason_required: bool = False) -> ExternalTransferForm:
        """Form listing `accounts` (the owner's, frozen ones included) as sources."""
        form = cls()
        form._setup(accounts, reason_required)
        return form


class OwnerPickerForm(FlaskForm):
    """GET form for an admin to choose whose accounts a transfer form lists (`owner_user_id`)."""

    class Meta:
        csrf = False

    owner_user_id = SelectField("Customer", coerce=_coerce_id, validators=[InputRequired()])
    submit = SubmitField("Choose")


class UserEditForm(FlaskForm):
    """Admin edit of a user: full_name, email, phone, role (select of the four), is_active."""

    full_name = StringField(
        "Full name", filters=[strip_filter],
        validators=[DataRequired("Enter the full name."), at_most(100, shortest=1), no_control_characters, single_line],
    )
    email = EmailField(
        "Email", filters=[strip_filter],
        validators=[DataRequired("Enter the email address."), at_most(254), printable_only,
                    Email("Enter a valid email address.", check_deliverability=False), ascii_email],
    )
    phone = StringField("Phone", filters=[strip_filter], validators=[DataRequired("Enter a phone number."),
                                                              at_most(20), phone_number])
    role = SelectField("Role", choices=[SelectChoice(r, r.capitalize()) for r in ROLES], validate_choice=True)
    is_active = BooleanField("Active (may sign in)")
    submit = SubmitField("Save")


class AccountSearchForm(FlaskForm):
    """GET search of the admin accounts list by account number (digits)."""

    class Meta:
        csrf = False

    account_number = StringField(
        "Account number", filters=[strip_filter],
        validators=[Optional(), Length(max=12, message="An account number has 12 digits; enter at most 12."),
                    Regexp(r"^[0-9]*$", message="Use digits only.")],
    )
