"""The browser suite's set-up: Debian's Chromium driven by Playwright (pytest-playwright's
fixtures), and one real server for the whole session.

* Browser: the executable named by BANK_CHROMIUM, default /usr/bin/chromium (Debian's `chromium`
  package). Playwright's own browser download is never used (`executable_path`). Without the
  executable every browser test is skipped with the reason (in the report header and the -ra
  summary); with REQUIRE_BROWSER=1 (.ci/run, `make screenshots`) they fail instead. One browser
  for the session, a new context (cookies, viewport) for every person in every test.
* Server: `flask run` on a free port against a fresh SQLite database migrated by
  `flask db upgrade`, with the seeded administrator (`flask seed-admin`, development password):
  the development configuration of `make run`, CSRF on, request rate limits off, keys given in
  the environment (tests/e2e/multiprocess_support.base_env; nothing is written to instance/).
  At the end the `verify-ledger` and `verify-audit` commands must pass on that database.
* Data that a journey needs but does not itself create through the pages (the other customer it
  pays, the staff user who works a ticket) is written straight to that database with
  tests/factories.py, as in the other suites.

The suite runs once per `make test`: in the SQLite pass (it starts its own server and database,
so the PostgreSQL pass skips it with that reason).
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask

from app.extensions import db
from tests import factories
from tests.e2e.browser.chromium import CHROMIUM_ARGS, chromium_executable
from tests.e2e.browser.pages import HEIGHT, WIDE, PageHealth, Visitor
from tests.e2e.multiprocess_support import (
    REPO,
    base_env,
    env_flag,
    flask_command,
    free_port,
    local_app,
    migrated_database,
    run_only_in_its_pass,
)

STARTUP_SECONDS = 20


@pytest.fixture(scope="session")
def chromium_path(request) -> str:
    """The Chromium executable, or skip (fail when REQUIRE_BROWSER=1) without one. In the
    PostgreSQL pass of `make test` the suite is skipped: it ran in the SQLite pass."""
    run_only_in_its_pass(request.config, "sqlite", "the browser suite (its own server and SQLite database)")
    path, reason = chromium_executable()
    if path is None:
        if env_flag("REQUIRE_BROWSER"):
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason.removeprefix('browser suite skipped: ')}")
        pytest.skip(reason)  # listed by -ra, and named in the report header (tests/conftest.py)
    return path


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium_path: str) -> dict:
    """pytest-playwright's launch options, with the system Chromium and the machine's flags."""
    return {**browser_type_launch_args, "executable_path": chromium_path, "args": CHROMIUM_ARGS}


@dataclass
class LiveBank:
    """The running server and this process's own app on the same database (for factories)."""

    base_url: str
    env: dict[str, str]
    app: Flask
    admin_email: str = "admin@example.com"
    admin_password: str = "Admin123!"

    def customer(self, balance: str | None = None, **kwargs):
        """A customer written to the database (password factories.DEFAULT_PASSWORD), with an
        account holding `balance` when given; returns (user, account or None)."""
        with self.app.app_context():
            user = factories.make_user("customer", **kwargs)
            account = factories.make_account(user, balance) if balance is not None else None
        return user, account

    def account(self, owner, balance: str, **kwargs):
        """Another account of `owner` (factories.make_account)."""
        with self.app.app_context():
            return factories.make_account(owner, balance, **kwargs)

    def staff(self, role: str, **kwargs):
        """A user of `role` ("support", "auditor", "admin") written to the database."""
        with self.app.app_context():
            return factories.make_user(role, **kwargs)


@pytest.fixture(scope="session")
def live_bank(chromium_path, tmp_path_factory) -> Iterator[LiveBank]:
    """`flask run` on a fresh migrated SQLite database with the seeded admin; stopped at the end,
    after checking the ledger and the audit chain the journeys left behind."""
    folder = tmp_path_factory.mktemp("browser")
    with migrated_database("sqlite", folder) as url:
        env = base_env(url)
        seeded = flask_command(env, "seed-admin")
        assert seeded.returncode == 0, seeded.stdout + seeded.stderr
        port = free_port()
        log_path = folder / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "run.py", "run", "--host", "127.0.0.1", "--port", str(port),
                 "--no-reload", "--no-debugger"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        app = local_app(url)
        try:
            _wait_until_up(process, base_url, log_path)
            yield LiveBank(base_url, env, app)
            runner = app.test_cli_runner()  # the same commands, in this process (no start-up cost)
            for command, answer in (("verify-ledger", "Ledger consistent"), ("verify-audit", "Audit chain holds")):
                checked = runner.invoke(args=[command])
                assert checked.exit_code == 0 and answer in checked.output, checked.output
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            with app.app_context():
                db.engine.dispose()


def _wait_until_up(process: subprocess.Popen, base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        assert process.poll() is None, f"server exited:\n{log_path.read_text(errors='replace')}"
        try:
            with urllib.request.urlopen(base_url + "/auth/login", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, f"server did not start:\n{log_path.read_text(errors='replace')}"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def base_url(live_bank: LiveBank) -> str:
    """The server's address, which pytest-playwright gives every context (`page.goto("/path")`).
    Also replaces the plugin's own `base_url` fixture (an instance method that pytest 9 warns
    about, and the suite turns warnings into errors)."""
    return live_bank.base_url


@pytest.fixture
def open_browser(new_context, live_bank: LiveBank) -> Iterator[Callable[..., Visitor]]:
    """`open_browser(journey, width=1280, **context_args)`: a new browser window (its own context)
    on the bank, as one person sees it; `journey` names its screenshot folder. Whatever went wrong on a page
    that the test did not check fails the test at the end."""
    visitors: list[Visitor] = []

    def factory(journey: str, width: int = WIDE, **context_args) -> Visitor:
        context = new_context(viewport={"width": width, "height": HEIGHT}, reduced_motion="reduce", **context_args)
        page = context.new_page()
        health = PageHealth(context, page, live_bank.base_url)
        visitor = Visitor(journey, page, health, width)
        visitors.append(visitor)
        return visitor

    yield factory
    for visitor in visitors:
        visitor.assert_healthy()
