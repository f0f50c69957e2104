"""The support desk through `/support/...` and its service (DESIGN.md sections 4, 6, 8; issue 3 item 2)."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from datetime import datetime

import pytest
from sqlalchemy import func, select

from app.errors import TicketNotFoundError, ValidationRuleError
from app.extensions import db
from app.models import AuditLog, SupportTicket, TicketNote, User
from app.support import services
from tests.conftest import csrf_token_from
from tests.factories import DEFAULT_PASSWORD
from tests.integration.test_headers_and_errors import inline_code_in

CREATE = "/support/create"
MY_TICKETS = "/support/my-tickets"
TICKETS = "/support/tickets"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED_XSS = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
REL_NEXT = re.compile(r'<a class="page-link" rel="next" href="([^"]+)"')
REL_PREV = re.compile(r'<a class="page-link" rel="prev" href="([^"]+)"')
TICKET_LINK = re.compile(r'href="/support/tickets/(\d+)"')
MAIN = re.compile(r"<main[^>]*>(.*)</main>", re.S)
POST_FORM = re.compile(r'<form method="post".*?</form>', re.S)


def detail(ticket_id: int) -> str:
    return f"{TICKETS}/{ticket_id}"


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _audit(app, action: str) -> list[tuple[int | None, dict]]:
    with app.app_context():
        rows = db.session.execute(select(AuditLog.user_id, AuditLog.details).where(AuditLog.action == action)
                                  .order_by(AuditLog.id)).all()
    return [(user_id, json.loads(details)) for user_id, details in rows]


def _audit_actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)))


def _tickets(app) -> list[tuple]:
    """(id, customer_id, subject, description, status, last_updated_by_id) of every ticket, by id."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(SupportTicket.id, SupportTicket.customer_id, SupportTicket.subject, SupportTicket.description,
                   SupportTicket.status, SupportTicket.last_updated_by_id).order_by(SupportTicket.id)
        ).all()]


