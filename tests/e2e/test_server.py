"""End to end: the real server in a subprocess, driven over HTTP with the standard library.

A fresh empty database of the suite's backend (a SQLite file, or a new PostgreSQL database) is
migrated with `flask db upgrade`, `flask run` serves it on a free port
(APP_ENV=testing, CSRF on, so every POST carries the token from its form), and a cookie-keeping
urllib opener walks register → log in → open two accounts → internal transfer → external
transfer to a second customer → transactions, checking the balances shown. Afterwards
`flask verify-ledger` and `flask verify-audit` must pass on that database.
"""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import csrf_token_from

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "purple otter quietly sings 1987"
MASK = "\u2022\u2022\u2022\u2022"
STARTUP_SECONDS = 15
COMMAND_SECONDS = 30


@dataclass
class Server:
    base_url: str
    env: dict[str, str]


def _flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app run.py <args>` with the test environment; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "run.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, test_backend) -> Iterator[Server]:
    """A migrated database and `flask run` serving it; the process is always stopped and the
    database removed afterwards."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    database_url = test_backend.create(migrated=False)
    try:
        yield from _serve(tmp_path, database_url)
    finally:
        test_backend.drop(database_url)


def _serve(tmp_path: Path, database_url: str) -> Iterator[Server]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLASK_", "SECRET_KEY",
                                                                                  "AUDIT_HMAC_KEY", "MFA_"))}
    env.update(APP_ENV="testing", DATABASE_URL=database_url, PYTHONUNBUFFERED="1")
    migrated = _flask(env, "db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr

    port = _free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "run.py", "run", "--host", "127.0.0.1", "--port", str(port),
             "--no-reload", "--no-debugger"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"server exited:\n{log_path.read_text(errors='replace')}"
            try:
                with urllib.request.urlopen(base_url + "/auth/login", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert time.monotonic() < deadline, f"server did not start:\n{log_path.read_text(errors='replace')}"
            time.sleep(0.1)
        yield Server(base_url, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Browser:
    """A cookie-keeping HTTP client that follows redirects, like a user's browser."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def get(self, path: str) -> tuple[str, str]:
        """GET `path`; returns (final path after redirects, page text). Fails on any error status."""
        return self._open(urllib.request.Request(self.base_url + path))

    def post(self, path: str, fields: dict[str, str]) -> tuple[str, str]:
        """POST `fields` form-encoded to `path`; returns (final path, page text)."""
        data = urllib.parse.urlencode(fields).encode()
        return self._open(urllib.request.Request(self.base_url + path, data=data, method="POST"))

    def submit(self, path: str, fields: dict[str, str]) -> tuple[str, str]:
        """GET the form at `path`, then POST `fields` to it with the form's CSRF token."""
        _, page = self.get(path)
        return self.post(path, {"csrf_token": csrf_token_from(page), **fields})

    def _open(self, request: urllib.request.Request) -> tuple[str, str]:
        try:
            with self.opener.open(request, timeout=10) as response:
                return urllib.parse.urlsplit(response.geturl()).path, response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            with error:
                body = error.read().decode("utf-8", "replace")
            pytest.fail(f"{request.get_method()} {request.full_url} answered {error.code}:\n{body[:2000]}")


def _register(browser: Browser, name: str, email: str) -> None:
    where, page = browser.submit("/auth/register", {"full_name": name, "email": email, "phone": "+44 20 7946 0000",
                                                    "password": PASSWORD, "confirm_password": PASSWORD})
    assert where == "/auth/login" and "Your account was created" in page


def _login(browser: Browser, email: str) -> None:
    where, page = browser.submit("/auth/login", {"email": email, "password": PASSWORD})
    assert where == "/banking/dashboard", page[:500]


def _logout(browser: Browser) -> None:
    where, _ = browser.submit("/auth/logout", {})
    assert where == "/auth/login"


def _open_account(browser: Browser, account_type: str, deposit: str) -> str:
    where, page = browser.submit("/banking/open-account", {"type": account_type, "opening_balance": deposit})
    assert where == "/banking/dashboard"
    return re.search(r"Account ([0-9]{12}) opened\.", page).group(1)


def _transfer(browser: Browser, path: str, fields: dict[str, str]) -> str:
    """Fill the transfer form at `path`: account numbers in `fields` are turned into the select's
    option ids, and the form's own idempotency key is sent. Returns the dashboard text."""
    _, form = browser.get(path)
    options = {number: value for value, number in re.findall(r'<option value="(\d+)">([0-9]{12}) ', form)}
    key = re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', form).group(1)
    data = {name: options.get(value, value) for name, value in fields.items()}
    where, page = browser.post(path, {"csrf_token": csrf_token_from(form), "idempotency_key": key, **data})
    assert where == "/banking/dashboard", html.unescape(page)[:3000]
    assert "Transfer complete." in page
    return page


def _balance(dashboard: str, number: str) -> str:
    match = re.search(re.escape(number) + r".*?Balance <strong>([0-9,.]+)</strong>", dashboard, re.S)
    assert match, f"account {number} not on the dashboard"
    return match.group(1)


def test_customer_path_over_real_http(server: Server):
    """Over real HTTP with CSRF on: can two customers register and log in, the first open two
    accounts and move money internally and to the second, with the right balances and
    transactions shown, and do verify-ledger and verify-audit pass on the resulting database?"""
    alice, bob = Browser(server.base_url), Browser(server.base_url)
    _register(alice, "Alice Example", "alice@example.com")
    _register(bob, "Bob Example", "bob@example.com")

    _login(bob, "bob@example.com")
    bob_number = _open_account(bob, "checking", "10.00")
    _login(alice, "alice@example.com")
    checking = _open_account(alice, "checking", "500.00")
    savings = _open_account(alice, "savings", "0")

    _transfer(alice, "/banking/transfer/internal", {"source_account": checking, "target_account": savings,
                                                    "amount": "120.50", "description": "Rainy day"})
    dashboard = _transfer(alice, "/banking/transfer/external", {
        "source_account": checking, "target_account_number": bob_number, "amount": "79.50",
        "description": "Dinner"})

    assert _balance(dashboard, checking) == "300.00"
    assert _balance(dashboard, savings) == "120.50"
    assert bob_number not in dashboard
    _, listing = alice.get("/banking/transactions")
    assert "-120.50" in listing and "-79.50" in listing and "500.00" in listing
    assert MASK + bob_number[-4:] in listing and bob_number not in listing
    _, bob_dashboard = bob.get("/banking/dashboard")
    assert _balance(bob_dashboard, bob_number) == "89.50"
    _, bob_listing = bob.get("/banking/transactions")
    assert MASK + checking[-4:] in bob_listing and checking not in bob_listing
    _logout(alice)
    assert alice.get("/banking/dashboard")[0] == "/auth/login"

    ledger = _flask(server.env, "verify-ledger")
    audit = _flask(server.env, "verify-audit")
    assert ledger.returncode == 0, ledger.stdout + ledger.stderr
    assert "Ledger consistent: 3 accounts" in ledger.stdout
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "Audit chain holds" in audit.stdout


def test_post_without_csrf_token_is_refused_over_http(server: Server):
    """Does the real server refuse a POST that lacks the CSRF token with a plain 400 page?"""
    request = urllib.request.Request(server.base_url + "/auth/login", method="POST",
                                     data=urllib.parse.urlencode({"email": "a@example.com", "password": "x"}).encode())

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)

    with refused.value as error:
        body = error.read().decode()
    assert error.code == 400
    assert "The form expired or was not sent by this site." in body
    assert "Traceback" not in body
