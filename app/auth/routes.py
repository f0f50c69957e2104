"""Identity routes: parse the form, call one service, flash, redirect (views stay thin)."""

from __future__ import annotations

import time

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..extensions import limiter
from ..forms_common import EmptyForm
from ..security import client_ip, is_safe_next_url
from . import auth_bp, services
from .forms import ChangePasswordForm, LoginForm, ProfileForm, RegisterForm

# Pages a user who must change their password may still open (DESIGN.md section 5).
FORCED_CHANGE_MESSAGE = "You must change your password before continuing."
PASSWORD_CHANGE_ALLOWED = frozenset({"auth.change_password", "auth.logout", "static", "bootstrap.static"})


def _start_session(user) -> None:
    """New session and CSRF token at sign-in (OWASP ASVS 3.2.1); permanent for the idle timeout."""
    session.clear()
    login_user(user)
    session.permanent = True
    session["login_at"] = time.time()


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
        if FORCED_CHANGE_MESSAGE not in (message for _, message in session.get("_flashes", [])):
            flash(FORCED_CHANGE_MESSAGE, "warning")
        return redirect(url_for("auth.change_password"))
    return None


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


@auth_bp.route("/login", methods=["GET", "POST"])
@limiter.limit(lambda: current_app.config["LOGIN_RATE_LIMIT"], methods=["POST"])
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
        return render_template("auth/login.html", form=form, login_error=str(exc)), 429
    except services.InvalidCredentialsError as exc:
        return render_template("auth/login.html", form=form, login_error=str(exc)), 400
    _start_session(user)
    flash(f"Welcome, {user.full_name}.", "success")
    target = request.args.get("next")
    return redirect(target if is_safe_next_url(target) else url_for("banking.dashboard"))


@auth_bp.route("/logout", methods=["GET", "POST"])
@login_required
def logout():
    """GET shows a confirm button; POST (CSRF-checked) ends every session of the user."""
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
    status = 400
    if form.validate_on_submit():
        try:
            services.change_password(current_user, form.current_password.data, form.new_password.data, client_ip())
        except services.LoginThrottledError as exc:
            form.current_password.errors.append(str(exc))
            status = 429
        except services.WrongPasswordError as exc:
            form.current_password.errors.append(str(exc))
        except services.PasswordPolicyError as exc:
            form.new_password.errors.append(str(exc))
        else:
            login_user(current_user._get_current_object())
            flash("Your password was changed. Other sessions have been signed out.", "success")
            return redirect(url_for("banking.dashboard"))
    return render_template("auth/change_password.html", form=form), status if form.errors else 200