def _notes(app, ticket_id: int) -> list[tuple[int, str]]:
    """(author_id, body) of the ticket's notes, oldest first."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(TicketNote.author_id, TicketNote.body)
            .where(TicketNote.ticket_id == ticket_id).order_by(TicketNote.id)
        ).all()]


def _updated_at(app, ticket_id: int) -> datetime:
    with app.app_context():
        return db.session.scalar(select(SupportTicket.updated_at).where(SupportTicket.id == ticket_id))


def _make_ticket(app, customer, subject: str = "Card not arriving", description: str = "Ordered 3 weeks ago.") -> int:
    """A ticket opened through the service (set-up); returns its id."""
    with app.app_context():
        return services.create_ticket(db.session.get(User, customer.id), subject, description).id


def _make_tickets(app, customer, count: int) -> list[int]:
    with app.app_context():
        user = db.session.get(User, customer.id)
        return [services.create_ticket(user, f"Question {n:02d}", "Details").id for n in range(1, count + 1)]


def _reply(app, staff, ticket_id: int, status: str = "in_progress", note: str = "") -> None:
    with app.app_context():
        services.update_ticket(db.session.get(User, staff.id), ticket_id, status, note)


def _signed_in(app, user):
    """A fresh test client signed in as `user`."""
    client = app.test_client()
    response = client.post("/auth/login", data={"email": user.email, "password": DEFAULT_PASSWORD})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def _ticket_ids_shown(response) -> list[int]:
    return [int(n) for n in TICKET_LINK.findall(response.get_data(as_text=True))]


# ---------------------------------------------------------------------------------------------
# Customers: creating tickets
# ---------------------------------------------------------------------------------------------


def test_create_form_shows_subject_and_description(client, logged_in_customer):
    """Does a customer get the ticket form with the `subject` and `description` fields?"""
    response = client.get(CREATE)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'name="subject"' in page and '<textarea' in page and 'name="description"' in page


def test_customer_creates_ticket_and_is_sent_to_my_tickets(client, app, logged_in_customer):
    """Does a customer's valid ticket get stored open and trimmed, log TICKET_CREATED (without the
    text) and redirect to my-tickets, which shows it with a flash message?"""
    response = client.post(CREATE, data={"subject": "  Lost card  ", "description": "  Please block it.\r\n"})

    assert response.status_code == 302 and response.headers["Location"].endswith(MY_TICKETS)
    [(ticket_id, customer_id, subject, description, status, updated_by)] = _tickets(app)
    assert (customer_id, subject, description, status, updated_by) == (
        logged_in_customer.id, "Lost card", "Please block it.", "open", None)
    [(actor, details)] = _audit(app, "TICKET_CREATED")
    assert actor == logged_in_customer.id and details["ticket_id"] == ticket_id
    assert "Lost card" not in json.dumps(details) and "block" not in json.dumps(details)
    with app.app_context():
        assert details["content_mac"] == services.ticket_content_mac(ticket_id, logged_in_customer.id, "Lost card",
                                                                     "Please block it.")
    page = _text(client.get(MY_TICKETS))
    assert f"Ticket #{ticket_id} sent" in page and "Lost card" in page and "Open" in page


def test_create_accepts_values_at_the_limits(client, app, logged_in_customer):
    """Are a 120-character subject and a 5000-character description accepted (limits inclusive),
    with textarea line breaks (CRLF) counted as one character each?"""
    description = ("x" * 99 + "\r\n") * 50  # 5050 characters as sent, 5000 once CRLF is one line break

    response = client.post(CREATE, data={"subject": "s" * 120, "description": description})

    assert response.status_code == 302
    [(_id, _cid, subject, stored, _status, _by)] = _tickets(app)
    assert len(subject) == 120 and "\r" not in stored and len(stored) == 4999  # the final break is trimmed


@pytest.mark.parametrize("changes, message", [
    ({"subject": ""}, "Enter a subject."),
    ({"subject": "   "}, "Enter a subject."),
    ({"subject": "s" * 121}, "at most 120 characters"),
    ({"subject": "bell\x07"}, "Remove control characters"),
    ({"description": ""}, "Describe your request."),
    ({"description": " \n\t "}, "Describe your request."),
    ({"description": "d" * 5001}, "at most 5000 characters"),
    ({"description": "null\x00byte"}, "Remove control characters"),
    ({"description": "escape\x1b[31m"}, "Remove control characters"),
    ({"subject": "\u200d\ufe0f"}, "Enter visible text"),
    ({"description": "\u200c\n\u200d"}, "Enter visible text"),
    ({"subject": "Hidden \U000e0069\U000e0067\U000e006e"}, "Remove control characters"),
])
def test_create_refuses_fields_outside_their_limits(client, app, logged_in_customer, changes, message):
    """Does an empty, blank, over-long or control-character subject or description re-render the
    form with the error and status 400, writing no ticket and no audit row?"""
    before = _audit_actions(app)
    data = {"subject": "Valid subject", "description": "Valid description"} | changes

    response = client.post(CREATE, data=data)

    assert response.status_code == 400
    assert message in _text(response)
    assert _tickets(app) == []
    assert _audit_actions(app) == before


def test_create_keeps_tabs_and_newlines_in_the_description(client, app, logged_in_customer):
    """Are tabs and line breaks allowed in a description (only other control characters are refused)?"""
    response = client.post(CREATE, data={"subject": "Tabs", "description": "col1\tcol2\nline 2"})

    assert response.status_code == 302
    assert _tickets(app)[0][3] == "col1\tcol2\nline 2"


def test_create_ticket_service_refuses_staff_and_bad_text(app, support_user, customer):
    """Does the service itself refuse a non-customer author and an empty or over-long text,
    whatever the form let through?"""
    with app.app_context():
        staff = db.session.get(User, support_user.id)
        owner = db.session.get(User, customer.id)
        with pytest.raises(ValidationRuleError):
            services.create_ticket(staff, "Subject", "Description")
        with pytest.raises(ValidationRuleError):
            services.create_ticket(owner, " ", "Description")
        with pytest.raises(ValidationRuleError):
            services.create_ticket(owner, "Subject", "d" * 5001)
    assert _tickets(app) == []


# ---------------------------------------------------------------------------------------------
# Customers: their own tickets
# ---------------------------------------------------------------------------------------------


def test_my_tickets_shows_only_own_tickets_and_staff_notes(app, customer, other_customer, support_user):
    """Does /support/my-tickets show a customer their own tickets, status and the staff's notes,
    and never another customer's ticket or its notes?"""
    mine = _make_ticket(app, customer, "My own question", "Mine")
    theirs = _make_ticket(app, other_customer, "Their private question", "Theirs")
    _reply(app, support_user, mine, "in_progress", "We are looking into your card.")
    _reply(app, support_user, theirs, "resolved", "Private reply for someone else.")

    response = _signed_in(app, customer).get(MY_TICKETS)

    assert response.status_code == 200
    page = _text(response)
    assert "My own question" in page and "We are looking into your card." in page and "In progress" in page
    assert "Their private question" not in page and "Private reply for someone else." not in page
    assert f"#{theirs} " not in page


def test_my_tickets_lists_newest_first(app, customer):
    """Are a customer's tickets listed newest first?"""
    _make_ticket(app, customer, "Older ticket")
    _make_ticket(app, customer, "Newer ticket")

    page = _text(_signed_in(app, customer).get(MY_TICKETS))

    assert page.index("Newer ticket") < page.index("Older ticket")


