"""The application's own PostgreSQL role (app/db_privileges.py, `flask grant-app-role`): every
test here runs the app connected as a fresh non-owner role holding only the granted privileges,
as compose's `web` service does. PostgreSQL only (SQLite has no roles).

Two things are proven: the privileges are enough (the customer's whole path and the staff's
writes work as that role), and they are no more (the role can't rewrite the audit log or the
ledger, nor drop the triggers that guard them): OWASP ASVS 4.0.3 7.3.3, PCI DSS v4.0 10.3.2.
"""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

from app.db_privileges import APP_ROLE_PRIVILEGES, PrivilegeError, grant_app_role
from app.extensions import db
from tests.conftest import build_app
from tests.integration.test_happy_path import test_customer_path_moves_money_and_keeps_the_ledger_consistent as customer_path

pytestmark = pytest.mark.postgres


def _psycopg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def owner_url(make_database) -> str:
    """A fresh migrated database, as its owner (the role that ran the migrations)."""
    return make_database()


@pytest.fixture
def app_role(owner_url):
    """A new LOGIN role (not a superuser) given the application's privileges on `owner_url`
    by `flask grant-app-role`; dropped afterwards."""
    role = f"bank_app_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(_psycopg_conninfo(owner_url), autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    owner_app = build_app(owner_url)
    result = owner_app.test_cli_runner().invoke(args=["grant-app-role", role])
    with owner_app.app_context():
        db.engine.dispose()
    assert result.exit_code == 0, result.output
    yield role
    with psycopg.connect(_psycopg_conninfo(owner_url), autocommit=True) as connection:
        connection.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def database_url(owner_url, app_role) -> str:
    """The URL every app fixture of this module uses: the same database, as the app role."""
    return make_url(owner_url).set(username=app_role).render_as_string(hide_password=False)


def test_db_upgrade_as_the_app_role_finds_nothing_pending(app):
    """Can the app role run `flask db upgrade` (what `make serve` does first) when the owner has
    applied every migration: it only reads alembic_version, and changes nothing?"""
    result = app.test_cli_runner().invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output


def test_customer_path_works_as_the_app_role(client, app):
    """Does the customer's whole path (register, log in, open accounts, both transfers, the
    ledger check) work with only the granted privileges?"""
    customer_path(client, app)


def test_staff_writes_work_as_the_app_role(app, client, auth, customer, make_account, admin, support_user):
    """Do the staff side's writes (ticket update with a note, user edit, freeze, the audit log
    read and its chain check) all succeed with only the granted privileges?"""
    account = make_account(customer, "50.00")
    auth.login(customer.email)
    assert client.post("/support/create", data={"subject": "Card", "description": "Lost it"}).status_code == 302
    auth.logout()

    auth.login(support_user.email)
    assert client.post("/support/tickets/1", data={"status": "resolved", "note": "New card sent"}).status_code == 302
    auth.logout()

    auth.login(admin.email)
    assert client.post(f"/banking/admin/accounts/{account.id}/freeze").status_code == 302
    assert client.post(f"/banking/admin/users/{customer.id}/edit", data={
        "full_name": "Renamed Customer", "email": customer.email, "phone": "+1 555 0100",
        "role": "customer", "is_active": "y"}).status_code == 302
    assert client.get("/audit/logs").status_code == 200
    verify = client.get("/audit/logs/verify")
    assert verify.status_code == 200 and "holds" in verify.get_data(as_text=True)

    runner = app.test_cli_runner()
    assert runner.invoke(args=["verify-audit"]).exit_code == 0
    assert runner.invoke(args=["verify-ledger"]).exit_code == 0


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET action = 'LOGIN_SUCCESS'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "UPDATE \"transaction\" SET amount = 1",
    "DELETE FROM \"transaction\"",
    "TRUNCATE \"transaction\"",
    "TRUNCATE account",
    "DROP TRIGGER audit_log_no_update_delete ON audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TABLE audit_log",
    "INSERT INTO audit_chain_head (id, last_id, last_hash) VALUES (2, 0, '')",
])
def test_app_role_cannot_rewrite_the_audit_log_or_the_ledger(app, client, auth, customer, statement):
    """Audit trail protection (PCI DSS 10.3.2, ASVS 7.3.3): is each rewrite of the audit log or
    the ledger, and each way around the append-only triggers, refused to the app role by its
    privileges ("permission denied" or "must be owner"), before any trigger is consulted?"""
    auth.login(customer.email)  # at least one audit row and one attempt row exist
    with app.app_context():
        with pytest.raises(ProgrammingError) as refused:
            db.session.execute(text(statement))
        db.session.rollback()
    message = str(refused.value.orig)
    assert "permission denied" in message or "must be owner" in message, message


def test_grant_app_role_refuses_superusers_owners_and_unknown_roles(owner_url, app_role):
    """Does grant-app-role refuse a role whose privileges would restrict nothing (a superuser, an
    owner of the tables) and a role that doesn't exist, and give exactly the table's privileges?"""
    engine = create_engine(owner_url)
    try:
        with engine.connect() as connection:
            superuser = connection.execute(text("SELECT rolname FROM pg_roles WHERE rolsuper LIMIT 1")).scalar_one()
            owner = f"bank_owner_{os.getpid()}_{secrets.token_hex(4)}"
            connection.exec_driver_sql(f'CREATE ROLE "{owner}"')  # rolled back below, like the ownership
            connection.exec_driver_sql(f'ALTER TABLE login_attempt OWNER TO "{owner}"')
            for role, reason in ((superuser, "superuser"), (owner, "owns the tables"),
                                 ("no_such_role_here", "does not exist")):
                with pytest.raises(PrivilegeError, match=reason):
                    grant_app_role(connection, role)
            connection.rollback()
            granted = connection.execute(text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants "
                "WHERE grantee = :role"), {"role": app_role}).all()
            connection.rollback()
    finally:
        engine.dispose()
    held: dict[str, set[str]] = {}
    for table, privilege in granted:
        held.setdefault(table, set()).add(privilege)
    assert held == {table: set(privileges) for table, privileges in APP_ROLE_PRIVILEGES.items()}
    assert held["audit_log"] == held["transaction"] == {"SELECT", "INSERT"}, "append-only tables"

