"""Support desk service: customers' tickets and the staff's replies (notes).

The only writer of the `support_ticket` and `ticket_note` tables (DESIGN.md section 1). Each
write is one `atomic()` block that commits the change together with its audit row
(TICKET_CREATED, TICKET_UPDATED; DESIGN.md section 4). Audit details name the ticket and the
status change, never the text a customer or a member of staff wrote: only its MAC
(audit_services.record_mac), which verify_ticket_records checks the stored text against.
"""

from __future__ import annotations

import hmac

from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload

from ..audit import services as audit_services
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


def ticket_content_mac(ticket_id: int, customer_id: int, subject: str, description: str) -> str:
    """audit_services.record_mac of a ticket's owner and text as stored (64 hex characters): the
    `content_mac` of its TICKET_CREATED row. Nothing in the bank edits a ticket's text."""
    return audit_services.record_mac("ticket", ticket_id, customer_id, subject, description)


def note_content_mac(note_id: int, ticket_id: int, author_id: int, body: str) -> str:
    """audit_services.record_mac of a reply as stored (64 hex characters): the `note_mac` of the
    TICKET_UPDATED row that added it. Nothing in the bank edits or deletes a note."""
    return audit_services.record_mac("ticket-note", note_id, ticket_id, author_id, body)


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
    text is empty or too long. The audit details hold the ticket id and the customer's, and the
    text's MAC (content_mac: ticket_content_mac), not the text.
    """
    if customer.role != "customer":
        raise ValidationRuleError("Only customers open support tickets.")
    subject = _check_text(subject, "subject", SUBJECT_MAX_LENGTH, required=True)
    description = _check_text(description, "description", DESCRIPTION_MAX_LENGTH, required=True)
    with atomic():
        ticket = SupportTicket(customer_id=customer.id, subject=subject, description=description, status="open")
        db.session.add(ticket)
        db.session.flush()
        log_event("TICKET_CREATED", {"ticket_id": ticket.id, "customer_id": customer.id,
                                     "content_mac": ticket_content_mac(ticket.id, customer.id, subject, description)},
                  user_id=customer.id)
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
    logs TICKET_UPDATED with {ticket_id, from, to, note_added} and, with a note, its note_id and
    note_mac (note_content_mac) — never the note's text.
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
        details = {"ticket_id": ticket.id, "from": previous, "to": status, "note_added": bool(note)}
        if note:
            reply = TicketNote(ticket_id=ticket.id, author_id=actor.id, body=note)
            db.session.add(reply)
            db.session.flush()
            details |= {"note_id": reply.id, "note_mac": note_content_mac(reply.id, ticket.id, actor.id, note)}
        log_event("TICKET_UPDATED", details, user_id=actor.id)
    return True


# ---------------------------------------------------------------------------------------------
# The tickets against the audit trail (flask verify-audit)
# ---------------------------------------------------------------------------------------------


def verify_ticket_records() -> list[str]:
    """Each ticket's customer, status and text, and each reply, against the audit trail
    (read-only).

    A ticket is opened only by create_ticket (TICKET_CREATED: ticket_id, customer_id,
    content_mac; status open) and changed only by update_ticket (TICKET_UPDATED: the status
    `to`; with a reply, note_added and the note's note_id and note_mac), each in the same commit
    as its audit row (DESIGN.md section 4). So a ticket or a reply inserted, deleted or rewritten
    with SQL (a fake "support" reply asking a customer for their password, say), or a status
    changed behind the app, is reported (PCI DSS 10.2.1, 10.3.4). The number of replies is
    checked for every ticket; a MAC only where the row that wrote the text recorded one (rows
    written before MACs were recorded hold none).

    Returns the problems found as sentences, in ticket id order; an empty list when all agree.
    """
    problems: list[str] = []
    recorded: dict[int, dict] = {}
    for row_id, action, actor_id, details in audit_services.recorded_events(("TICKET_CREATED", "TICKET_UPDATED")):
        if details is None:
            problems.append(f"audit row {row_id} ({action}): its details are not a JSON object")
            continue
        ticket_id = details.get("ticket_id")
        if action == "TICKET_CREATED":
            recorded[ticket_id] = {"customer_id": details.get("customer_id"), "status": "open", "notes": 0,
                                   "mac": details.get("content_mac"), "note_macs": {}}
            continue
        state = recorded.get(ticket_id)
        if state is None:
            problems.append(f"audit row {row_id} ({action}) names ticket {ticket_id}, "
                            "which no earlier TICKET_CREATED row records")
            continue
        state["status"] = details.get("to")
        if details.get("note_added"):
            state["notes"] += 1
            if details.get("note_id") is not None:
                state["note_macs"][details["note_id"]] = (row_id, actor_id, details.get("note_mac"))
    notes: dict[int, list[tuple]] = {}
    for note_id, ticket_id, author_id, body in db.session.execute(
            select(TicketNote.id, TicketNote.ticket_id, TicketNote.author_id, TicketNote.body).order_by(TicketNote.id)):
        notes.setdefault(ticket_id, []).append((note_id, author_id, body))
    for ticket_id, customer_id, subject, description, status in db.session.execute(
            select(SupportTicket.id, SupportTicket.customer_id, SupportTicket.subject, SupportTicket.description,
                   SupportTicket.status).order_by(SupportTicket.id)):
        state = recorded.pop(ticket_id, None)
        if state is None:
            problems.append(f"ticket {ticket_id}: no TICKET_CREATED audit row records it")
            continue
        if state["customer_id"] != customer_id:
            problems.append(f"ticket {ticket_id}: its customer is {customer_id}, "
                            f"but the audit trail says {state['customer_id']}")
        if state["status"] != status:
            problems.append(f"ticket {ticket_id}: its status is {status!r}, but the audit trail says {state['status']!r}")
        if state["mac"] is not None and not hmac.compare_digest(
                str(state["mac"]), ticket_content_mac(ticket_id, customer_id, subject, description)):
            problems.append(f"ticket {ticket_id}: its subject or description is not what TICKET_CREATED recorded")
        replies = notes.pop(ticket_id, [])
        if len(replies) != state["notes"]:
            problems.append(f"ticket {ticket_id}: the number of replies is {len(replies)}, but the audit trail "
                            f"records {state['notes']}")
        for note_id, author_id, body in replies:
            row_id, actor_id, mac = state["note_macs"].pop(note_id, (None, None, None))
            if mac is not None and (actor_id != author_id or not hmac.compare_digest(
                    str(mac), note_content_mac(note_id, ticket_id, author_id, body))):
                problems.append(f"ticket {ticket_id}: reply {note_id} is not what audit row {row_id} recorded")
        for note_id, (row_id, _actor_id, _mac) in state["note_macs"].items():
            problems.append(f"ticket {ticket_id}: reply {note_id}, which audit row {row_id} records, is missing")
    for ticket_id in sorted(recorded):
        problems.append(f"a TICKET_CREATED audit row records ticket {ticket_id}, which does not exist")
    for ticket_id in sorted(notes):
        problems.append(f"ticket {ticket_id}, which does not exist, has replies")
    return problems