def test_my_tickets_with_no_tickets_is_an_empty_page(client, logged_in_customer):
    """Does a customer without tickets get a 200 page that says there are none?"""
    response = client.get(MY_TICKETS)

    assert response.status_code == 200
    assert "No tickets to show." in _text(response)


# ---------------------------------------------------------------------------------------------
# Staff: the list
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["support", "admin"])
def test_staff_list_shows_every_customers_tickets_newest_first(app, make_user, customer, other_customer, role):
    """Do support and admin see all customers' tickets, newest first, with the customer's name?"""
    first = _make_ticket(app, customer, "First question")
    second = _make_ticket(app, other_customer, "Second question")

    response = _signed_in(app, make_user(role)).get(TICKETS)

    assert response.status_code == 200
    assert _ticket_ids_shown(response) == [second, first]
    page = _text(response)
    assert customer.full_name in page and other_customer.full_name in page


@pytest.mark.parametrize("status", ["open", "in_progress", "resolved"])
def test_staff_list_filters_by_status(app, customer, support_user, status):
    """Does `?status=` list only the tickets with that status?"""
    ids = {name: _make_ticket(app, customer, f"Ticket {name}") for name in ("open", "in_progress", "resolved")}
    _reply(app, support_user, ids["in_progress"], "in_progress")
    _reply(app, support_user, ids["resolved"], "resolved")

    response = _signed_in(app, support_user).get(f"{TICKETS}?status={status}")

    assert response.status_code == 200
    assert _ticket_ids_shown(response) == [ids[status]]


def test_staff_list_with_empty_status_shows_all(app, customer, support_user):
    """Does an empty `?status=` (the "All" choice) list every ticket?"""
    ids = _make_tickets(app, customer, 2)

    response = _signed_in(app, support_user).get(f"{TICKETS}?status=")

    assert response.status_code == 200
    assert sorted(_ticket_ids_shown(response)) == ids


@pytest.mark.parametrize("status", ["closed", "OPEN", "open ", "in progress", "<b>x</b>", "open\x00"])
def test_staff_list_with_unknown_status_is_a_400_message(app, customer, support_user, status):
    """Is an unknown `?status=` a message with status 400 (never a 500), listing nothing?"""
    _make_ticket(app, customer, "Some ticket")

    response = _signed_in(app, support_user).get(TICKETS, query_string={"status": status})

    assert response.status_code == 400
    assert "Unknown status" in _text(response)
    assert _ticket_ids_shown(response) == []


def test_list_tickets_service_refuses_unknown_status(app):
    """Does the service refuse a status outside open / in_progress / resolved?"""
    with app.app_context(), pytest.raises(ValidationRuleError):
        services.list_tickets("closed", 1)


# ---------------------------------------------------------------------------------------------
# Staff: one ticket
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["support", "admin"])
def test_ticket_detail_shows_ticket_customer_and_notes(app, make_user, customer, support_user, role):
    """Does the detail page show the subject, description, customer's name and email, and each
    note with its author and time, plus the update form?"""
    ticket_id = _make_ticket(app, customer, "Statement missing", "March statement is not there.")
    _reply(app, support_user, ticket_id, "in_progress", "Checking with the archive team.")

    response = _signed_in(app, make_user(role)).get(detail(ticket_id))

    assert response.status_code == 200
    page = _text(response)
    for text in ("Statement missing", "March statement is not there.", customer.full_name, customer.email,
                 "Checking with the archive team.", support_user.full_name, " UTC"):
        assert text in page, text
    assert 'name="status"' in page and 'name="note"' in page
    assert '<option selected value="in_progress">' in page


@pytest.mark.parametrize("role", ["support", "admin"])
@pytest.mark.parametrize("ticket_id", ["999999", "9223372036854775808", "99999999999999999999999"])
def test_ticket_detail_of_missing_id_is_404(app, make_user, role, ticket_id):
    """Is a ticket id that does not exist (even beyond 64 bits) a 404 on GET and POST, never a 500?"""
    client = _signed_in(app, make_user(role))

    assert client.get(f"{TICKETS}/{ticket_id}").status_code == 404
    assert client.post(f"{TICKETS}/{ticket_id}", data={"status": "resolved", "note": "x"}).status_code == 404


def test_get_ticket_service_raises_for_a_missing_id(app):
    """Does get_ticket raise TicketNotFoundError (the 404) for a missing or impossible id?"""
    with app.app_context():
        for ticket_id in (1, 0, -1, 2**63):
            with pytest.raises(TicketNotFoundError):
                services.get_ticket(ticket_id)


