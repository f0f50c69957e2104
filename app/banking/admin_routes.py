"""Administration pages under /banking/admin (spec section 8): users, accounts, freezes.

Changing a user is the identity service's job (auth/services.py); the views only parse, call,
flash and redirect.
"""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth import services as identity
from ..errors import AccountNotFoundError, DomainError
from ..pagination import page_number
from ..security import roles_required
from . import banking_bp, services
from .forms import AccountSearchForm, UserEditForm


@banking_bp.route("/admin/users")
@roles_required("admin")
def admin_users():
    """All users, newest first, with role and active state."""
    return render_template("admin/users_list.html", page=identity.list_users(page_number()))


@banking_bp.route("/admin/users/<id:user_id>/edit", methods=["GET", "POST"])
@roles_required("admin")
def admin_user_edit(user_id: int):
    """Edit a user's details, role and active state. :raise 404: no such user."""
    try:
        user = identity.get_user_for_admin(user_id)
    except identity.UserNotFoundError:
        abort(404)
    form = UserEditForm() if request.method == "POST" else UserEditForm(obj=user)
    if form.validate_on_submit():
        try:
            changed = identity.update_user(
                current_user, user_id, full_name=form.full_name.data, email=form.email.data,
                phone=form.phone.data, role=form.role.data, is_active=form.is_active.data,
            )
        except identity.DuplicateEmailError as exc:
            form.email.errors.append(str(exc))
        except DomainError as exc:
            return render_template("admin/user_edit.html", form=form, user=user, error=str(exc)), 400
        else:
            flash(f"User {user_id} updated." if changed else "Nothing to change.", "success")
            return redirect(url_for("banking.admin_users"))
    return render_template("admin/user_edit.html", form=form, user=user), 400 if form.errors else 200


@banking_bp.route("/admin/accounts")
@roles_required("admin")
def admin_accounts():
    """All accounts with owner, type, status and balance; `?account_number=` searches."""
    form = AccountSearchForm(request.args)
    if not form.validate():
        return render_template("admin/accounts_list.html", form=form, page=None), 400
    page = services.list_all_accounts(page_number(), form.account_number.data)
    return render_template("admin/accounts_list.html", form=form, page=page)


def _change_status(account_id: int, change, done: str, unchanged: str):
    try:
        changed = change(current_user, account_id)
    except AccountNotFoundError:
        abort(404)
    except DomainError as exc:
        flash(str(exc), "danger")
        return redirect(url_for("banking.admin_accounts"))
    flash(done if changed else unchanged, "success" if changed else "info")
    return redirect(url_for("banking.admin_accounts"))


@banking_bp.route("/admin/accounts/<id:account_id>/freeze", methods=["POST"])
@roles_required("admin")
def admin_freeze(account_id: int):
    """Freeze an account (CSRF-checked POST). :raise 404: no such account."""
    return _change_status(account_id, services.freeze_account,
                          "Account frozen.", "The account was already frozen; nothing changed.")


@banking_bp.route("/admin/accounts/<id:account_id>/unfreeze", methods=["POST"])
@roles_required("admin")
def admin_unfreeze(account_id: int):
    """Unfreeze an account (CSRF-checked POST). :raise 404: no such account."""
    return _change_status(account_id, services.unfreeze_account,
                          "Account unfrozen.", "The account was already active; nothing changed.")
