"""Helpers for the multi-process end-to-end tests: a migrated database per backend, the app under
gunicorn with four workers on a free port, and a small HTTP client.

Not a test module. Used by test_multiprocess.py (the concurrency proof) and
test_multiprocess_throttle.py (login throttle and request limits across workers), and for its
REPO, SCRUBBED_PREFIXES and free_port by tests/integration/test_entry_point.py.

* Databases: a fresh SQLite file, or, when TEST_DATABASE_URL names a PostgreSQL server, a
  dedicated database `bank_mp_<pid>_<n>` created on it with psycopg and dropped afterwards
  (`DROP DATABASE ... WITH (FORCE)`). Without TEST_DATABASE_URL the PostgreSQL case is skipped
  with a reason, or fails when REQUIRE_POSTGRES=1.
* Server: `gunicorn -c gunicorn.conf.py` (the committed production settings) with APP_ENV=development,
  plain HTTP and fixed SECRET_KEY / AUDIT_HMAC_KEY passed in the environment, so this process
  can mint idempotency keys and read session cookies with the same keys. Every server runs in
  its own process group, which is killed in a finalizer whatever happens.
* Client: http.client, one request per connection (sync workers close each connection), one
  session cookie kept by hand, CSRF tokens taken from the forms.
"""

from __future__ import annotations

import html
import http.client
import http.cookies
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask

REPO = Path(__file__).resolve().parents[2]
WORKERS = 4
SECRET_KEY = "multiprocess-e2e-secret-key-0123456789abcdef0123"
AUDIT_HMAC_KEY = "multiprocess-e2e-audit-hmac-key-0123456789abcdef"
MFA_ENCRYPTION_KEY = "multiprocess-e2e-mfa-encryption-key-0123456789ab"
STARTUP_SECONDS = 30
COMMAND_SECONDS = 120
REQUEST_SECONDS = 90
USER_AGENT = "bank-multiprocess-e2e"
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')
# Settings of the app, gunicorn and Flask that must come from the test, never from the caller's shell.
SCRUBBED_PREFIXES = (
    "FLASK_", "APP_ENV", "SECRET_KEY", "AUDIT_HMAC_KEY", "MFA_", "DATABASE_", "RATELIMIT_", "LOGIN_", "REGISTER_RATE",
    "TRANSFER_RATE", "TICKET_RATE", "MAX_", "SUSPICIOUS_", "TRUSTED_PROXY", "REQUIRE_STAFF", "SQLITE_", "BIND",
    "WEB_CONCURRENCY", "WEB_THREADS", "GUNICORN_CMD_ARGS", "FORWARDED_ALLOW_IPS", "ADMIN_PASSWORD",
)
_database_names = itertools.count(1)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def base_env(database_url: str, **settings: str) -> dict[str, str]:
    """The environment for flask commands and gunicorn: the caller's, minus every app setting,
    plus the development configuration on `database_url` with the fixed keys and `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SCRUBBED_PREFIXES)}
    env.update(APP_ENV="development", DATABASE_URL=database_url, SECRET_KEY=SECRET_KEY,
               AUDIT_HMAC_KEY=AUDIT_HMAC_KEY, MFA_ENCRYPTION_KEY=MFA_ENCRYPTION_KEY, PYTHONUNBUFFERED="1",
               RATELIMIT_ENABLED="false")
    env.update(settings)
    return env


def flask_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app run.py <args>` in the repository; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "run.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=COMMAND_SECONDS, check=False)


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def run_only_in_its_pass(config: pytest.Config, backend: str, what: str = "") -> None:
    """Skip `backend`'s case when the suite was started for the other backend.

    tests/conftest.py runs the whole suite once per backend (`--backend` or BANK_TEST_BACKEND);
    these tests start their own databases, so each backend's case runs in its own pass only.
    Without either setting (e.g. `pytest tests/e2e/test_multiprocess.py`) both cases run.
    """
    chosen = config.getoption("--backend", default=None) or os.environ.get("BANK_TEST_BACKEND")
    if chosen and chosen != backend:
        what = what or f"the {backend} case"
        pytest.skip(f"{what} runs in the suite's {backend} pass (this pass is --backend={chosen})")


def postgres_server_url() -> str:
    """TEST_DATABASE_URL, or skip (fail when REQUIRE_POSTGRES=1) when it is unset."""
    url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not url:
        if env_flag("REQUIRE_POSTGRES"):
            pytest.fail("REQUIRE_POSTGRES=1 but TEST_DATABASE_URL is not set: the PostgreSQL run can't be skipped")
        reason = "PostgreSQL run skipped: TEST_DATABASE_URL is not set"
        print(f"\n{reason}")
        pytest.skip(reason)
    return url


def _libpq_url(sqlalchemy_url) -> str:
    """A SQLAlchemy URL object as a plain libpq connection string for psycopg."""
    return sqlalchemy_url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def migrated_database(backend: str, folder: Path) -> Iterator[str]:
    """Yield the SQLAlchemy URL of an empty database of `backend` ("sqlite" or "postgresql")
    with the committed migrations applied; a PostgreSQL database is dropped afterwards."""
    if backend == "sqlite":
        url = f"sqlite:///{folder / 'bank.db'}"
        _migrate(url)
        yield url
        return

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server_url())
    if server.drivername in ("postgres", "postgresql"):
        server = server.set(drivername="postgresql+psycopg")
    name = f"bank_mp_{os.getpid()}_{next(_database_names)}"
    with psycopg.connect(_libpq_url(server), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        _migrate(url)
        yield url
    finally:
        with psycopg.connect(_libpq_url(server), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    migrated = flask_command(base_env(url), "db", "upgrade")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr


def local_app(database_url: str, **overrides) -> Flask:
    """This process's own app on the server's database and keys: for factories writing test
    data straight to the database, minting idempotency keys and reading session cookies."""
    from app import create_app

    return create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": SECRET_KEY,
                       "AUDIT_HMAC_KEY": AUDIT_HMAC_KEY, "MFA_ENCRYPTION_KEY": MFA_ENCRYPTION_KEY, **overrides})


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Gunicorn:
    """A running `gunicorn -c gunicorn.conf.py`; stdout is the access log, stderr the error log."""

    host: str
    port: int
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    process: subprocess.Popen = field(repr=False)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def access_lines(self) -> list[str]:
        return self.stdout_path.read_text(errors="replace").splitlines()

    def worker_pids(self, method: str, path: str) -> set[str]:
        """Pids of the workers that answered `method path` requests (from the access log)."""
        needle = f'"{method} {path} '
        return {line.rsplit(" ", 1)[-1] for line in self.access_lines() if needle in line}

    def stop(self) -> None:
        """SIGTERM to the master (graceful), then SIGKILL to the whole process group."""
        stop_process_group(self.process)


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 15) -> None:
    """Stop a server started with `start_new_session=True`: SIGTERM to its master (graceful),
    up to `grace_seconds` to finish, then SIGKILL to its whole process group (workers left
    behind, if any), and wait for it. Used by these tests, bench/run.py and scan/server.py."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if process.poll() is None:
        process.wait(timeout=10)


