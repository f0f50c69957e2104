"""Support desk routes: parse the form, call one service, flash, redirect (views stay thin)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..errors import DomainError, TicketNotFoundError, error_page
from ..extensions import require_allowance
from ..pagination import page_number
from ..security import roles_required
from . import services, support_bp
from .forms import TicketFilterForm, TicketForm, TicketUpdateForm


@support_bp.errorhandler(TicketNotFoundError)
def ticket_not_found(exc: TicketNotFoundError):
    """A missing ticket id is a plain 404 page (DESIGN.md section 8)."""
    return error_page(404)


@support_bp.route("/create", methods=["GET", "POST"])
@roles_required("customer")
def create_ticket():
    """A customer opens a ticket (subject, description); then to their tickets. Past
    TICKET_RATE_LIMIT tickets in the window: 429 with Retry-After, and nothing is opened."""
    form = TicketForm()
    if form.validate_on_submit():
        # Taken here, not by a decorator: refused forms don't use up the allowance, and one
        # atomic take holds against simultaneous POSTs (take_allowance, via require_allowance).
        require_allowance("TICKET_RATE_LIMIT", "ticket-create")
        try:
            ticket = services.create_ticket(current_user, form.subject.data, form.description.data)
        except DomainError as exc:
            return render_template("support/create.html", form=form, error=str(exc)), 400
        flash(f"Ticket #{ticket.id} sent. Our support team will reply here.", "success")
        return redirect(url_for("support.my_tickets"))
    return render_template("support/create.html", form=form), 400 if form.errors else 200


@support_bp.route("/my-tickets")
@roles_required("customer")
def my_tickets():
    """The signed-in customer's own tickets, newest first, with status and staff replies."""
    page = services.list_customer_tickets(current_user.id, page_number())
    return render_template("support/my_tickets.html", page=page)


@support_bp.route("/tickets")
@roles_required("support", "admin")
def tickets():
    """Every ticket, newest first, optionally filtered by `?status=`; an unknown status is a 400."""
    form = TicketFilterForm(request.args)
    if not form.validate():
        return render_template("support/tickets_list.html", form=form, page=None, filters_invalid=True), 400
    page = services.list_tickets(form.status.data or None, page_number())
    return render_template("support/tickets_list.html", form=form, page=page, filters_invalid=False)


@support_bp.route("/tickets/<id:ticket_id>", methods=["GET", "POST"])
@roles_required("support", "admin")
def ticket_detail(ticket_id: int):
    """One ticket with its customer and notes; POST changes the status and/or adds a note.
    :raise 404: no ticket has this id (checked after the role)."""
    ticket = services.get_ticket(ticket_id)
    form = TicketUpdateForm(status=ticket.status)
    if form.validate_on_submit():
        try:
            changed = services.update_ticket(current_user, ticket.id, form.status.data, form.note.data)
        except DomainError as exc:
            return render_template("support/ticket_detail.html", ticket=ticket, form=form, error=str(exc)), 400
        if changed:
            flash("Ticket updated.", "success")
        else:
            flash("Nothing changed: the status is the same and there is no note.", "info")
        return redirect(url_for("support.ticket_detail", ticket_id=ticket.id))
    return render_template("support/ticket_detail.html", ticket=ticket, form=form), 400 if form.errors else 200
