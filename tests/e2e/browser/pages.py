"""What every browser journey uses: a person at a browser (`Visitor`), the health of every page
they see (`PageHealth`), the checks run on each main page, and where screenshots go.

Not a test module. The journeys (test_*_journey.py) click and type through the pages like a person;
after each main page they call `Visitor.check_page`, which asserts:

* health: no console error, no uncaught script error, no Content-Security-Policy violation (the
  `securitypolicyviolation` DOM event, reported to Python through an exposed binding, besides
  Chromium's console message), no failed request, no response of 400 or more that the journey did
  not expect, and no request to any origin but the app's (from Playwright's request events);
* the page is styled (Bootstrap's stylesheet applied, its script loaded);
* every visible form control has a visible label, and every visible button a name;
* at 1280 px and at 375 px wide nothing overflows sideways, and at 375 px the navbar is collapsed
  behind its toggler (opening it is checked once per journey, `Visitor.check_nav_toggler`);
* a screenshot (viewport, 1280 x 800 unless the journey is at 375 px) into the screenshot folder.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import BrowserContext, ConsoleMessage, Page, Request, Response, expect

REPO = Path(__file__).resolve().parents[3]
WIDE, NARROW, HEIGHT = 1280, 375, 800
# Every journey's screenshots: reports/screenshots/<journey>/ (reports/ is not committed), or
# BANK_SCREENSHOTS_DIR. `make screenshots` also sets BANK_README_SCREENSHOTS=docs/screenshots,
# which receives the few the README shows (README_SHOTS), under those names.
SCREENSHOTS_DIR = Path(os.environ.get("BANK_SCREENSHOTS_DIR") or REPO / "reports" / "screenshots")
README_SCREENSHOTS_DIR = os.environ.get("BANK_README_SCREENSHOTS", "").strip()
README_SHOTS = frozenset({"dashboard", "transfer-form", "admin-users", "audit-log"})

# Reports CSP violations to Python (an exposed binding: Playwright injects this script and the
# binding itself, so the page's own CSP does not block them).
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (event) => {
  window.__bankCspViolation(`${event.effectiveDirective} refused ${event.blockedURI || 'inline'}`
                            + ` on ${document.location.pathname}`);
});
"""

# Visible form controls without a visible label, and visible buttons without a name.
UNLABELLED = """
() => {
  const shown = (node) => node.getClientRects().length > 0 && getComputedStyle(node).visibility !== 'hidden';
  const describe = (node) => node.outerHTML.slice(0, 160);
  const problems = [];
  for (const control of document.querySelectorAll('input, select, textarea')) {
    const type = (control.getAttribute('type') || '').toLowerCase();
    if (['hidden', 'submit', 'button', 'reset', 'image'].includes(type) || !shown(control)) continue;
    const labels = Array.from(control.labels || []).filter((label) => shown(label) && label.textContent.trim());
    if (labels.length === 0) problems.push('no visible label: ' + describe(control));
  }
  for (const button of document.querySelectorAll('button, input[type=submit], input[type=button]')) {
    if (!shown(button)) continue;
    const name = (button.getAttribute('aria-label') || button.value || button.textContent || '').trim();
    if (!name) problems.push('button without a name: ' + describe(button));
  }
  return problems;
}
"""

OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
STYLED = """
() => ({
  navbar: document.querySelector('.navbar') && getComputedStyle(document.querySelector('.navbar')).backgroundColor,
  bootstrapCss: getComputedStyle(document.documentElement).getPropertyValue('--bs-primary').trim(),
  bootstrapJs: typeof window.bootstrap === 'object' && typeof window.bootstrap.Collapse === 'function',
})
"""
BOOTSTRAP_DARK = "rgb(33, 37, 41)"  # .bg-dark, only when Bootstrap's stylesheet applies