@pytest.mark.parametrize("role", ["support", "admin"])
def test_staff_update_status_and_note(app, make_user, customer, role):
    """Does a status change with a note update the ticket, store the note by the actor, set
    last_updated_by and updated_at, log TICKET_UPDATED without the note text, and redirect to the
    ticket with a flash?"""
    staff = make_user(role)
    ticket_id = _make_ticket(app, customer)
    created = _updated_at(app, ticket_id)
    client = _signed_in(app, staff)

    response = client.post(detail(ticket_id), data={"status": "resolved", "note": "  New card sent today.  "})

    assert response.status_code == 302 and response.headers["Location"].endswith(detail(ticket_id))
    assert _tickets(app)[0][4:] == ("resolved", staff.id)
    assert _updated_at(app, ticket_id) > created
    assert _notes(app, ticket_id) == [(staff.id, "New card sent today.")]
    [(actor, details)] = _audit(app, "TICKET_UPDATED")
    assert actor == staff.id
    note_id, mac = details.pop("note_id"), details.pop("note_mac")
    assert details == {"ticket_id": ticket_id, "from": "open", "to": "resolved", "note_added": True}
    with app.app_context():
        assert mac == services.note_content_mac(note_id, ticket_id, staff.id, "New card sent today.")
    with app.app_context():
        assert not any("New card" in text for text in db.session.scalars(select(AuditLog.details)))
    assert "Ticket updated." in _text(client.get(detail(ticket_id)))


def test_customer_sees_the_note_on_my_tickets(app, customer, support_user):
    """After support replies through the form, does the customer read the note and the new status
    on /support/my-tickets?"""
    ticket_id = _make_ticket(app, customer, "Where is my money?")
    _signed_in(app, support_user).post(detail(ticket_id), data={"status": "resolved", "note": "It arrived at 10:00."})

    page = _text(_signed_in(app, customer).get(MY_TICKETS))

    assert "It arrived at 10:00." in page and "Resolved" in page


def test_status_change_without_note_adds_no_note(app, customer, support_user):
    """Does a status change with an empty note change the status only (note_added false)?"""
    ticket_id = _make_ticket(app, customer)

    response = _signed_in(app, support_user).post(detail(ticket_id), data={"status": "in_progress", "note": "   "})

    assert response.status_code == 302
    assert _tickets(app)[0][4] == "in_progress"
    assert _notes(app, ticket_id) == []
    [(_actor, details)] = _audit(app, "TICKET_UPDATED")
    assert details == {"ticket_id": ticket_id, "from": "open", "to": "in_progress", "note_added": False}


def test_note_without_status_change_is_added(app, customer, support_user):
    """Does a note with the same status add the note and log from == to with note_added true?"""
    ticket_id = _make_ticket(app, customer)

    response = _signed_in(app, support_user).post(detail(ticket_id), data={"status": "open", "note": "Any news?"})

    assert response.status_code == 302
    assert _notes(app, ticket_id) == [(support_user.id, "Any news?")]
    [(_actor, details)] = _audit(app, "TICKET_UPDATED")
    assert {name: details[name] for name in ("ticket_id", "from", "to", "note_added")} == {
        "ticket_id": ticket_id, "from": "open", "to": "open", "note_added": True}
    assert set(details) == {"ticket_id", "from", "to", "note_added", "note_id", "note_mac"}


def test_same_status_and_empty_note_changes_nothing_and_says_so(app, customer, support_user):
    """With the same status and no note, is nothing written (no audit row, same updated_at) and
    does the ticket page say nothing changed?"""
    ticket_id = _make_ticket(app, customer)
    client = _signed_in(app, support_user)
    before = (_tickets(app), _updated_at(app, ticket_id), _audit_actions(app))

    response = client.post(detail(ticket_id), data={"status": "open", "note": ""})

    assert response.status_code == 302 and response.headers["Location"].endswith(detail(ticket_id))
    assert (_tickets(app), _updated_at(app, ticket_id), _audit_actions(app)) == before
    assert "Nothing changed" in _text(client.get(detail(ticket_id)))


@pytest.mark.parametrize("data, message", [
    ({"status": "closed", "note": "x"}, "Not a valid choice"),
    ({"status": "", "note": "x"}, "Choose a status."),
    ({"note": "x"}, "Choose a status."),
    ({"status": "RESOLVED", "note": "x"}, "Not a valid choice"),
    ({"status": "resolved", "note": "n" * 2001}, "at most 2000 characters"),
    ({"status": "resolved", "note": "bad\x00"}, "Remove control characters"),
    ({"status": "resolved", "note": "\u200d\u200d\ufe0f"}, "Enter visible text"),
])
def test_bad_update_is_a_400_and_changes_nothing(app, customer, support_user, data, message):
    """Does an unknown or missing status, an over-long note or a control character re-render the
    ticket with the error and 400, changing no status, adding no note and logging nothing?"""
    ticket_id = _make_ticket(app, customer)
    client = _signed_in(app, support_user)
    before = (_tickets(app), _updated_at(app, ticket_id), _audit_actions(app))

    response = client.post(detail(ticket_id), data=data)

    assert response.status_code == 400
    assert message in _text(response)
    assert (_tickets(app), _updated_at(app, ticket_id), _audit_actions(app)) == before
    assert _notes(app, ticket_id) == []


