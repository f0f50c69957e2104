"""Banking routes: parse the form, call one service, flash, redirect (views stay thin)."""

from __future__ import annotations

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from ..errors import DomainError, DuplicateTransferError
from ..extensions import limiter, rate_limit_key
from ..models import ROLES
from ..pagination import page_number
from ..routing import parse_id
from ..security import roles_required
from . import banking_bp, services
from .forms import ExternalTransferForm, InternalTransferForm, OpenAccountForm, OwnerPickerForm, TransactionFilterForm


def _transfer_limit() -> str:
    return current_app.config["TRANSFER_RATE_LIMIT"]


# TRANSFER_RATE_LIMIT counts a user's transfer POSTs on both forms together: one shared scope,
# so the internal and the external form don't each get the whole allowance.
_transfer_posts = limiter.shared_limit(_transfer_limit, scope="transfer", key_func=rate_limit_key, methods=["POST"])


def _transfer_owner():
    """Whose accounts the transfer form lists: the customer themself, or for an admin the
    customer, active or deactivated, named by `?owner_user_id=` (None until one is chosen; 404
    if not a customer)."""
    if current_user.role == "customer":
        return current_user
    raw = request.args.get("owner_user_id")
    if raw is None:
        return None
    owner_id = parse_id(raw)
    owner = services.find_customer(owner_id, active_only=False) if owner_id is not None else None
    if owner is None:
        abort(404)
    return owner


def _owner_picker(title: str):
    form = OwnerPickerForm(request.args)
    form.owner_user_id.choices = [
        SelectChoice(c.id, f"{c.full_name} <{c.email}>" + ("" if c.is_active else " (deactivated)"))
        for c in services.list_customers(active_only=False)]
    return render_template("banking/choose_owner.html", form=form, title=title)


@banking_bp.route("/dashboard")
@roles_required(*ROLES)
def dashboard():
    """Customers: their accounts and the last 5 entries of each. Staff: links to their areas."""
    if current_user.role != "customer":
        return render_template("banking/staff_dashboard.html")
    accounts = services.list_accounts(current_user.id)
    return render_template("banking/dashboard.html", accounts=accounts, recent=services.recent_transactions(accounts))


@banking_bp.route("/open-account", methods=["GET", "POST"])
@roles_required("customer", "admin")
def open_account():
    """Open an account with an opening deposit; admins choose the owning customer."""
    form = OpenAccountForm.for_user(current_user)
    if form.validate_on_submit():
        owner_id = form.owner_user_id.data if current_user.role == "admin" else None
        try:
            account = services.open_account(current_user, form.type.data, form.opening_balance.data, owner_id)
        except DomainError as exc:
            return render_template("banking/open_account.html", form=form, error=str(exc)), 400
        flash(f"Account {account.account_number} opened.", "success")
        return redirect(url_for("banking.dashboard"))
    return render_template("banking/open_account.html", form=form), 400 if form.errors else 200


SUBMITTED_TRANSFER_FIELDS = ("source_account", "target_account", "target_account_number", "amount")


def _transfer_view(form_class, template: str, kind: str, run):
    """Shared body of the two transfer views: owner choice, form, service call, outcome.
    A refused form is audited too (TRANSFER_FAILED), like a refusal by the service."""
    owner = _transfer_owner()
    if owner is None:
        page = _owner_picker("Choose the customer whose account sends the money")
        # A transfer posted before a customer was chosen is refused, not silently dropped.
        return (page, 400) if request.method == "POST" else page
    form = form_class.for_owner(services.list_accounts(owner.id), reason_required=current_user.role == "admin")
    if form.validate_on_submit():
        try:
            reference = run(form, owner)
        except DuplicateTransferError as exc:
            flash(str(exc), "info")
            return redirect(url_for("banking.dashboard"))
        except DomainError as exc:
            return render_template(template, form=form, owner=owner, error=str(exc)), 400
        flash(f"Transfer complete. Reference {reference}.", "success")
        return redirect(url_for("banking.dashboard"))
    if form.is_submitted():
        services.record_refused_transfer_form(
            current_user, owner.id, kind, list(form.errors),
            {name: request.form[name] for name in SUBMITTED_TRANSFER_FIELDS if name in request.form},
            request.form.get("description", ""),
        )
    return render_template(template, form=form, owner=owner), 400 if form.errors else 200


@banking_bp.route("/transfer/internal", methods=["GET", "POST"])
@roles_required("customer", "admin")
@_transfer_posts
def transfer_internal():
    """Move money between two accounts of the same customer."""
    return _transfer_view(InternalTransferForm, "banking/transfer_internal.html", "internal", lambda form, owner:
                          services.transfer_internal(current_user, owner.id, form.source_account.data,
                                                     form.target_account.data, form.amount.data,
                                                     form.description.data or "", form.idempotency_key.data))


@banking_bp.route("/transfer/external", methods=["GET", "POST"])
@roles_required("customer", "admin")
@_transfer_posts
def transfer_external():
    """Move money to any active account, named by its 12-digit number."""
    return _transfer_view(ExternalTransferForm, "banking/transfer_external.html", "external", lambda form, owner:
                          services.transfer_external(current_user, owner.id, form.source_account.data,
                                                     form.target_account_number.data, form.amount.data,
                                                     form.description.data or "", form.idempotency_key.data))


# The customer filters that the staff view understands too (DESIGN.md section 6).
STAFF_VIEW_FILTERS = ("date_from", "date_to", "type", "min_amount", "max_amount")


@banking_bp.route("/transactions")
@roles_required("customer", "admin", "auditor")
def transactions():
    """A customer's ledger entries, filtered and paginated; admins and auditors go to the audit view."""
    if current_user.role in ("admin", "auditor"):
        if "audit.transactions" in current_app.view_functions:
            # Only the filters are carried over, by name: url_for also reads keys such as
            # `_external`, `_scheme` and `endpoint`, which must never come from the query string.
            carried = {name: request.args[name] for name in STAFF_VIEW_FILTERS if name in request.args}
            return redirect(url_for("audit.transactions", **carried))
        abort(404)
    form = TransactionFilterForm(request.args)
    if not form.validate():
        return render_template("banking/transactions.html", form=form, page=None, filters_invalid=True), 400
    page = services.list_customer_transactions(
        current_user.id, services.TransactionFilters(**form.filter_values()), page_number()
    )
    return render_template("banking/transactions.html", form=form, page=page, filters_invalid=False)
