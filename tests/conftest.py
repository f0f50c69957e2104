"""Shared fixtures: a fresh migrated SQLite database per test, clients, users and a login helper.

The schema is built once per run by the committed migrations (so their triggers are what the
tests see) into a template file; each test gets its own copy. Nothing ever runs DELETE or
TRUNCATE on the append-only audit table.
"""

from __future__ import annotations

import atexit
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
from app.extensions import db
from tests import factories

MIGRATIONS = str(Path(__file__).resolve().parent.parent / "migrations")
CSRF_INPUT = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


# Every test builds its own app; sharing compiled templates between them (Jinja's own bytecode
# cache) saves recompiling every template hundreds of times.
TEMPLATE_CACHE_DIR = tempfile.mkdtemp(prefix="bank-test-jinja-")
TEMPLATE_CACHE = FileSystemBytecodeCache(TEMPLATE_CACHE_DIR)
atexit.register(shutil.rmtree, TEMPLATE_CACHE_DIR, ignore_errors=True)


def build_app(database_path: Path, **overrides) -> Flask:
    """An app in the testing configuration on the SQLite file `database_path`."""
    config = {
        "APP_ENV": "testing",
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database_path}",
        "WTF_CSRF_ENABLED": False,
    }
    config.update(overrides)
    application = create_app(config)
    application.jinja_env.bytecode_cache = TEMPLATE_CACHE
    return application


@pytest.fixture(scope="session")
def schema_template(tmp_path_factory) -> Path:
    """A SQLite file with the schema built by `flask db upgrade` (the committed migrations)."""
    path = tmp_path_factory.mktemp("schema") / "template.db"
    app = build_app(path)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        db.engine.dispose()
    return path


@pytest.fixture
def database_path(schema_template: Path, tmp_path: Path) -> Path:
    """A private copy of the migrated template for one test."""
    path = tmp_path / "bank.db"
    shutil.copyfile(schema_template, path)
    return path


@pytest.fixture
def app_overrides() -> dict:
    """Extra settings for the `app` fixture; override this fixture in a module to change them."""
    return {}


@pytest.fixture
def app(database_path: Path, app_overrides: dict) -> Iterator[Flask]:
    """The application on a private database. No app context stays pushed: each test-client
    request must get its own (Flask-Login caches the user on `g`, which lives in it). Use
    `with app.app_context():` to touch the database from a test."""
    application = build_app(database_path, **app_overrides)
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