def test_update_accepts_a_note_of_2000_characters(app, customer, support_user):
    """Is a 2000-character note accepted (the limit is inclusive)?"""
    ticket_id = _make_ticket(app, customer)

    response = _signed_in(app, support_user).post(detail(ticket_id), data={"status": "open", "note": "n" * 2000})

    assert response.status_code == 302
    assert len(_notes(app, ticket_id)[0][1]) == 2000


def test_update_ticket_service_refuses_customers_and_unknown_status(app, customer, support_user):
    """Does the service itself refuse a customer actor, an unknown status and an over-long note,
    and a missing ticket with TicketNotFoundError?"""
    ticket_id = _make_ticket(app, customer)
    with app.app_context():
        owner = db.session.get(User, customer.id)
        staff = db.session.get(User, support_user.id)
        with pytest.raises(ValidationRuleError):
            services.update_ticket(owner, ticket_id, "resolved", "I fixed it myself")
        with pytest.raises(ValidationRuleError):
            services.update_ticket(staff, ticket_id, "closed", "")
        with pytest.raises(ValidationRuleError):
            services.update_ticket(staff, ticket_id, "resolved", "n" * 2001)
        with pytest.raises(TicketNotFoundError):
            services.update_ticket(staff, ticket_id + 1, "resolved", "")
    assert _tickets(app)[0][4] == "open" and _notes(app, ticket_id) == []


# ---------------------------------------------------------------------------------------------
# Access
# ---------------------------------------------------------------------------------------------


def _denied_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "ACCESS_DENIED"))


@pytest.mark.parametrize("role", ["customer", "auditor"])
def test_customers_and_auditors_get_403_on_staff_pages(app, make_user, customer, role):
    """Do customers (even the ticket's owner) and auditors get 403 and an ACCESS_DENIED row on the
    staff list and on a ticket, GET and POST, with the role checked before the object (a missing
    id is 403 too) and nothing changed?"""
    ticket_id = _make_ticket(app, customer)
    user = customer if role == "customer" else make_user(role)
    client = _signed_in(app, user)
    before = _tickets(app)

    responses = [
        client.get(TICKETS),
        client.get(detail(ticket_id)),
        client.post(detail(ticket_id), data={"status": "resolved", "note": "closing my own ticket"}),
        client.get(detail(999999)),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403, 403]
    assert _denied_count(app) == 4
    [(actor, details)] = _audit(app, "ACCESS_DENIED")[:1]
    assert actor == user.id and details["path"] == TICKETS and details["role"] == role
    assert _tickets(app) == before and _notes(app, ticket_id) == []


@pytest.mark.parametrize("role", ["support", "auditor", "admin"])
def test_staff_get_403_on_customer_pages(app, make_user, role):
    """Do support, auditors and admins get 403 and an ACCESS_DENIED row on /support/create (GET and
    POST, writing no ticket) and /support/my-tickets?"""
    client = _signed_in(app, make_user(role))

    statuses = [client.get(CREATE).status_code,
                client.post(CREATE, data={"subject": "Staff", "description": "Ticket"}).status_code,
                client.get(MY_TICKETS).status_code]

    assert statuses == [403, 403, 403]
    assert _denied_count(app) == 3
    assert _tickets(app) == []


@pytest.mark.parametrize("method, path", [("GET", CREATE), ("POST", CREATE), ("GET", MY_TICKETS),
                                          ("GET", TICKETS), ("GET", detail(1)), ("POST", detail(1))])
def test_anonymous_users_are_sent_to_login(client, app, customer, method, path):
    """Is an anonymous visitor sent to the login page from every support route, changing nothing?"""
    _make_ticket(app, customer)
    before = _tickets(app)

    response = client.open(path, method=method, data={"subject": "a", "description": "b", "status": "resolved"})

    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]
    assert _tickets(app) == before


def _main_form_token(response) -> str:
    """The CSRF token inside the page's own POST form (not the navbar's logout form)."""
    main = MAIN.search(response.get_data(as_text=True)).group(1)
    [form] = POST_FORM.findall(main)
    return csrf_token_from(form)


