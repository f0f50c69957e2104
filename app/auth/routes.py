"""Identity routes: parse the form, call one service, flash, redirect (views stay thin)."""

from __future__ import annotations

import logging
import time

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..extensions import db, limiter
from ..forms_common import EmptyForm
from ..security import client_ip, is_safe_next_url
from . import auth_bp, services
from . import mfa
from .forms import ChangePasswordForm, LoginForm, MfaCodeForm, MfaDisableForm, ProfileForm, RegisterForm

log = logging.getLogger(__name__)

# Pages a user who must change their password may still open (DESIGN.md section 5).
FORCED_CHANGE_MESSAGE = "You must change your password before continuing."
PASSWORD_CHANGE_ALLOWED = frozenset({"auth.change_password", "auth.logout", "static", "bootstrap.static"})
# Pages staff without a second factor may still open while REQUIRE_STAFF_MFA is on.
MFA_ENROLMENT_ALLOWED = PASSWORD_CHANGE_ALLOWED | {"auth.mfa_setup"}
STAFF_MFA_MESSAGE = "Staff accounts must turn on two-step sign-in before continuing."
# Session keys of the sign-in between a correct password and the code, and of an offered key.
MFA_PENDING = "mfa_pending"
MFA_OFFERED = "mfa_offered_key"


def _start_session(user) -> None:
    """New session and CSRF token at sign-in (OWASP ASVS 3.2.1); permanent for the idle timeout."""
    session.clear()
    login_user(user)
    session.permanent = True
    session["login_at"] = time.time()


def _renew_session(user) -> None:
    """New session and CSRF token when `user`'s session token rotated (password changed,
    two-step sign-in turned on or off), as at sign-in (OWASP ASVS 3.2.1): nothing from before
    carries over but the sign-in time, so the 12-hour absolute limit is not extended."""
    login_at = session.get("login_at")
    _start_session(user)
    session["login_at"] = login_at


def _end_session() -> None:
    logout_user()
    session.clear()


@auth_bp.before_app_request
def enforce_session_rules():
    """Absolute 12-hour limit, then the forced password change, for every signed-in request."""
    if not current_user.is_authenticated:
        return None
    started = session.get("login_at")
    limit = current_app.config["SESSION_ABSOLUTE_LIFETIME"].total_seconds()
    if not isinstance(started, (int, float)) or time.time() - started > limit:
        _end_session()
        flash("Your session has expired. Please log in again.", "warning")
        return redirect(url_for("auth.login"))
    if current_user.must_change_password and request.endpoint not in PASSWORD_CHANGE_ALLOWED:
        _flash_once(FORCED_CHANGE_MESSAGE)
        return redirect(url_for("auth.change_password"))
    if (current_app.config["REQUIRE_STAFF_MFA"] and current_user.is_staff and not current_user.mfa_enabled
            and request.endpoint not in MFA_ENROLMENT_ALLOWED):
        _flash_once(STAFF_MFA_MESSAGE)
        return redirect(url_for("auth.mfa_setup"))
    return None


def _retry_after(exc: services.LoginThrottledError) -> dict[str, str]:
    """The Retry-After header of a 429 refused by the login throttle: the seconds until it
    lifts (RFC 6585 4)."""
    return {"Retry-After": str(exc.retry_after)}


def _flash_once(message: str) -> None:
    if message not in (text for _, text in session.get("_flashes", [])):
        flash(message, "warning")


