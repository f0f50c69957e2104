"""The checks every journey relies on can fail: each is shown one page that breaks its rule (a
script the CSP refuses, a request to another origin that fails, an error status, a control without
a label, a page wider than the window) and must report it. Without this, a check that never fires
would pass every journey."""

from __future__ import annotations

import pytest

from tests.e2e.browser.pages import OVERFLOW, UNLABELLED
from tests.e2e.multiprocess_support import free_port

pytestmark = pytest.mark.e2e


def problems_after(visitor, script: str) -> list[str]:
    """Run `script` in the page, let its events arrive, and return what the health monitor saw."""
    visitor.page.evaluate(script)
    for _ in range(50):
        if visitor.health.problems:
            break
        visitor.page.wait_for_timeout(20)
    visitor.page.wait_for_timeout(100)  # the rest of the same incident (console line, failure)
    return visitor.health.take()


def test_health_monitor_reports_csp_violations_and_error_statuses(open_browser):
    """Does an inline script (refused by the CSP) show as a CSP violation and a console error, and
    does a 404 page show as an error status?"""
    visitor = open_browser("checks")
    visitor.open("/auth/login")
    visitor.assert_healthy()

    problems = problems_after(visitor, """() => {
        const script = document.createElement('script');
        script.textContent = 'window.injected = true';
        document.body.append(script);
    }""")

    assert any(p.startswith("CSP violation: script-src-elem refused inline") for p in problems), problems
    assert any(p.startswith("console error: ") and "Content Security Policy" in p for p in problems), problems
    assert visitor.page.evaluate("window.injected") is None

    visitor.open("/no/such/page")
    problems = visitor.health.take()
    assert any(p.startswith("error status: GET ") and p.endswith("/no/such/page answered 404") for p in problems)


def test_health_monitor_reports_requests_to_other_origins(open_browser):
    """With the CSP bypassed (so the request leaves the page), is a fetch from another origin
    reported, and its failure too?"""
    visitor = open_browser("checks-origin", bypass_csp=True)
    visitor.open("/auth/login")
    visitor.assert_healthy()
    elsewhere = f"http://127.0.0.1:{free_port()}/tracker.js"  # nothing listens there

    problems = problems_after(visitor, f"() => fetch('{elsewhere}').catch(() => null)")

    assert f"request to another origin: GET {elsewhere}" in problems, problems
    assert any(p.startswith(f"failed request: GET {elsewhere}") for p in problems), problems


def test_label_and_width_checks_report_broken_pages(open_browser):
    """Are an input without a label, a button without a name and content wider than the window
    reported?"""
    visitor = open_browser("checks-layout")
    visitor.open("/auth/login")
    assert visitor.page.evaluate(UNLABELLED) == []
    assert visitor.page.evaluate(OVERFLOW) <= 0

    visitor.page.evaluate("""() => {
        const form = document.querySelector('main form');
        form.insertAdjacentHTML('beforeend', '<input id="orphan" name="orphan"><button type="button"></button>');
        document.querySelector('main').insertAdjacentHTML('beforeend', '<div class="wide-thing">x</div>');
        document.querySelector('.wide-thing').style.width = '2000px';
    }""")

    problems = visitor.page.evaluate(UNLABELLED)
    assert len(problems) == 2, problems
    assert problems[0].startswith('no visible label: <input id="orphan"'), problems
    assert problems[1].startswith("button without a name: <button"), problems
    assert visitor.page.evaluate(OVERFLOW) > 500
    visitor.assert_healthy()