@pytest.mark.parametrize("app_overrides", [{"WTF_CSRF_ENABLED": True}])
def test_support_forms_need_their_csrf_token(app, customer, support_user):
    """With CSRF on, are ticket creation and update refused (400, nothing written) without the token,
    and accepted with the token their page carries?"""
    ticket_id = _make_ticket(app, customer)
    owner = app.test_client()
    owner.post("/auth/login", data={"email": customer.email, "password": DEFAULT_PASSWORD,
                                    "csrf_token": csrf_token_from(owner.get("/auth/login").get_data(as_text=True))})
    staff = app.test_client()
    staff.post("/auth/login", data={"email": support_user.email, "password": DEFAULT_PASSWORD,
                                    "csrf_token": csrf_token_from(staff.get("/auth/login").get_data(as_text=True))})
    before = (_tickets(app), _audit(app, "TICKET_UPDATED"))

    assert owner.post(CREATE, data={"subject": "No token", "description": "x"}).status_code == 400
    assert staff.post(detail(ticket_id), data={"status": "resolved"}).status_code == 400
    assert (_tickets(app), _audit(app, "TICKET_UPDATED")) == before

    token = _main_form_token(owner.get(CREATE))
    created = owner.post(CREATE, data={"subject": "With token", "description": "x", "csrf_token": token})
    assert created.status_code == 302
    token = _main_form_token(staff.get(detail(ticket_id)))
    assert staff.post(detail(ticket_id), data={"status": "resolved", "csrf_token": token}).status_code == 302
    assert len(_tickets(app)) == 2 and _tickets(app)[0][4] == "resolved"


# ---------------------------------------------------------------------------------------------
# Stored text is escaped
# ---------------------------------------------------------------------------------------------


def test_stored_markup_is_escaped_on_every_page(app, customer, support_user):
    """Is markup in a subject, description and note shown as text (escaped) on my-tickets, the
    staff list and the ticket page, never as live HTML?"""
    customer_client = _signed_in(app, customer)
    assert customer_client.post(CREATE, data={"subject": XSS[:120], "description": "D:" + XSS}).status_code == 302
    ticket_id = _tickets(app)[0][0]
    staff_client = _signed_in(app, support_user)
    assert staff_client.post(detail(ticket_id), data={"status": "open", "note": "N:" + XSS}).status_code == 302

    pages = {
        "my tickets": (customer_client.get(MY_TICKETS), 3),
        "staff list": (staff_client.get(TICKETS), 1),
        "ticket": (staff_client.get(detail(ticket_id)), 3),
    }

    for name, (response, shown) in pages.items():
        page = response.get_data(as_text=True)
        assert response.status_code == 200, name
        assert "<script>alert" not in page and "<img src=x" not in page, name
        assert page.count(ESCAPED_XSS) >= shown, name


def test_support_pages_contain_no_inline_script_or_style(app, customer, support_user):
    """Do all support pages, with tickets, notes and form errors on them, avoid inline <script>,
    <style>, style= and on*= attributes (the Content-Security-Policy forbids them)?"""
    ticket_id = _make_ticket(app, customer, "Subject", "Line one\nLine two")
    _reply(app, support_user, ticket_id, "in_progress", "A reply")
    owner, staff = _signed_in(app, customer), _signed_in(app, support_user)

    pages = {
        "create": owner.get(CREATE),
        "create with errors": owner.post(CREATE, data={"subject": "", "description": ""}),
        "my tickets": owner.get(MY_TICKETS),
        "list": staff.get(TICKETS),
        "list with bad filter": staff.get(f"{TICKETS}?status=nope"),
        "ticket": staff.get(detail(ticket_id)),
        "ticket with errors": staff.post(detail(ticket_id), data={"status": "nope"}),
    }

    for name, response in pages.items():
        assert response.status_code in (200, 400), name
        assert inline_code_in(response.get_data(as_text=True)).problems == [], name


# ---------------------------------------------------------------------------------------------
# Pagination
# ---------------------------------------------------------------------------------------------


def test_my_tickets_paginates_by_25(app, customer):
    """With 26 tickets, does my-tickets show the newest 25 and a rel="next" link whose page shows
    the oldest one and a rel="prev" link?"""
    ids = _make_tickets(app, customer, 26)
    client = _signed_in(app, customer)

    first = client.get(MY_TICKETS)
    page = _text(first)
    assert page.count('<section class="card') == 25 and "Question 26" in page and "Question 01" not in page
    [next_url] = REL_NEXT.findall(first.get_data(as_text=True))
    assert REL_PREV.findall(first.get_data(as_text=True)) == []

    second = client.get(html.unescape(next_url))
    assert second.status_code == 200
    page = _text(second)
    assert page.count('<section class="card') == 1 and f"#{ids[0]} · Question 01" in page
    assert REL_NEXT.findall(second.get_data(as_text=True)) == [] and REL_PREV.findall(second.get_data(as_text=True))