@auth_bp.route("/register", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["REGISTER_RATE_LIMIT"], methods=["POST"])
def register():
    """Create a customer account; redirects to the login page (registration does not log in)."""
    if current_user.is_authenticated:
        return redirect(url_for("banking.dashboard"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            services.register_customer(form.full_name.data, form.email.data, form.phone.data, form.password.data)
        except services.DuplicateEmailError as exc:
            form.email.errors.append(str(exc))
        except services.PasswordPolicyError as exc:
            form.password.errors.append(str(exc))
        else:
            flash("Your account was created. Please log in.", "success")
            return redirect(url_for("auth.login"))
    return render_template("auth/register.html", form=form), 400 if form.errors else 200


def _log_refused_sign_in(_limit) -> None:
    """Flask-Limiter's on_breach for LOGIN_RATE_LIMIT on the two sign-in steps: LOGIN_THROTTLED
    for the POST it refuses with 429 (DESIGN.md section 5b: a Flask-Limiter 429 on login is
    logged too), within LOGIN_THROTTLED_RATE_LIMIT (services.log_refused_sign_in). The
    password step's row holds the email tried (attempted_email) and, when it is a user's, that
    user's id; the code step's row is under the user whose password was accepted. _limit: the
    breached limit (flask_limiter.RequestLimit), not used.

    Never raises: a row that can't be written (the database down or locked) is reported as a
    warning and the transaction rolled back, and the 429 is answered all the same; a refusal
    must not turn into a 500.
    """
    try:
        if request.endpoint == "auth.login":
            email = services.attempted_email(request.form.get("email"))
            user = services.find_user_by_email(email)
            services.log_refused_sign_in({"reason": "request_rate_limit", "email": email},
                                         user_id=user.id if user else None)
        else:
            pending = session.get(MFA_PENDING)
            user_id = pending.get("user_id") if isinstance(pending, dict) else None
            services.log_refused_sign_in({"reason": "request_rate_limit", "during": "mfa"},
                                         user_id=user_id if isinstance(user_id, int) else None)
    except Exception:  # noqa: BLE001 - any failure to write the row: the 429 still goes out
        log.warning("a sign-in refused by the request rate limit could not be logged", exc_info=True)
        db.session.rollback()


@auth_bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"], on_breach=_log_refused_sign_in)
def login():
    """Sign in; redirects to a local `next` or the dashboard. 400 on failure, 429 when throttled."""
    if current_user.is_authenticated:
        return redirect(url_for("banking.dashboard"))
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400 if form.errors else 200
    try:
        user = services.authenticate(form.email.data, form.password.data, client_ip())
    except services.LoginThrottledError as exc:
        return render_template("auth/login.html", form=form, login_error=str(exc)), 429, _retry_after(exc)
    except services.InvalidCredentialsError as exc:
        return render_template("auth/login.html", form=form, login_error=str(exc)), 400
    target = request.args.get("next")
    target = target if is_safe_next_url(target) else None
    if user.mfa_enabled:
        # Password accepted; the sign-in completes on /auth/mfa. Nothing about it is in the
        # session until then but who, under which session token, since when, and where to go.
        session.clear()
        session[MFA_PENDING] = {"user_id": user.id, "token": user.session_token, "at": time.time(), "next": target}
        return redirect(url_for("auth.mfa_verify"))
    return _signed_in(user, target)


def _signed_in(user, target: str | None):
    _start_session(user)
    flash(f"Welcome, {user.full_name}.", "success")
    return redirect(target or url_for("banking.dashboard"))


def _pending_mfa() -> dict | None:
    """The password step's record, if it is recent enough (MFA_PENDING_SECONDS) to finish."""
    pending = session.get(MFA_PENDING)
    if not isinstance(pending, dict) or not isinstance(pending.get("at"), (int, float)):
        return None
    if time.time() - pending["at"] > current_app.config["MFA_PENDING_SECONDS"]:
        return None
    return pending


@auth_bp.route("/mfa", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"], on_breach=_log_refused_sign_in)
def mfa_verify():
    """Second sign-in step: the one-time code after a correct password (DESIGN.md section 5).
    Without a recent password step it sends the visitor back to the login page."""
    if current_user.is_authenticated:
        return redirect(url_for("banking.dashboard"))
    pending = _pending_mfa()
    if pending is None:
        session.pop(MFA_PENDING, None)
        flash("Please log in again.", "warning")
        return redirect(url_for("auth.login"))
    form = MfaCodeForm()
    if not form.validate_on_submit():
        return render_template("auth/mfa.html", form=form), 400 if form.errors else 200
    try:
        user = services.complete_mfa_sign_in(pending["user_id"], pending["token"], form.code.data, client_ip())
    except services.LoginThrottledError as exc:
        return render_template("auth/mfa.html", form=form, mfa_error=str(exc)), 429, _retry_after(exc)
    except services.MfaCodeError as exc:
        return render_template("auth/mfa.html", form=form, mfa_error=str(exc)), 400
    except services.InvalidCredentialsError:
        session.pop(MFA_PENDING, None)
        flash("Please log in again.", "warning")
        return redirect(url_for("auth.login"))
    return _signed_in(user, pending.get("next"))


@auth_bp.route("/mfa/setup", methods=["GET", "POST"])
@login_required
def mfa_setup():
    """Enrol an authenticator: GET shows a new key as a QR code and as text; POST `code` turns
    two-step sign-in on. Once on, the key is never shown again."""
    if current_user.mfa_enabled:
        if request.method == "POST":
            flash("Two-step sign-in is already on.", "info")
            return redirect(url_for("auth.mfa_setup"))
        return render_template("auth/mfa_enabled.html")
    secret = _offered_key()
    form = MfaCodeForm()
    if form.validate_on_submit():
        try:
            services.enrol_mfa(current_user, secret, form.code.data)
        except services.MfaCodeError as exc:
            form.code.errors.append(str(exc))
        else:
            _renew_session(current_user._get_current_object())  # the token rotated; drops MFA_OFFERED
            flash("Two-step sign-in is on. You will be asked for a code each time you log in.", "success")
            return redirect(url_for("banking.dashboard"))
    uri = mfa.provisioning_uri(secret, current_user.email)
    return render_template("auth/mfa_setup.html", form=form, qr_code=mfa.qr_code_data_uri(uri),
                           key_text=mfa.grouped(secret)), 400 if form.errors else 200


def _offered_key() -> str:
    """The key offered to this user at enrolment, kept sealed in the session across the GET and
    the POST (and reloads); a new one when there is none or it no longer opens."""
    context = services.enrolment_context(current_user)
    sealed = session.get(MFA_OFFERED)
    if isinstance(sealed, str):
        try:
            return mfa.decrypt_secret(sealed, context)
        except mfa.MfaKeyError:
            pass
    secret = mfa.new_secret()
    session[MFA_OFFERED] = mfa.encrypt_secret(secret, context)
    return secret


@auth_bp.route("/mfa/disable", methods=["GET", "POST"])
@login_required
def mfa_disable():
    """Turn two-step sign-in off after re-entering the password (POST `password`)."""
    if not current_user.mfa_enabled:
        flash("Two-step sign-in is not on.", "info")
        return redirect(url_for("auth.mfa_setup"))
    form = MfaDisableForm()
    status, headers = 400, {}
    if form.validate_on_submit():
        try:
            services.disable_mfa(current_user, form.password.data, client_ip())
        except services.LoginThrottledError as exc:
            form.password.errors.append(str(exc))
            status, headers = 429, _retry_after(exc)
        except (services.WrongPasswordError, services.MfaStateError) as exc:
            form.password.errors.append(str(exc))
            status = 400
        else:
            _renew_session(current_user._get_current_object())  # the session token rotated
            flash("Two-step sign-in is off. Your other sessions have been signed out.", "success")
            return redirect(url_for("auth.profile"))
    return render_template("auth/mfa_disable.html", form=form), status if form.errors else 200, headers


@auth_bp.route("/logout", methods=["GET", "POST"])
def logout():
    """GET shows a confirm button; POST (CSRF-checked) ends every session of the user.
    Someone not signed in goes to the login page with no `next` (login_required would bring
    them back here, to sign out again, right after signing in)."""
    if not current_user.is_authenticated:
        return redirect(url_for("auth.login"))
    form = EmptyForm()
    if form.validate_on_submit():
        services.logout(current_user)
        _end_session()
        flash("You have been logged out.", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/logout.html", form=form)


@auth_bp.route("/profile", methods=["GET", "POST"])
@login_required
def profile():
    """Edit one's own full_name and phone."""
    # Pre-filled from the user on GET only, so a POST missing a field is an error, not a no-op.
    form = ProfileForm() if request.method == "POST" else ProfileForm(obj=current_user)
    if form.validate_on_submit():
        changed = services.update_profile(current_user, form.full_name.data, form.phone.data)
        flash("Your profile was updated." if changed else "Nothing to change.", "success")
        return redirect(url_for("auth.profile"))
    return render_template("auth/profile.html", form=form), 400 if form.errors else 200


@auth_bp.route("/change-password", methods=["GET", "POST"])
@login_required
def change_password():
    """Change one's password; this session stays signed in with the new token, others end."""
    form = ChangePasswordForm()
    status, headers = 400, {}
    if form.validate_on_submit():
        try:
            services.change_password(current_user, form.current_password.data, form.new_password.data, client_ip())
        except services.LoginThrottledError as exc:
            form.current_password.errors.append(str(exc))
            status, headers = 429, _retry_after(exc)
        except services.WrongPasswordError as exc:
            form.current_password.errors.append(str(exc))
        except services.PasswordPolicyError as exc:
            form.new_password.errors.append(str(exc))
        else:
            _renew_session(current_user._get_current_object())  # the session token rotated
            flash("Your password was changed. Other sessions have been signed out.", "success")
            return redirect(url_for("banking.dashboard"))
    return render_template("auth/change_password.html", form=form), status if form.errors else 200, headers
