"""Least privilege for the application's own PostgreSQL role (OWASP ASVS 4.0.3 1.4.4 and
7.3.3, PCI DSS v4.0 10.3.2: audit records are protected from modification).

The schema belongs to the role that runs the migrations. The web processes connect as a second
role that may only do what the services do: the append-only tables (`audit_log`, and the
`transaction` ledger) get SELECT and INSERT, never UPDATE, DELETE or TRUNCATE; nothing gets
TRUNCATE, REFERENCES or TRIGGER; and a role that does not own the tables cannot drop the
append-only triggers. So the audit log is protected twice: by the role's privileges and, for
anyone who has the owner's, by the triggers and the HMAC chain; the ledger by the privileges and
its own triggers (migrations/versions/0004_ledger_append_only.py).

`flask grant-app-role ROLE` applies this table as the owner, after `flask db upgrade`.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from .extensions import db
from .models import Account, AuditChainHead, AuditLog, LoginAttempt, SupportTicket, TicketNote, Transaction, User

# Table → the privileges the services need on it, and no more.
APP_ROLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    User.__tablename__: ("SELECT", "INSERT", "UPDATE"),
    LoginAttempt.__tablename__: ("SELECT", "INSERT", "DELETE"),  # a successful login clears failures
    Account.__tablename__: ("SELECT", "INSERT", "UPDATE"),
    Transaction.__tablename__: ("SELECT", "INSERT"),  # the ledger is append-only too
    SupportTicket.__tablename__: ("SELECT", "INSERT", "UPDATE"),
    TicketNote.__tablename__: ("SELECT", "INSERT"),
    AuditLog.__tablename__: ("SELECT", "INSERT"),
    # SELECT ... FOR UPDATE of the one head row serializes appends; PostgreSQL requires UPDATE for it.
    AuditChainHead.__tablename__: ("SELECT", "UPDATE"),
    # Alembic's own: reading it lets `flask db upgrade` as this role confirm nothing is pending.
    "alembic_version": ("SELECT",),
}


class PrivilegeError(Exception):
    """The role can't be given the application's privileges (message safe to print)."""


def grant_app_role(connection: Connection, role: str) -> list[str]:
    """Give `role` exactly APP_ROLE_PRIVILEGES on this database, revoking anything else it held.

    connection: a connection to the bank's PostgreSQL database as the schema owner (the role
    that ran the migrations), inside a transaction the caller commits. role: the name of an
    existing role, not a superuser and not the schema owner (either would bypass the privileges).
    Returns the statements run, for the command to print. Idempotent.

    :raises PrivilegeError: not PostgreSQL, the role does not exist, or it is a superuser, or it
        owns the tables.
    """
    if connection.dialect.name != "postgresql":
        raise PrivilegeError("Database roles exist only on PostgreSQL; SQLite has no privileges to grant.")
    row = connection.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if row is None:
        raise PrivilegeError(f"Role {role!r} does not exist; create it first (CREATE ROLE ... LOGIN PASSWORD ...).")
    if row.rolsuper:
        raise PrivilegeError(f"Role {role!r} is a superuser: privileges would not restrict it.")
    owners = set(connection.execute(
        text("SELECT tableowner FROM pg_tables WHERE schemaname = current_schema() AND tablename = ANY(:tables)"),
        {"tables": list(APP_ROLE_PRIVILEGES)},
    ).scalars())
    if role in owners:
        raise PrivilegeError(f"Role {role!r} owns the tables: it could drop the audit triggers. Use a separate role.")
    missing = set(db.metadata.tables) - set(APP_ROLE_PRIVILEGES)
    if missing:  # a new table must be given its privileges deliberately
        raise PrivilegeError(f"No privileges are defined for the tables {sorted(missing)}.")

    quoted_role = _quoted(connection, role)
    statements = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted_role}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted_role}",
        f"GRANT USAGE ON SCHEMA public TO {quoted_role}",
    ]
    for table, privileges in APP_ROLE_PRIVILEGES.items():
        statements.append(f"GRANT {', '.join(privileges)} ON TABLE {_quoted(connection, table)} TO {quoted_role}")
    statements.append(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {quoted_role}")
    for statement in statements:
        # Role and table names can't be bound parameters: each was quoted by the dialect
        # (_quoted) and the privileges are APP_ROLE_PRIVILEGES' constants.
        # nosemgrep: sql-built-from-string
        connection.exec_driver_sql(statement)
    return statements


def _quoted(connection: Connection, identifier: str) -> str:
    """`identifier` quoted by the dialect's own rules (identifiers can't be bound parameters)."""
    return connection.dialect.identifier_preparer.quote_identifier(identifier)
