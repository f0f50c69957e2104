"""An auditor's journey in a real browser: find a customer's transfer in the audit log by action,
date and user, check the chain's integrity, and find both legs in all transactions by account
number — and, on every page, no control that changes anything (no form that posts, no button but
Filter, no link out of the read-only audit pages; the navbar's own Log out aside)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from tests.e2e.browser.pages import table_rows
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.e2e

CONTROLS = """
() => {
  const main = document.querySelector('main');
  const posting = Array.from(document.querySelectorAll('form'))
    .filter((form) => form.method.toLowerCase() !== 'get' && new URL(form.action).pathname !== '/auth/logout')
    .map((form) => form.outerHTML.slice(0, 160));
  const buttons = Array.from(main.querySelectorAll('button, input[type=submit], input[type=button]'))
    .map((button) => (button.textContent || button.value).trim());
  const links = Array.from(main.querySelectorAll('a[href]')).map((link) => new URL(link.href).pathname);
  return {posting, buttons, links};
}
"""


def assert_read_only(visitor) -> None:
    """Nothing on the page can change anything: no posting form but Log out, no button in the
    page but Filter, and every link in the page stays among the audit pages."""
    controls = visitor.page.evaluate(CONTROLS)
    assert controls["posting"] == [], controls["posting"]
    assert set(controls["buttons"]) <= {"Filter"}, controls["buttons"]
    assert all(path.startswith("/audit/") for path in controls["links"]), controls["links"]


def test_auditor_filters_the_audit_log_and_reads_all_transactions(open_browser, live_bank):
    """Can an auditor find a transfer in the audit log (by action, date, user) and in all
    transactions (by account number), and is there no control on those pages that changes
    anything?"""
    owner, checking = live_bank.customer(balance="300.00", full_name="Olly Owner")
    savings = live_bank.account(owner, "0.00", type="savings")
    auditor_user = live_bank.staff("auditor", full_name="Audrey Auditor")

    customer = open_browser("auditor-customer")
    customer.log_in(owner.email, DEFAULT_PASSWORD)
    customer.click_nav("Transfer between my accounts")
    customer.choose("From account", checking.account_number)
    customer.choose("To account", savings.account_number)
    customer.fill("Amount", "75.25")
    customer.fill("Description", "Quarterly savings")
    customer.press("Transfer")
    assert "Transfer complete." in customer.flash()

    auditor = open_browser("auditor")
    auditor.log_in(auditor_user.email, DEFAULT_PASSWORD)
    auditor.check_page("auditor-dashboard")
    assert_read_only(auditor)

    auditor.click_nav("Audit logs")
    expect(auditor.page.locator("main table tbody tr").first).to_be_visible()
    auditor.check_page("audit-log")
    assert_read_only(auditor)

    today = datetime.now(UTC).date()
    auditor.choose("Action", "TRANSFER_CREATED")
    auditor.fill("From (UTC)", (today - timedelta(days=1)).isoformat())  # even across midnight
    auditor.fill("To (UTC)", today.isoformat())
    auditor.press("Filter")
    rows = table_rows(auditor.page)
    assert rows and all("TRANSFER_CREATED" in row for row in rows), rows
    mine = [row for row in rows if checking.account_number in row and savings.account_number in row]
    assert len(mine) == 1 and "75.25" in mine[0], rows
    auditor.check_page("audit-log-transfers")
    assert_read_only(auditor)

    auditor.choose("Action", "Any")
    auditor.fill("User id", str(owner.id))
    auditor.press("Filter")
    rows = table_rows(auditor.page)
    actions = {row.split("\t")[3] for row in rows}
    assert {"LOGIN_SUCCESS", "TRANSFER_CREATED"} <= actions, rows
    assert all(row.split("\t")[2] == str(owner.id) for row in rows), rows
    auditor.check_page("audit-log-by-user")

    auditor.click_link("Verify integrity")
    expect(auditor.page.locator("main .alert-success")).to_contain_text("The chain holds")
    auditor.check_page("audit-verify")
    assert_read_only(auditor)

    auditor.click_nav("Transactions")
    auditor.check_page("all-transactions")
    assert_read_only(auditor)
    auditor.fill("Account number", checking.account_number)
    auditor.press("Filter")
    rows = table_rows(auditor.page)
    assert len(rows) == 2, rows  # the opening deposit and the transfer's debit
    assert any("-75.25" in row and savings.account_number in row for row in rows), rows
    auditor.check_page("all-transactions-by-account")
    assert_read_only(auditor)
