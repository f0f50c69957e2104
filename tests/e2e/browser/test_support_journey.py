"""A support agent works a customer's ticket to resolved with a note, in a real browser on a phone-
sized window (375 px: every move goes through the collapsed navbar); the customer, also on a phone,
opens the ticket first and reads the reply afterwards."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser.pages import NARROW
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.e2e

SUBJECT = "Transfer reference missing"
NOTE = "Hello! The reference is on your dashboard, next to the amount. Anything else, just reply."


def test_support_agent_resolves_a_ticket_with_a_note(open_browser, live_bank):
    """Can an agent find a new ticket, move it to in progress, then resolve it with a note that the
    customer reads on My tickets — all at 375 px?"""
    customer_user, _ = live_bank.customer(balance="20.00", full_name="Tom Ticket")
    agent_user = live_bank.staff("support", full_name="Sue Support")

    customer = open_browser("support-customer", width=NARROW)
    customer.log_in(customer_user.email, DEFAULT_PASSWORD)
    customer.click_nav("Support ticket")
    customer.fill("Subject", SUBJECT)
    customer.fill("Describe your request", "I can't find the reference of yesterday's transfer.")
    customer.press("Send to support")
    ticket_id = re.search(r"Ticket #(\d+) sent\.", customer.flash()).group(1)

    agent = open_browser("support", width=NARROW)
    agent.log_in(agent_user.email, DEFAULT_PASSWORD)
    agent.expect_path("/banking/dashboard")
    agent.check_page("support-dashboard")
    agent.check_nav_toggler()
    agent.click_nav("Support tickets")
    agent.choose("Status", "Open")
    agent.press("Filter")
    expect(agent.page.locator("main table tbody tr", has_text=SUBJECT)).to_contain_text("Open")
    agent.check_page("support-tickets-open")
    agent.click_link(SUBJECT)
    agent.expect_path(f"/support/tickets/{ticket_id}")
    agent.check_page("ticket")

    agent.choose("Status", "In progress")
    agent.press("Save")
    assert "Ticket updated." in agent.flash()
    expect(agent.page.locator("main dl")).to_contain_text("In progress")

    agent.choose("Status", "Resolved")
    agent.fill("Reply to the customer (optional)", NOTE)
    agent.press("Save")
    agent.expect_path(f"/support/tickets/{ticket_id}")
    assert "Ticket updated." in agent.flash()
    expect(agent.page.locator("main dl")).to_contain_text("Resolved")
    expect(agent.page.locator("main")).to_contain_text(NOTE)
    agent.check_page("ticket-resolved")
    agent.click_nav("Support tickets")
    expect(agent.page.locator("main table tbody tr", has_text=SUBJECT)).to_contain_text("Resolved")
    agent.log_out()

    customer.click_nav("My tickets")
    card = customer.page.locator("main section.card", has_text=SUBJECT)
    expect(card).to_contain_text("Resolved")
    expect(card).to_contain_text(NOTE)
    customer.check_page("my-tickets-replied")
