"""A customer turns on two-step sign-in in a real browser and then signs in with a code. The test
plays the authenticator app: it reads the key the setup page shows as text (as a person would
type it into an app) and computes the codes with app.auth.mfa.code_at."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from app.auth import mfa
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.e2e

CODE_LABEL = "Code from your authenticator app"


def test_customer_enrols_an_authenticator_and_signs_in_with_a_code(open_browser, live_bank):
    """Does enrolment with the key shown as text work, is the enrolment code refused a second time,
    and does the next code complete the sign-in?"""
    user, _ = live_bank.customer(balance="40.00", full_name="Mia Factor")
    you = open_browser("mfa")
    you.log_in(user.email, DEFAULT_PASSWORD)

    you.click_nav("Mia Factor customer")
    expect(you.page.locator("main dl")).to_contain_text("Off")
    you.click_link("Turn on two-step sign-in")
    you.expect_path("/auth/mfa/setup")
    expect(you.page.get_by_role("img", name="QR code holding your authenticator key")).to_be_visible()
    key = you.page.locator("#mfa-key").inner_text().replace(" ", "")
    step = int(time.time()) // mfa.STEP_SECONDS
    you.fill(CODE_LABEL, mfa.code_at(key, step))
    you.check_page("mfa-setup")
    you.press("Confirm")
    you.expect_path("/banking/dashboard")
    assert "Two-step sign-in is on." in you.flash()
    you.log_out()

    you.fill("Email", user.email)
    you.fill("Password", DEFAULT_PASSWORD)
    you.press("Log in")
    you.expect_path("/auth/mfa")
    you.check_page("mfa-code")
    you.fill(CODE_LABEL, mfa.code_at(key, step))  # already used to enrol: each code works once
    you.press("Confirm", status=400)
    expect(you.page.locator("main .alert-danger")).to_be_visible()
    you.check_page("mfa-code-refused")
    you.fill(CODE_LABEL, mfa.code_at(key, step + 1))  # the app's next code (one step of drift is allowed)
    you.press("Confirm")
    you.expect_path("/banking/dashboard")
    assert "Welcome, Mia Factor." in you.flash()
    you.click_nav("Mia Factor customer")
    expect(you.page.locator("main dl")).to_contain_text("On")
    you.check_page("profile-mfa-on")