def test_staff_list_paginates_by_25_and_keeps_the_filter(app, customer, support_user):
    """With 26 open tickets, does the staff list show 25 with a rel="next" link that keeps the
    status filter, and the next page the 26th?"""
    ids = _make_tickets(app, customer, 26)
    client = _signed_in(app, support_user)

    first = client.get(f"{TICKETS}?status=open")
    assert _ticket_ids_shown(first) == ids[:0:-1]
    [next_url] = REL_NEXT.findall(first.get_data(as_text=True))
    next_url = html.unescape(next_url)
    assert "status=open" in next_url and "page=2" in next_url

    second = client.get(next_url)
    assert _ticket_ids_shown(second) == [ids[0]]
    assert REL_PREV.findall(second.get_data(as_text=True))


@pytest.mark.parametrize("page_number", ["3", "99999999", "0", "-1", "abc", "1.5", "", "٣"])
@pytest.mark.parametrize("who, path", [("customer", MY_TICKETS), ("support", TICKETS)])
def test_page_past_the_end_or_malformed_is_an_empty_200(app, customer, support_user, who, path, page_number):
    """Is a page number past the end, or a malformed one, an empty list with 200 (never 404 or 500)?"""
    _make_tickets(app, customer, 26)
    client = _signed_in(app, customer if who == "customer" else support_user)

    response = client.get(path, query_string={"page": page_number})

    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Question" not in body and REL_NEXT.findall(body) == []


# ---------------------------------------------------------------------------------------------
# Rate limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "TICKET_RATE_LIMIT": "2 per hour"}])
def test_ticket_creation_is_rate_limited_per_user(app, customer, other_customer):
    """With the limit on, is a customer's third ticket within the window a 429 (the form still
    opens), while another customer from the same address can still open one?"""
    client = _signed_in(app, customer)

    answers = [client.post(CREATE, data={"subject": f"Ticket {n}", "description": "x"}) for n in range(3)]

    assert [answer.status_code for answer in answers] == [302, 302, 429]
    assert 3590 <= int(answers[2].headers["Retry-After"]) <= 3600, "the first ticket leaves the hour"
    assert client.get(CREATE).status_code == 200
    other = _signed_in(app, other_customer)
    assert other.post(CREATE, data={"subject": "Mine", "description": "x"}).status_code == 302
    assert [row[1] for row in _tickets(app)] == [customer.id, customer.id, other_customer.id]


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "TICKET_RATE_LIMIT": "2 per hour"}])
def test_simultaneous_ticket_forms_open_no_more_tickets_than_the_limit(app, customer, monkeypatch):
    """When 10 valid ticket forms from one signed-in customer arrive at the same moment, each
    opening slowed to 0.3 s, are exactly 2 tickets opened (TICKET_RATE_LIMIT) and the other 8
    answered 429? A limit tested before the request and deducted after its answer lets all 10
    through (OWASP ASVS 4.0.3 11.1.4)."""
    session_cookie = _signed_in(app, customer).get_cookie(app.config["SESSION_COOKIE_NAME"])
    clients = []
    for _ in range(10):
        client = app.test_client()
        client.set_cookie(session_cookie.key, session_cookie.value)
        clients.append(client)
    create_ticket = services.create_ticket

    def slow_create_ticket(*args, **kwargs):
        time.sleep(0.3)
        return create_ticket(*args, **kwargs)

    monkeypatch.setattr(services, "create_ticket", slow_create_ticket)
    barrier = threading.Barrier(len(clients))
    statuses: list[int | str] = ["not run"] * len(clients)

    def post(index: int) -> None:
        barrier.wait(timeout=30)
        statuses[index] = clients[index].post(CREATE, data={"subject": f"Ticket {index}", "description": "x"}).status_code

    threads = [threading.Thread(target=post, args=(index,)) for index in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(statuses, key=str) == [302, 302] + [429] * 8, statuses
    assert [row[1] for row in _tickets(app)] == [customer.id, customer.id]
    with app.app_context():
        created = db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "TICKET_CREATED"))
    assert created == 2


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "TICKET_RATE_LIMIT": "2 per hour"}])
def test_ticket_limit_is_a_rolling_hour(app, customer):
    """Is TICKET_RATE_LIMIT counted over the last hour, wherever it starts: with one ticket at
    0:00 and one at 0:50, is only one more allowed at 1:01 (the 0:50 ticket is still within the
    hour)? A fixed window restarts at 1:00 and allows two, so around its restart a customer
    opens twice the limit within one hour."""
    import time_machine

    with time_machine.travel(1_900_000_000, tick=False) as clock:
        opened = []
        for minutes in (0, 50, 11):
            clock.shift(minutes * 60)
            client = _signed_in(app, customer)  # afresh: the session's idle timeout is shorter
            response = client.post(CREATE, data={"subject": f"After {minutes} min", "description": "x"})
            opened.append((response.status_code, response.headers.get("Location")))
        after_the_hour = client.post(CREATE, data={"subject": "Another", "description": "x"}).status_code

    assert opened == [(302, MY_TICKETS)] * 3
    assert after_the_hour == 429
    assert len(_tickets(app)) == 3


