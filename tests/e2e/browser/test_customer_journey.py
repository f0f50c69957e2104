"""A new customer's whole journey in a real browser (Chromium through Playwright): register, log
in, open a checking account with an opening deposit and a savings account, move money between
them, pay another customer by account number, filter the transactions list by date and amount,
open a support ticket, edit the profile, log out. Every main page is checked for health, labels
and both widths, and photographed (tests/e2e/browser/pages.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.browser.pages import table_rows

pytestmark = pytest.mark.e2e

PASSWORD = "purple otter quietly sings 1987"
OPENED = re.compile(r"Account ([0-9]{12}) opened\.")


def balance_on_dashboard(visitor, number: str) -> str:
    """The balance the dashboard card of account `number` shows."""
    header = visitor.page.locator(".card-header", has_text=number)
    return header.locator("strong").last.inner_text()


def open_account(you, account_type: str, deposit: str) -> str:
    you.click_nav("Open account")
    you.choose("Account type", account_type)
    you.fill("Opening deposit", deposit)
    you.press("Open account")
    you.expect_path("/banking/dashboard")
    return OPENED.search(you.flash()).group(1)


def test_customer_journey_from_registration_to_logout(open_browser, live_bank):
    """Can a new customer do everything a customer does, through the pages alone, with every page
    healthy at 1280 and 375 px?"""
    payee, payee_account = live_bank.customer(balance="10.00", full_name="Priya Payee")
    you = open_browser("customer")

    you.open("/")
    you.expect_path("/auth/login")
    you.check_page("login")
    you.click_nav("Register")
    you.fill("Full name", "Casey Customer")
    you.fill("Email", "casey@example.com")
    you.fill("Phone", "+44 20 7946 0018")
    you.fill("Password", PASSWORD)
    you.fill("Confirm password", PASSWORD)
    you.check_page("register")
    you.press("Create account")
    you.expect_path("/auth/login")
    assert "Your account was created" in you.flash()

    you.fill("Email", "casey@example.com")
    you.fill("Password", PASSWORD)
    you.press("Log in")
    you.expect_path("/banking/dashboard")
    expect(you.page.locator("main")).to_contain_text("You have no accounts yet")
    you.check_nav_toggler()

    you.click_nav("Open account")
    you.check_page("open-account")
    checking = open_account(you, "Checking", "500.00")
    savings = open_account(you, "Savings", "0.00")
    assert balance_on_dashboard(you, checking) == "500.00"
    assert balance_on_dashboard(you, savings) == "0.00"

    you.click_nav("Transfer between my accounts")
    you.choose("From account", checking)
    you.choose("To account", savings)
    you.fill("Amount", "120.50")
    you.fill("Description", "Rainy day fund")
    you.check_page("transfer-form")
    you.press("Transfer")
    you.expect_path("/banking/dashboard")
    assert "Transfer complete." in you.flash()

    you.click_nav("Transfer to another account")
    you.choose("From account", checking)
    you.fill("To account number", payee_account.account_number)
    you.fill("Amount", "79.50")
    you.fill("Description", "Dinner on Friday")
    you.check_page("transfer-external-form")
    you.press("Transfer")
    assert "Transfer complete." in you.flash()
    assert balance_on_dashboard(you, checking) == "300.00"
    assert balance_on_dashboard(you, savings) == "120.50"
    expect(you.page.locator("main")).not_to_contain_text(payee_account.account_number)
    expect(you.page.locator("main")).to_contain_text("\u2022\u2022\u2022\u2022" + payee_account.account_number[-4:])
    you.check_page("dashboard")

    you.click_nav("My transactions")
    assert len(table_rows(you.page)) == 4  # deposit, internal debit and credit, payment
    today = datetime.now(UTC).date()
    you.fill("From (UTC)", (today - timedelta(days=1)).isoformat())
    you.fill("To (UTC)", today.isoformat())
    you.fill("Min amount", "100")
    you.fill("Max amount", "200")
    you.press("Filter")
    rows = table_rows(you.page)
    assert len(rows) == 2 and all("120.50" in row for row in rows), rows
    assert sum("-120.50" in row for row in rows) == 1
    assert you.page.get_by_label("Min amount").input_value() == "100"
    you.check_page("transactions-filtered")

    you.click_nav("Support ticket")
    you.fill("Subject", "Card for my savings account")
    you.fill("Describe your request", "Hello,\nplease send me a card for my new savings account.")
    you.check_page("support-ticket-form")
    you.press("Send to support")
    you.expect_path("/support/my-tickets")
    assert re.search(r"Ticket #\d+ sent\.", you.flash())
    expect(you.page.locator("main")).to_contain_text("Card for my savings account")
    you.check_page("my-tickets")

    you.click_nav(re.compile(r"^Casey Customer"))
    you.fill("Full name", "Casey Q. Customer")
    you.fill("Phone", "+44 20 7946 0999")
    you.press("Save")
    you.expect_path("/auth/profile")
    assert "Your profile was updated." in you.flash()
    expect(you.page.get_by_label("Full name")).to_have_value("Casey Q. Customer")
    expect(you.page.locator("nav.navbar")).to_contain_text("Casey Q. Customer")
    you.check_page("profile")

    you.log_out()
    assert "You have been logged out." in you.flash()
    you.open("/banking/dashboard")
    you.expect_path("/auth/login")
    you.assert_healthy()
