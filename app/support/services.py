"""Support desk service: customers' tickets and the staff's replies (notes).

The only writer of the `support_ticket` and `ticket_note` tables (DESIGN.md section 1). Each
write is one `atomic()` block that commits the change together with its audit row
(TICKET_CREATED, TICKET_UPDATED; DESIGN.md section 4). Audit details name the ticket and the
status change, never the text a customer or a member of staff wrote.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from ..errors import TicketNotFoundError, ValidationRuleError
from ..extensions import atomic, db
from ..models import TICKET_STATUSES, SupportTicket, TicketNote, User, utcnow
from ..pagination import Page, numbered_page
from ..routing import MAX_ID
from ..security import log_event

SUBJECT_MAX_LENGTH = 120
DESCRIPTION_MAX_LENGTH = 5000
NOTE_MAX_LENGTH = 2000
TICKET_STAFF_ROLES = ("support", "admin")
# Ids above this can't exist (64-bit keys); SQLite's driver would raise OverflowError on them.


def status_label(status: str) -> str:
    """How a status reads on a page: `in_progress` → `In progress`."""
    return status.replace("_", " ").capitalize()


def _check_text(value: str, name: str, maximum: int, *, required: bool) -> str:
    """`value` trimmed; raises ValidationRuleError when empty (if required) or over `maximum`."""
    text = (value or "").strip()
    if required and not text:
        raise ValidationRuleError(f"The {name} cannot be empty.")
    if len(text) > maximum:
        raise ValidationRuleError(f"The {name} may be at most {maximum} characters.")
    return text


# ---------------------------------------------------------------------------------------------
# Customers
# ---------------------------------------------------------------------------------------------


def create_ticket(customer: User, subject: str, description: str) -> SupportTicket:
    """Open a ticket for `customer` with status `open`; logs TICKET_CREATED; commits once.

    subject: 1–120 characters, description: 1–5000 (both trimmed; DESIGN.md section 8).
    Returns the new ticket. Raises ValidationRuleError when the actor is not a customer or a
    text is empty or too long. The audit details hold the ticket id only, not the text.
    """
    if customer.role != "customer":
        raise ValidationRuleError("Only customers open support tickets.")
    subject = _check_text(subject, "subject", SUBJECT_MAX_LENGTH, required=True)
    description = _check_text(description, "description", DESCRIPTION_MAX_LENGTH, required=True)
    with atomic():
        ticket = SupportTicket(customer_id=customer.id, subject=subject, description=description, status="open")
        db.session.add(ticket)
        db.session.flush()
        log_event("TICKET_CREATED", {"ticket_id": ticket.id, "customer_id": customer.id}, user_id=customer.id)
    return ticket


def list_customer_tickets(customer_id: int, page: int) -> Page:
    """Page `page` (from 1; 25 tickets, newest first) of the tickets of `customer_id` only,
    each with its notes loaded (oldest first). A page below 1 or past the end is empty."""
    stmt = (
        select(SupportTicket)
        .where(SupportTicket.customer_id == customer_id)
        .options(selectinload(SupportTicket.notes))
        .order_by(SupportTicket.id.desc())
    )
    return numbered_page(stmt, page)


# ---------------------------------------------------------------------------------------------
# Support staff
# ---------------------------------------------------------------------------------------------


def list_tickets(status: str | None, page: int) -> Page:
    """Page `page` (from 1; 25, newest first) of every customer's tickets with their customer.

    status: one of TICKET_STATUSES, or None for all. Raises ValidationRuleError for any other
    status. A page below 1 or past the end is empty (DESIGN.md section 8).
    """
    stmt = select(SupportTicket).options(joinedload(SupportTicket.customer)).order_by(SupportTicket.id.desc())
    if status is not None:
        if status not in TICKET_STATUSES:
            raise ValidationRuleError("Choose open, in progress or resolved.")
        stmt = stmt.where(SupportTicket.status == status)
    return numbered_page(stmt, page)


def get_ticket(ticket_id: int) -> SupportTicket:
    """The ticket `ticket_id` with its customer and its notes (oldest first) and their authors.

    Raises TicketNotFoundError (shown as 404) when there is none.
    """
    if not 0 < ticket_id <= MAX_ID:
        raise TicketNotFoundError()
    ticket = db.session.scalar(
        select(SupportTicket)
        .where(SupportTicket.id == ticket_id)
        .options(joinedload(SupportTicket.customer),
                 selectinload(SupportTicket.notes).joinedload(TicketNote.author))
    )
    if ticket is None:
        raise TicketNotFoundError()
    return ticket


def update_ticket(actor: User, ticket_id: int, status: str, note: str | None) -> bool:
    """Set the status of ticket `ticket_id` and/or add `note` as a reply by `actor`; commits once.

    actor: a support agent or an admin. status: open, in_progress or resolved. note: 0–2000
    characters (trimmed); empty adds no note. Sets `last_updated_by_id` and `updated_at` and
    logs TICKET_UPDATED with {ticket_id, from, to, note_added} — never the note's text.
    Returns False, writing nothing, when the status is unchanged and the note empty.
    Raises TicketNotFoundError (404), ValidationRuleError (unknown status, note too long, or an
    actor who is not support or admin). Rules: DESIGN.md sections 4 and 8.
    """
    if actor.role not in TICKET_STAFF_ROLES:
        raise ValidationRuleError("Only support staff and administrators update tickets.")
    if status not in TICKET_STATUSES:
        raise ValidationRuleError("Choose open, in progress or resolved.")
    note = _check_text(note or "", "note", NOTE_MAX_LENGTH, required=False)
    if not 0 < ticket_id <= MAX_ID:
        raise TicketNotFoundError()
    with atomic():
        # Lock the row (PostgreSQL) so two agents' updates are serialized and "from" is true.
        ticket = db.session.get(SupportTicket, ticket_id, with_for_update=True, populate_existing=True)
        if ticket is None:
            raise TicketNotFoundError()
        previous = ticket.status
        if previous == status and not note:
            return False
        ticket.status = status
        ticket.last_updated_by_id = actor.id
        ticket.updated_at = utcnow()
        if note:
            db.session.add(TicketNote(ticket_id=ticket.id, author_id=actor.id, body=note))
        log_event("TICKET_UPDATED", {"ticket_id": ticket.id, "from": previous, "to": status, "note_added": bool(note)},
                  user_id=actor.id)
    return True
