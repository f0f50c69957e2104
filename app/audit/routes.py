"""Audit routes (auditor and admin): the audit log, its integrity check and every ledger entry.

Read-only: no route here edits or deletes anything. Every visit, including one whose filters
are refused, writes an AUDIT_VIEWED row (DESIGN.md section 4; PCI DSS 10.2.1.3).
"""

from __future__ import annotations

from flask import render_template, request

from ..banking.services import TransactionFilters, list_all_transactions
from ..pagination import cursor
from ..security import log_standalone_event, roles_required
from . import audit_bp, services  # audit_bp is re-exported for the app factory
from .forms import AuditLogFilterForm, AuditTransactionFilterForm

SUBMITTED_VALUE_LIMIT = 32


def _view_details(view: str, form, before: int | None) -> tuple[dict, bool]:
    """Validate `form` and the cursor `before` (from pagination.cursor: None when absent, 0 when
    malformed); returns the AUDIT_VIEWED details of the visit and True when both are valid.

    Accepted: the filters applied (non-empty values only) and the cursor. Refused: the names of
    the fields in error and their raw values, each cut to 32 characters — a refused look at the
    log is still a look on record, and what was tried is worth keeping.
    """
    invalid = sorted(form.errors) if not form.validate() else []
    if before == 0:
        invalid.append("before")
    details: dict = {"view": view}
    if invalid:
        details |= {"outcome": "refused", "invalid": invalid,
                    "submitted": {name: request.args.get(name, "")[:SUBMITTED_VALUE_LIMIT] for name in invalid}}
    else:
        details["filters"] = {name: str(value) for name, value in form.filter_values().items() if value is not None}
        if before is not None:
            details["before"] = before
    return details, not invalid


def _accept_and_log(view: str, form, before: int | None) -> bool:
    """_view_details, with its AUDIT_VIEWED row written (and committed) at once; True when the
    filters and the cursor are valid."""
    details, accepted = _view_details(view, form, before)
    log_standalone_event("AUDIT_VIEWED", details)
    return accepted


@audit_bp.route("/logs")
@roles_required("auditor", "admin")
def logs():
    """The audit log, newest first, 50 rows a page (`?before=<id>`), filtered by action, user id
    and UTC dates. A malformed filter or cursor lists nothing: message, status 400."""
    form, before = AuditLogFilterForm(request.args), cursor()
    if not _accept_and_log("logs", form, before):
        return render_template("audit/logs_list.html", form=form, page=None, cursor_invalid=before == 0), 400
    page = services.list_events(services.AuditFilters(**form.filter_values()), before)
    return render_template("audit/logs_list.html", form=form, page=page, cursor_invalid=False)


@audit_bp.route("/logs/verify")
@roles_required("auditor", "admin")
def verify():
    """Recompute the hash chain (as `flask verify-audit`): whether it holds, rows checked, the
    first broken row and the head `ID:HASH`. The AUDIT_VIEWED row is written first, so the head
    shown is the current one and the check covers this visit too."""
    log_standalone_event("AUDIT_VIEWED", {"view": "verify"})
    report, head = services.verify_log()
    return render_template("audit/logs_verify.html", report=report, head=head)


@audit_bp.route("/transactions")
@roles_required("auditor", "admin")
def transactions():
    """Every customer's ledger entries, newest first, 25 a page (`?before=<id>`), with the
    customer filters plus `account_number`. A malformed filter or cursor: message, status 400.

    The page is read and rendered first and the AUDIT_VIEWED row written last (on PostgreSQL in
    the transaction that read the page); the answer leaves only once that row has committed (an
    error gives a 500 and no entries). /audit/logs writes first instead, so its list shows the
    visit's own row."""
    form, before = AuditTransactionFilterForm(request.args), cursor()
    details, accepted = _view_details("transactions", form, before)
    if accepted:
        page = list_all_transactions(TransactionFilters(**form.filter_values()), before)
        answer = render_template("audit/transactions.html", form=form, page=page, cursor_invalid=False), 200
    else:
        answer = render_template("audit/transactions.html", form=form, page=None, cursor_invalid=before == 0), 400
    # The visit is logged last: nothing is sent unless its AUDIT_VIEWED row commits, the chain
    # head is locked only for the append (DESIGN.md §4: as late as possible), and nothing is
    # reloaded after the commit expires it.
    log_standalone_event("AUDIT_VIEWED", details)
    return answer