class PageHealth:
    """Collects what goes wrong while a page is open: console errors, script errors, CSP
    violations, failed requests, unexpected error statuses, requests to other origins."""

    def __init__(self, context: BrowserContext, page: Page, origin: str) -> None:
        self.origin = origin
        self.problems: list[str] = []
        # (method, url, status) the journey announced; their status and its console line are fine.
        self._expected: list[tuple[str, str, int]] = []
        context.expose_function("__bankCspViolation", lambda text: self.problems.append(f"CSP violation: {text}"))
        context.add_init_script(CSP_LISTENER)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"script error: {error}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", self._response)

    def expect_status(self, method: str, url: str, status: int) -> None:
        """`method url` may answer `status` (a form refused with 400, say) until the next action."""
        self._expected.append((method, url, status))

    def clear_expected(self) -> None:
        self._expected = []

    def _is_expected(self, url: str, status: int, method: str | None = None) -> bool:
        return any(u == url and s == status and (method is None or m == method) for m, u, s in self._expected)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        match = re.fullmatch(r"Failed to load resource: the server responded with a status of (\d+) .*", message.text)
        if match and self._is_expected(message.location.get("url", ""), int(match.group(1))):
            return
        self.problems.append(f"console error: {message.text} ({message.location.get('url')})")

    def _request(self, request: Request) -> None:
        url = urlsplit(request.url)
        if url.scheme == "data":
            return  # inline data (the CSP allows data: images), not a request to any origin
        if f"{url.scheme}://{url.netloc}" != self.origin:
            self.problems.append(f"request to another origin: {request.method} {request.url}")

    def _failed(self, request: Request) -> None:
        self.problems.append(f"failed request: {request.method} {request.url} ({request.failure})")

    def _response(self, response: Response) -> None:
        method = response.request.method
        if response.status >= 400 and not self._is_expected(response.url, response.status, method):
            self.problems.append(f"error status: {method} {response.url} answered {response.status}")

    def take(self) -> list[str]:
        """The problems seen since the last call (and forget them)."""
        problems, self.problems = self.problems, []
        return problems


