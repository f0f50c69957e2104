"""Shared fixtures: a fresh migrated database per test, clients, users and a login helper.

The suite runs on SQLite by default and, unchanged, on PostgreSQL with `--backend=postgresql`
(or BANK_TEST_BACKEND=postgresql) against the server of TEST_DATABASE_URL; `make test` runs it
on both when TEST_DATABASE_URL is set. The schema is built once per run by the committed
migrations (so their triggers are what the tests see) into a template; each test gets its own
copy (a file copy on SQLite, `CREATE DATABASE ... TEMPLATE` on PostgreSQL; see tests/databases.py).
Nothing ever runs DELETE or TRUNCATE on the append-only audit table.

Tests marked `postgres` check what only PostgreSQL does and are skipped on SQLite. When the
PostgreSQL backend is chosen but the server can't be reached, every test is skipped with the
reason — or, with REQUIRE_POSTGRES=1 (CI), the run stops with an error.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from jinja2 import FileSystemBytecodeCache

from app import create_app
from app.config import env_bool
from app.extensions import db
from tests import factories
from tests.databases import BACKENDS, POSTGRESQL, SQLITE, PostgresBackend, SqliteBackend

MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


# Every test builds its own app; sharing compiled templates between them (Jinja's own bytecode
# cache) saves recompiling every template hundreds of times.
TEMPLATE_CACHE_DIR = tempfile.mkdtemp(prefix="bank-test-jinja-")
TEMPLATE_CACHE = FileSystemBytecodeCache(TEMPLATE_CACHE_DIR)
atexit.register(shutil.rmtree, TEMPLATE_CACHE_DIR, ignore_errors=True)

# Apps built by build_app, by database URL, so their connection pools are closed before the
# database is removed (psycopg warns about connections garbage-collected while open).
_APPS_BY_URL: dict[str, list[Flask]] = {}


def database_url_of(database: str | Path) -> str:
    """A SQLAlchemy URL for `database`: a URL is kept, anything else is a SQLite file path."""
    if isinstance(database, str) and "://" in database:
        return database
    return f"sqlite:///{database}"


def build_app(database: str | Path, **overrides) -> Flask:
    """An app in the testing configuration on `database` (a URL, or the path of a SQLite file)."""
    url = database_url_of(database)
    config = {
        "APP_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": url,
        "WTF_CSRF_ENABLED": False,
    }
    config.update(overrides)
    application = create_app(config)
    application.jinja_env.bytecode_cache = TEMPLATE_CACHE
    _APPS_BY_URL.setdefault(url, []).append(application)
    return application


def dispose_engines(url: str) -> None:
    """Close the connection pools of every app built on `url`, and forget those apps."""
    for application in _APPS_BY_URL.pop(url, []):
        with application.app_context():
            db.engine.dispose()


def migrate_database(url: str) -> None:
    """Build the schema in the (empty) database of `url` with the committed migrations."""
    application = build_app(url)
    with application.app_context():
        upgrade(directory=MIGRATIONS)
    dispose_engines(url)


# -------------------------------------------------------------------------------------------------
# Backend selection
# -------------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend", choices=BACKENDS, default=None,
        help="database backend for the suite: sqlite (default) or postgresql (the server of "
             "TEST_DATABASE_URL); the environment variable BANK_TEST_BACKEND sets the default",
    )


class _Selection:
    """What this run uses: the backend name, and why PostgreSQL is unavailable (if it is)."""

    name: str = SQLITE
    backend: SqliteBackend | PostgresBackend | None = None
    unavailable: str | None = None


SELECTION = _Selection()


def pytest_configure(config: pytest.Config) -> None:
    name = config.getoption("--backend") or os.environ.get("BANK_TEST_BACKEND") or SQLITE
    if name not in BACKENDS:
        raise pytest.UsageError(f"BANK_TEST_BACKEND must be one of {', '.join(BACKENDS)}; got {name!r}")
    SELECTION.name = name
    if name != POSTGRESQL:
        return
    server_url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not server_url:
        SELECTION.unavailable = "TEST_DATABASE_URL is not set"
    else:
        backend = PostgresBackend(server_url, migrate_database)
        try:
            backend.check()
        except Exception as exc:  # noqa: BLE001 - any failure to connect means "unavailable"
            reason = " ".join(str(exc).split())  # psycopg's message spans lines
            SELECTION.unavailable = f"cannot connect to {backend.server_url.render_as_string()}: {reason}"
        else:
            SELECTION.backend = backend
            atexit.register(backend.close)
    if SELECTION.unavailable and env_bool("REQUIRE_POSTGRES", False):
        raise pytest.UsageError(f"PostgreSQL unavailable and REQUIRE_POSTGRES is set: {SELECTION.unavailable}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [_backend_header(), _browser_header()]


def _backend_header() -> str:
    if SELECTION.name == POSTGRESQL:
        if SELECTION.unavailable:
            return f"database backend: postgresql UNAVAILABLE ({SELECTION.unavailable}); every test is skipped"
        return f"database backend: {SELECTION.backend.describe()}"
    return "database backend: sqlite (a copy of a migrated template file per test)"


def _browser_header() -> str:
    """Which Chromium the browser suite (tests/e2e/browser) drives, or why it is skipped."""
    from tests.e2e.browser.chromium import chromium_executable

    path, reason = chromium_executable()
    return f"browser suite: Chromium at {path}" if path else reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SELECTION.unavailable:
        skip = pytest.mark.skip(reason=f"PostgreSQL suite skipped: {SELECTION.unavailable}")
        for item in items:
            item.add_marker(skip)
    elif SELECTION.name == SQLITE:
        skip = pytest.mark.skip(reason="PostgreSQL-only check (runs with --backend=postgresql)")
        for item in items:
            if "postgres" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def test_backend(tmp_path_factory) -> Iterator[SqliteBackend | PostgresBackend]:
    """The database backend of this run; every database it created is dropped at the end."""
    if SELECTION.name == POSTGRESQL:
        assert SELECTION.backend is not None, SELECTION.unavailable
        backend = SELECTION.backend
    else:
        backend = SqliteBackend(tmp_path_factory.mktemp("databases"), migrate_database)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture(scope="session")
def backend_name() -> str:
    """`sqlite` or `postgresql`."""
    return SELECTION.name


@pytest.fixture
def make_database(test_backend) -> Iterator:
    """`make_database(migrated=True)`: the URL of a new private database for this test (a copy of
    the migrated template, or empty); dropped when the test ends, whatever its outcome."""
    created: list[str] = []

    def factory(migrated: bool = True) -> str:
        url = test_backend.create(migrated=migrated)
        created.append(url)
        return url

    yield factory
    for url in reversed(created):
        dispose_engines(url)
        test_backend.drop(url)


@pytest.fixture
def database_url(make_database) -> str:
    """A private copy of the migrated template for one test (its SQLAlchemy URL)."""
    return make_database()


@pytest.fixture
def app_overrides() -> dict:
    """Extra settings for the `app` fixture; override this fixture in a module to change them."""
    return {}


@pytest.fixture
def app(database_url: str, app_overrides: dict) -> Iterator[Flask]:
    """The application on a private database. No app context stays pushed: each test-client
    request must get its own (Flask-Login caches the user on `g`, which lives in it). Use
    `with app.app_context():` to touch the database from a test."""
    application = build_app(database_url, **app_overrides)
    yield application
    with application.app_context():
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):
    return app.test_cli_runner()


class AuthActions:
    """Log a test client in and out through the real routes (like flaskr's `auth` fixture)."""

    def __init__(self, client: FlaskClient) -> None:
        self._client = client

    def login(self, email: str, password: str = factories.DEFAULT_PASSWORD, **kwargs):
        return self._client.post("/auth/login", data={"email": email, "password": password}, **kwargs)

    def logout(self):
        return self._client.post("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> AuthActions:
    return AuthActions(client)


def _user(app, role: str, **kwargs):
    with app.app_context():
        return factories.make_user(role, **kwargs)


@pytest.fixture
def make_user(app):
    """`make_user(role="customer", **kwargs)` inside an app context; returns a snapshot."""
    return lambda role="customer", **kwargs: _user(app, role, **kwargs)


@pytest.fixture
def make_account(app):
    """`make_account(owner, balance="100.00", **kwargs)` inside an app context; returns a snapshot."""

    def factory(owner, balance="100.00", **kwargs):
        with app.app_context():
            return factories.make_account(owner, balance, **kwargs)

    return factory


@pytest.fixture
def customer(app):
    return _user(app, "customer")


@pytest.fixture
def other_customer(app):
    return _user(app, "customer")


@pytest.fixture
def admin(app):
    return _user(app, "admin")


@pytest.fixture
def support_user(app):
    return _user(app, "support")


@pytest.fixture
def auditor(app):
    return _user(app, "auditor")


@pytest.fixture
def logged_in_customer(client, auth, customer):
    """A customer signed in on `client`."""
    response = auth.login(customer.email)
    assert response.status_code == 302, response.get_data(as_text=True)
    return customer


def csrf_token_from(html: str) -> str:
    """The CSRF token of the first form in `html`."""
    match = CSRF_INPUT.search(html)
    assert match, "no csrf_token input in the page"
    return match.group(1) or match.group(2)
