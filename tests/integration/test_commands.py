"""`flask seed-admin` and the seed_admin service: idempotent, forced password change at first
sign-in, and no default password where ALLOW_DEFAULT_ADMIN_PASSWORD is off (DESIGN.md sections 5, 7).
Also `flask grant-app-role` on SQLite (its PostgreSQL side is in test_app_role.py)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, update

from app.auth import services as auth_services
from app.extensions import db
from app.models import AuditLog, User
from tests.conftest import build_app

ADMIN_EMAIL = "admin@example.com"
DEFAULT_PASSWORD = "Admin123!"
CHOSEN_PASSWORD = "granite kestrel over the weir 58"
NEW_PASSWORD = "seven quiet lanterns by the quay"


@pytest.fixture(autouse=True)
def no_admin_password_in_environment(monkeypatch):
    """The commands read ADMIN_PASSWORD; the developer's shell must not leak into the tests."""
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)


@pytest.fixture
def production_like(app):
    """The app with the production rule on: the default admin password is refused."""
    app.config["ALLOW_DEFAULT_ADMIN_PASSWORD"] = False
    return app


def admins(app):
    with app.app_context():
        return db.session.execute(
            select(User.email, User.role, User.must_change_password, User.password_hash).where(User.email == ADMIN_EMAIL)
        ).all()


def count_users(app):
    with app.app_context():
        return db.session.scalar(select(func.count(User.id)))


def login(client, password, email=ADMIN_EMAIL):
    return client.post("/auth/login", data={"email": email, "password": password})


def test_seed_admin_creates_the_admin_once(app, runner):
    """Does `seed-admin` create one admin, and does a second run change nothing?"""
    first = runner.invoke(args=["seed-admin"])
    assert first.exit_code == 0, first.output
    assert "Created administrator admin@example.com" in first.output
    second = runner.invoke(args=["seed-admin"])
    assert second.exit_code == 0, second.output
    assert "already exists" in second.output
    rows = admins(app)
    assert len(rows) == 1
    assert rows[0].role == "admin"
    assert rows[0].must_change_password is True
    with app.app_context():
        seeded = db.session.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "REGISTER_SUCCESS"))
    assert seeded == 1


def test_seed_admin_does_not_print_the_development_password(runner):
    """Is the password not echoed to the terminal in development (it is documented)?"""
    result = runner.invoke(args=["seed-admin"])
    assert DEFAULT_PASSWORD not in result.output


def test_seed_admin_never_resets_an_existing_admins_password(app, runner, client):
    """After the admin changed the password, does a re-run leave the new password in place?"""
    runner.invoke(args=["seed-admin"])
    assert login(client, DEFAULT_PASSWORD).status_code == 302
    assert client.post("/auth/change-password", data={
        "current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
    }).status_code == 302
    before = admins(app)[0].password_hash
    assert runner.invoke(args=["seed-admin"]).exit_code == 0
    assert admins(app)[0].password_hash == before
    assert admins(app)[0].must_change_password is False


def test_verify_audit_reports_the_forced_password_change_skipped_with_sql(app, runner, client):
    """Is the seeded administrator's forced change of the known first password, cleared with SQL
    rather than by changing the password, reported by verify-audit (exit status 1), while the
    seeded state and a real change both match the trail?"""
    runner.invoke(args=["seed-admin"])
    seeded = runner.invoke(args=["verify-audit"])
    with app.app_context():
        db.session.execute(update(User).where(User.email == ADMIN_EMAIL).values(must_change_password=False))
        db.session.commit()
    skipped = runner.invoke(args=["verify-audit"])
    with app.app_context():
        db.session.execute(update(User).where(User.email == ADMIN_EMAIL).values(must_change_password=True))
        db.session.commit()
    assert login(client, DEFAULT_PASSWORD).status_code == 302
    assert client.post("/auth/change-password", data={
        "current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
    }).status_code == 302
    changed = runner.invoke(args=["verify-audit"])

    assert seeded.exit_code == 0, seeded.output
    assert skipped.exit_code == 1
    assert "must_change_password is False, but the audit trail says True" in skipped.output
    assert changed.exit_code == 0, changed.output