@dataclass
class Visitor:
    """One person at one browser window (their own context: cookies, viewport)."""

    journey: str
    page: Page
    health: PageHealth
    width: int
    shots: list[Path] = field(default_factory=list)

    # --- moving around, like a person -----------------------------------------------------------

    def open(self, path: str) -> Response | None:
        """Type `path` into the address bar."""
        self.health.clear_expected()
        return self.page.goto(path)

    def _open_menu(self) -> None:
        """At narrow widths the navbar is collapsed: tap its toggler, as a person would."""
        toggler = self.page.locator("nav.navbar .navbar-toggler")
        if toggler.count() and toggler.is_visible() and toggler.get_attribute("aria-expanded") != "true":
            toggler.click()
            expect(self.page.locator("#main-nav")).to_have_class(re.compile(r"\bshow\b"))

    def click_nav(self, name: str | re.Pattern) -> None:
        """Click the navbar link `name` (exact text, or a pattern), opening the menu if collapsed."""
        self._open_menu()
        link = self.page.locator("nav.navbar").get_by_role("link", name=name, exact=isinstance(name, str) or None)
        self.health.clear_expected()
        with self.page.expect_navigation():
            link.click()

    def click_link(self, name: str, *, within: str = "main") -> None:
        """Click the (first) link named `name` in the page's content."""
        self.health.clear_expected()
        with self.page.expect_navigation():
            self.page.locator(within).get_by_role("link", name=name, exact=True).first.click()

    def fill(self, label: str, value: str) -> None:
        """Type `value` into the field labelled `label` (found by its label, as a person would)."""
        self.page.get_by_label(label, exact=True).fill(value)

    def choose(self, label: str, option: str) -> None:
        """Pick, in the select labelled `label`, the option whose text contains `option`."""
        select = self.page.get_by_label(label, exact=True)
        texts = select.locator("option").all_inner_texts()
        matching = [text for text in texts if option in text]
        assert len(matching) == 1, f"{label}: one option containing {option!r} expected among {texts}"
        select.select_option(label=matching[0])

    def press(self, button: str, *, status: int = 200, within: str = "main") -> Response:
        """Click the button named `button` and wait for the page it leads to; its status (after
        redirects) must be `status` (a refused form answers 400)."""
        self.health.clear_expected()
        if status != 200:
            self.health.expect_status("POST", self.page.url.split("#")[0], status)
        with self.page.expect_navigation() as navigation:
            self.page.locator(within).get_by_role("button", name=button, exact=True).click()
        assert navigation.value.status == status, f"{button}: answered {navigation.value.status}, not {status}"
        return navigation.value

    def log_in(self, email: str, password: str) -> None:
        self.open("/auth/login")
        self.fill("Email", email)
        self.fill("Password", password)
        self.press("Log in")

    def log_out(self) -> None:
        """The navbar's Log out button (a POST with the CSRF token)."""
        self._open_menu()
        self.health.clear_expected()
        with self.page.expect_navigation():
            self.page.locator("nav.navbar").get_by_role("button", name="Log out", exact=True).click()
        expect(self.page).to_have_url(re.compile(r"/auth/login$"))

    # --- what the person sees ---------------------------------------------------------------------

    def flash(self) -> str:
        """The text of the page's alerts (flash messages and form-level errors)."""
        return " ".join(self.page.locator("main .alert").all_inner_texts())

    def expect_path(self, path: str) -> None:
        expect(self.page).to_have_url(re.compile(re.escape(path) + r"(\?.*)?$"))

    # --- checks -----------------------------------------------------------------------------------

    def assert_healthy(self) -> None:
        problems = self.health.take()
        assert problems == [], f"{self.journey} at {self.page.url}:\n" + "\n".join(problems)

    def check_page(self, name: str) -> None:
        """Health, styling, labels and both widths on the current page, then its screenshot."""
        page = self.page
        page.wait_for_load_state("load")
        styled = page.evaluate(STYLED)
        assert styled["bootstrapCss"], f"{name}: Bootstrap's stylesheet is not applied"
        if page.locator("nav.navbar").count():
            assert styled["navbar"] == BOOTSTRAP_DARK, f"{name}: navbar not styled ({styled['navbar']})"
        assert styled["bootstrapJs"], f"{name}: Bootstrap's script did not load"
        for width in (self.width, *(w for w in (WIDE, NARROW) if w != self.width)):
            if width != self.width:
                page.set_viewport_size({"width": width, "height": HEIGHT})
            overflow = page.evaluate(OVERFLOW)
            assert overflow <= 1, f"{name} at {width} px: the page is {overflow} px wider than the window"
            unlabelled = page.evaluate(UNLABELLED)
            assert unlabelled == [], f"{name} at {width} px:\n" + "\n".join(unlabelled)
            toggler = page.locator("nav.navbar .navbar-toggler")
            if toggler.count():
                assert toggler.is_visible() == (width < 992), f"{name} at {width} px: navbar toggler visibility"
        page.set_viewport_size({"width": self.width, "height": HEIGHT})
        self.screenshot(name)
        self.assert_healthy()

    def check_nav_toggler(self) -> None:
        """At 375 px the menu is collapsed; the toggler (Bootstrap's script) opens and closes it."""
        page = self.page
        page.set_viewport_size({"width": NARROW, "height": HEIGHT})
        menu, toggler = page.locator("#main-nav"), page.locator("nav.navbar .navbar-toggler")
        first_link = menu.get_by_role("link").first
        expect(first_link).to_be_hidden()
        toggler.click()
        expect(menu).to_have_class(re.compile(r"\bshow\b"))
        expect(first_link).to_be_visible()
        expect(toggler).to_have_attribute("aria-expanded", "true")
        toggler.click()
        expect(menu).not_to_have_class(re.compile(r"\bshow\b"))
        page.set_viewport_size({"width": self.width, "height": HEIGHT})
        self.assert_healthy()

    def screenshot(self, name: str) -> Path:
        """Save the viewport as <folder>/<journey>/<nn>-<name>.png; a README shot also goes to
        BANK_README_SCREENSHOTS/<name>.png when that is set (`make screenshots`)."""
        folder = SCREENSHOTS_DIR / self.journey
        if not self.shots:
            shutil.rmtree(folder, ignore_errors=True)  # an earlier run's pictures
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{len(self.shots) + 1:02d}-{name}.png"
        self.page.screenshot(path=path)
        self.shots.append(path)
        if README_SCREENSHOTS_DIR and name in README_SHOTS and self.width == WIDE:
            readme_folder = Path(README_SCREENSHOTS_DIR)
            if not readme_folder.is_absolute():
                readme_folder = REPO / readme_folder
            readme_folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, readme_folder / f"{name}.png")
        return path


def table_rows(page: Page) -> list[str]:
    """The text of each body row of the page's main table (tab-separated cells)."""
    return [row.inner_text() for row in page.locator("main table tbody tr").all()]

