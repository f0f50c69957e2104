"""Identity forms: the shape of input. Business rules live in auth/services.py."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, EqualTo, InputRequired, Length, Regexp, ValidationError

from ..forms_common import (
    ascii_email,
    at_most,
    no_control_characters,
    phone_number,
    printable_only,
    single_line,
    strip_filter,
)
from . import services

PASSWORD_LENGTH = Length(max=services.PASSWORD_MAX_LENGTH * 4, message="That password is far too long.")


def _name_field() -> StringField:
    return StringField(
        "Full name",
        filters=[strip_filter],
        validators=[DataRequired("Enter your full name."), at_most(100, shortest=1), no_control_characters, single_line],
    )


def _phone_field() -> StringField:
    return StringField("Phone", filters=[strip_filter], validators=[DataRequired("Enter a phone number."), at_most(20), phone_number])


class RegisterForm(FlaskForm):
    """New customer: full_name, email, phone, password, confirm_password (DESIGN.md section 6)."""

    full_name = _name_field()
    email = EmailField(
        "Email",
        filters=[strip_filter],
        validators=[DataRequired("Enter your email address."), at_most(254), printable_only,
                    Email("Enter a valid email address.", check_deliverability=False), ascii_email],
    )
    phone = _phone_field()
    password = PasswordField("Password", validators=[InputRequired("Choose a password."), PASSWORD_LENGTH])
    confirm_password = PasswordField(
        "Confirm password",
        validators=[InputRequired("Repeat the password."), EqualTo("password", "The passwords do not match.")],
    )
    submit = SubmitField("Create account")

    def validate_email(self, field) -> None:
        if services.find_user_by_email(field.data) is not None:
            raise ValidationError(services.DuplicateEmailError.default_message)

    def validate_password(self, field) -> None:
        problem = services.password_problem(field.data, email=self.email.data or "", full_name=self.full_name.data or "")
        if problem:
            raise ValidationError(problem)


class LoginForm(FlaskForm):
    """Sign-in: email and password. No format check on email, so every failure looks the same."""

    email = StringField("Email", filters=[strip_filter],
                        validators=[DataRequired("Enter your email."), at_most(320), printable_only])
    password = PasswordField("Password", validators=[InputRequired("Enter your password."), PASSWORD_LENGTH])
    submit = SubmitField("Log in")


class ProfileForm(FlaskForm):
    """A user's own details: only full_name and phone (email and role are the admin's)."""

    full_name = _name_field()
    phone = _phone_field()
    submit = SubmitField("Save")


class ChangePasswordForm(FlaskForm):
    """current_password, new_password, confirm_password; the policy is checked by the service."""

    current_password = PasswordField(
        "Current password", validators=[InputRequired("Enter your current password."), PASSWORD_LENGTH]
    )
    new_password = PasswordField("New password", validators=[InputRequired("Choose a new password."), PASSWORD_LENGTH])
    confirm_password = PasswordField(
        "Confirm new password",
        validators=[InputRequired("Repeat the new password."), EqualTo("new_password", "The passwords do not match.")],
    )
    submit = SubmitField("Change password")


def _digits_only(value: str | None) -> str | None:
    """Drop the spaces people type between the two halves of a code ("123 456")."""
    return value.replace(" ", "").strip() if isinstance(value, str) else value


class MfaCodeForm(FlaskForm):
    """`code`: the 6-digit one-time code from an authenticator app (enrolment and sign-in)."""

    code = StringField(
        "Code from your authenticator app",
        filters=[_digits_only],
        validators=[DataRequired("Enter the 6-digit code."),
                    Regexp(r"[0-9]{6}\Z", message="The code is 6 digits, 0 to 9.")],
    )
    submit = SubmitField("Confirm")


class MfaDisableForm(FlaskForm):
    """`password`: re-authentication before two-step sign-in is turned off."""

    password = PasswordField("Password", validators=[InputRequired("Enter your password."), PASSWORD_LENGTH])
    submit = SubmitField("Turn off two-step sign-in")