def test_seeded_admin_must_change_password_at_first_login(app, runner, client):
    """Is the seeded admin sent to change-password from every page until they change it, and
    free to use the admin pages afterwards?"""
    runner.invoke(args=["seed-admin"])
    response = login(client, DEFAULT_PASSWORD)
    assert response.status_code == 302
    for path in ("/banking/dashboard", "/auth/profile", "/banking/open-account"):
        redirect = client.get(path)
        assert redirect.status_code == 302, path
        assert redirect.headers["Location"].endswith("/auth/change-password"), path
    assert client.get("/auth/change-password").status_code == 200
    changed = client.post("/auth/change-password", data={
        "current_password": DEFAULT_PASSWORD, "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
    })
    assert changed.status_code == 302
    assert client.get("/banking/dashboard").status_code == 200
    assert admins(app)[0].must_change_password is False


def test_seed_admin_service_refuses_the_default_password_when_not_allowed(production_like):
    """With ALLOW_DEFAULT_ADMIN_PASSWORD off (production), is ADMIN_PASSWORD=Admin123! refused
    and no admin created?"""
    with production_like.app_context(), pytest.raises(auth_services.PasswordPolicyError, match="default"):
        auth_services.seed_admin(DEFAULT_PASSWORD)
    assert admins(production_like) == []


def test_seed_admin_service_without_a_password_never_uses_the_default(production_like, client):
    """With the default disallowed and no ADMIN_PASSWORD, is a random password generated,
    returned once, usable, and is the default refused at login?"""
    with production_like.app_context():
        result = auth_services.seed_admin(None)
    assert result.created is True
    assert result.generated_password and result.generated_password != DEFAULT_PASSWORD
    assert len(result.generated_password) >= 20
    assert login(client, DEFAULT_PASSWORD).status_code == 400
    assert login(client, result.generated_password).status_code == 302
    assert admins(production_like)[0].must_change_password is True


def test_seed_admin_service_generates_a_different_password_each_install(make_database):
    """Is the generated password random (two fresh installs get different ones)?"""
    passwords = []
    for _ in range(2):
        fresh = build_app(make_database(), ALLOW_DEFAULT_ADMIN_PASSWORD=False)
        with fresh.app_context():
            passwords.append(auth_services.seed_admin(None).generated_password)
    assert None not in passwords
    assert passwords[0] != passwords[1]


@pytest.mark.parametrize("weak", ["short", "password1234", "administrator1"])
def test_seed_admin_service_refuses_a_weak_admin_password(production_like, weak):
    """Is an ADMIN_PASSWORD that breaks the password policy refused?"""
    with production_like.app_context(), pytest.raises(auth_services.PasswordPolicyError):
        auth_services.seed_admin(weak)
    assert count_users(production_like) == 0


def test_seed_admin_service_uses_a_strong_admin_password(production_like, client):
    """Is a strong ADMIN_PASSWORD used (nothing generated), still to be changed at first sign-in?"""
    with production_like.app_context():
        result = auth_services.seed_admin(CHOSEN_PASSWORD)
    assert result.created and result.generated_password is None
    assert login(client, CHOSEN_PASSWORD).status_code == 302
    assert client.get("/banking/dashboard").headers["Location"].endswith("/auth/change-password")


def test_seed_admin_command_refuses_the_default_from_the_environment(production_like, runner):
    """Does the command exit with an error when ADMIN_PASSWORD is the default in production?"""
    result = runner.invoke(args=["seed-admin"], env={"ADMIN_PASSWORD": DEFAULT_PASSWORD})
    assert result.exit_code != 0
    assert "refused" in result.output
    assert admins(production_like) == []


def test_seed_admin_command_prints_a_generated_password_once(production_like, runner, client):
    """Without ADMIN_PASSWORD in production, does the command print a generated password that works?"""
    result = runner.invoke(args=["seed-admin"])
    assert result.exit_code == 0, result.output
    match = re.search(r"one-time password: (\S+)", result.output)
    assert match
    assert result.output.count(match.group(1)) == 1
    assert login(client, match.group(1)).status_code == 302
    again = runner.invoke(args=["seed-admin"])
    assert match.group(1) not in again.output


def test_grant_app_role_explains_that_only_postgresql_has_roles(app, backend_name):
    """Does grant-app-role stop with a clear message on SQLite instead of pretending to succeed?
    (On PostgreSQL it is tested in test_app_role.py.)"""
    if backend_name != "sqlite":
        pytest.skip("SQLite only: PostgreSQL's behaviour is tested in test_app_role.py")
    result = app.test_cli_runner().invoke(args=["grant-app-role", "bank_app"])
    assert result.exit_code != 0
    assert "only on PostgreSQL" in result.output