@pytest.mark.parametrize("app_overrides", [{"RATELIMIT_ENABLED": True, "TICKET_RATE_LIMIT": "2 per hour"}])
def test_refused_ticket_forms_do_not_use_up_the_limit(app, customer):
    """Do invalid submissions (400) leave the customer's ticket allowance untouched, so only
    tickets actually opened count against TICKET_RATE_LIMIT?"""
    client = _signed_in(app, customer)

    refused = [client.post(CREATE, data={"subject": "", "description": "x"}).status_code for _ in range(3)]
    opened = [client.post(CREATE, data={"subject": f"Ticket {n}", "description": "x"}).status_code for n in range(3)]

    assert refused == [400, 400, 400]
    assert opened == [302, 302, 429]


# --- the tickets against the audit trail (flask verify-audit) ------------------------------


def _support_history(app, customer, support_user) -> tuple[int, int]:
    """Two tickets: one answered by support with a reply and resolved, one left open; returns
    (answered ticket id, open ticket id)."""
    answered = _make_ticket(app, customer, "Card not arriving", "Ordered 3 weeks ago.")
    untouched = _make_ticket(app, customer, "Statement", "Please send a statement.")
    client = _signed_in(app, support_user)
    assert client.post(detail(answered), data={"status": "in_progress", "note": "We are on it."}).status_code == 302
    assert client.post(detail(answered), data={"status": "resolved", "note": "New card sent."}).status_code == 302
    return answered, untouched


def _sql(app, statement: str, **params) -> None:
    from sqlalchemy import text

    with app.app_context():
        db.session.execute(text(statement), params)
        db.session.commit()


def test_verify_audit_follows_tickets_and_replies(app, runner, customer, support_user):
    """After tickets are opened, answered and resolved through the app, do they match the audit
    trail, so verify-audit passes and says so?"""
    _support_history(app, customer, support_user)

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output
    assert "every support ticket and reply, match it" in result.output


@pytest.mark.parametrize(("tampering", "reported"), [
    ("fake reply", "ticket {answered}: the number of replies is 3, but the audit trail records 2"),
    ("reply rewritten", "ticket {answered}: reply {first_note} is not what audit row"),
    ("reply moved", "ticket {untouched}: the number of replies is 1, but the audit trail records 0"),
    ("text rewritten", "ticket {untouched}: its subject or description is not what TICKET_CREATED recorded"),
    ("status reopened", "ticket {answered}: its status is 'open', but the audit trail says 'resolved'"),
    ("ticket handed over", "ticket {untouched}: its customer is {other}, but the audit trail says {customer}"),
    ("ticket inserted", "ticket {inserted}: no TICKET_CREATED audit row records it"),
])
def test_verify_audit_reports_a_ticket_or_reply_changed_behind_the_app(app, runner, customer, other_customer,
                                                                       support_user, tampering, reported):
    """Is a ticket or a reply inserted, rewritten, moved or re-statused with SQL (a fake reply
    from "support" asking the customer for their password, say) reported by verify-audit with
    exit status 1, naming the ticket, though the chain itself holds?"""
    answered, untouched = _support_history(app, customer, support_user)
    with app.app_context():
        first_note = db.session.scalar(select(func.min(TicketNote.id)).where(TicketNote.ticket_id == answered))
    statements = {
        "fake reply": ("INSERT INTO ticket_note (ticket_id, author_id, body, created_at) "
                       "VALUES (:answered, :support, 'Please send us your password.', CURRENT_TIMESTAMP)"),
        "reply rewritten": "UPDATE ticket_note SET body = 'Send your password to help@example.net' WHERE id = :note",
        "reply moved": "UPDATE ticket_note SET ticket_id = :untouched WHERE id = :note",
        "text rewritten": "UPDATE support_ticket SET description = 'Never mind.' WHERE id = :untouched",
        "status reopened": "UPDATE support_ticket SET status = 'open' WHERE id = :answered",
        "ticket handed over": "UPDATE support_ticket SET customer_id = :other WHERE id = :untouched",
        "ticket inserted": ("INSERT INTO support_ticket (customer_id, subject, description, status, created_at, "
                            "updated_at) VALUES (:customer, 'Hi', 'Call me', 'open', CURRENT_TIMESTAMP, "
                            "CURRENT_TIMESTAMP)"),
    }
    _sql(app, statements[tampering], answered=answered, untouched=untouched, support=support_user.id,
         note=first_note, other=other_customer.id, customer=customer.id)
    with app.app_context():
        inserted = db.session.scalar(select(func.max(SupportTicket.id)))

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    assert "Audit chain holds" in result.output
    assert reported.format(answered=answered, untouched=untouched, first_note=first_note, other=other_customer.id,
                           customer=customer.id, inserted=inserted) in result.output