@contextmanager
def gunicorn_server(database_url: str, folder: Path, **settings: str) -> Iterator[Gunicorn]:
    """Serve the app on `database_url` under gunicorn with WORKERS workers on a free port; yields
    once every worker has booted and the login page answers; always stops every process."""
    port = free_port()
    env = base_env(database_url, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(WORKERS), **settings)
    stdout_path, stderr_path = folder / "gunicorn.out", folder / "gunicorn.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=REPO, env=env,
                                   stdout=out, stderr=err, start_new_session=True)
    server = Gunicorn("127.0.0.1", port, env, stdout_path, stderr_path, process)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"gunicorn exited:\n{server.stderr()}"
            booted = server.stderr().count("Booting worker with pid")
            if booted >= WORKERS and _answers(server):
                break
            assert time.monotonic() < deadline, f"gunicorn did not start:\n{server.stderr()}"
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def _answers(server: Gunicorn) -> bool:
    try:
        return Client(server).get("/auth/login").status == 200
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    location: str
    set_cookies: dict[str, str]
    body: str


class Client:
    """One browser session: a `session` cookie kept by hand, one connection per request."""

    def __init__(self, server: Gunicorn) -> None:
        self.host, self.port = server.host, server.port
        self.cookie: str | None = None

    def request(self, method: str, path: str, fields: dict[str, str] | None = None, *,
                keep_cookie: bool = True) -> Response:
        """Send one request; redirects are not followed. keep_cookie=False leaves the stored
        cookie as it was (the answer's cookie is still returned in `set_cookies`)."""
        headers = {"User-Agent": USER_AGENT, "Connection": "close"}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookie:
            headers["Cookie"] = f"session={self.cookie}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_SECONDS)
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read().decode("utf-8", "replace")
            cookies: dict[str, str] = {}
            for header in answer.msg.get_all("Set-Cookie") or []:
                jar = http.cookies.SimpleCookie()
                jar.load(header)
                cookies.update({name: morsel.value for name, morsel in jar.items()})
            response = Response(answer.status, answer.getheader("Location") or "", cookies, text)
        finally:
            connection.close()
        if keep_cookie and "session" in response.set_cookies:
            self.cookie = response.set_cookies["session"] or None
        return response

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, fields: dict[str, str], **kwargs) -> Response:
        return self.request("POST", path, fields, **kwargs)

    def login(self, email: str, password: str) -> Response:
        """GET the login form and POST it with its CSRF token; returns the POST's answer."""
        form = self.get("/auth/login")
        assert form.status == 200, form.status
        return self.post("/auth/login", {"csrf_token": csrf_token_from(form.body), "email": email,
                                         "password": password})


def csrf_token_from(page: str) -> str:
    """The CSRF token of the first form in `page`."""
    match = CSRF_INPUT.search(page)
    assert match, "no csrf_token input in the page"
    return html.unescape(match.group(1) or match.group(2))
