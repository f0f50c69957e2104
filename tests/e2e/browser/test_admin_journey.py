"""The seeded administrator's journey in a real browser: first sign-in with the development
password, the forced password change (no other page opens until it is done), promoting one user
to support and another to auditor, freezing a customer's account — the customer's transfer from
it is then refused on the page, in their own browser — and unfreezing it, after which the same
transfer goes through."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.browser.pages import table_rows
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.e2e

NEW_ADMIN_PASSWORD = "granite harbour lamplight 4417"


def edit_role(admin, user, role: str) -> None:
    """From the users list: the user's Edit link, choose `role`, Save."""
    row = admin.page.locator("main table tbody tr", has_text=user.email)
    with admin.page.expect_navigation():
        row.get_by_role("link", name="Edit").click()
    admin.expect_path(f"/banking/admin/users/{user.id}/edit")
    admin.choose("Role", role)
    admin.press("Save")
    admin.expect_path("/banking/admin/users")
    assert f"User {user.id} updated." in admin.flash()
    expect(admin.page.locator("main table tbody tr", has_text=user.email)).to_contain_text(role.lower())


def test_admin_journey_password_change_roles_and_freeze(open_browser, live_bank):
    """Is the seeded admin held at the password change, and can they then promote users and freeze
    an account so that its owner's transfer is refused in the page, then unfreeze it?"""
    agent, _ = live_bank.customer(full_name="Sam Agent", email="sam.agent@example.com")
    auditor, _ = live_bank.customer(full_name="Ada Auditor", email="ada.auditor@example.com")
    owner, account = live_bank.customer(balance="250.00", full_name="Fay Frost", email="fay.frost@example.com")
    _, payee_account = live_bank.customer(balance="5.00", full_name="Gil Payee", email="gil.payee@example.com")
    admin = open_browser("admin")

    admin.log_in(live_bank.admin_email, live_bank.admin_password)
    admin.expect_path("/auth/change-password")
    assert "You must change your password before continuing." in admin.flash()
    admin.check_page("forced-password-change")
    admin.open("/banking/admin/users")
    admin.expect_path("/auth/change-password")
    admin.fill("Current password", live_bank.admin_password)
    admin.fill("New password", NEW_ADMIN_PASSWORD)
    admin.fill("Confirm new password", NEW_ADMIN_PASSWORD)
    admin.press("Change password")
    admin.expect_path("/banking/dashboard")
    assert "Your password was changed." in admin.flash()
    admin.check_page("admin-dashboard")
    admin.check_nav_toggler()

    admin.click_nav("Users")
    edit_role(admin, agent, "Support")
    admin.check_page("user-updated")
    edit_role(admin, auditor, "Auditor")
    expect(admin.page.locator("main table tbody tr", has_text=live_bank.admin_email)).not_to_contain_text(
        "must change password")
    admin.check_page("admin-users")

    admin.click_nav("Accounts")
    admin.fill("Account number", account.account_number)
    admin.press("Search")
    assert len(table_rows(admin.page)) == 1
    admin.press("Freeze")
    admin.expect_path("/banking/admin/accounts")
    assert "Account frozen." in admin.flash()
    frozen_row = admin.page.locator("main table tbody tr", has_text=account.account_number)
    expect(frozen_row).to_contain_text("frozen")
    admin.check_page("admin-accounts-frozen")

    customer = open_browser("frozen-customer")
    customer.log_in(owner.email, DEFAULT_PASSWORD)
    expect(customer.page.locator("main .card-header", has_text=account.account_number)).to_contain_text("frozen")
    customer.click_nav("Transfer to another account")
    customer.choose("From account", account.account_number)
    customer.fill("To account number", payee_account.account_number)
    customer.fill("Amount", "40.00")
    customer.fill("Description", "Rent share")
    customer.press("Transfer", status=400)
    assert "The source account is frozen or closed and cannot send money." in customer.flash()
    customer.check_page("transfer-refused-frozen")

    with admin.page.expect_navigation():
        frozen_row.get_by_role("button", name="Unfreeze").click()
    assert "Account unfrozen." in admin.flash()
    expect(admin.page.locator("main table tbody tr", has_text=account.account_number)).to_contain_text("active")
    admin.check_page("admin-accounts-unfrozen")

    customer.press("Transfer")  # the same form, sent again
    customer.expect_path("/banking/dashboard")
    assert re.search(r"Transfer complete\. Reference TX-[0-9A-F]{16}\.", customer.flash())
    expect(customer.page.locator("main .card-header", has_text=account.account_number)).to_contain_text("210.00")
    customer.check_page("dashboard-after-unfreeze")
