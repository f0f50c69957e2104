"""Flask CLI commands: seed-admin, verify-ledger, verify-audit, grant-app-role, reset-mfa
(`flask --app run.py <command>`)."""

from __future__ import annotations

import getpass
import os

import click
from flask import Flask
from flask.cli import with_appcontext

from .extensions import db


@click.command("seed-admin")
@with_appcontext
def seed_admin_command() -> None:
    """Create the default administrator if it does not exist (idempotent).

    Development: admin@example.com / Admin123!, to be changed at first sign-in. Production:
    the default is refused; ADMIN_PASSWORD is used if set (and must meet the policy), otherwise a
    random password is generated and printed once.
    """
    from .auth.services import PasswordPolicyError, seed_admin

    try:
        result = seed_admin(os.environ.get("ADMIN_PASSWORD"))
    except PasswordPolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.created:
        click.echo(f"Administrator {result.email} already exists; nothing changed.")
    elif result.generated_password:
        click.echo(f"Created administrator {result.email} with the one-time password: {result.generated_password}")
        click.echo("It is shown only now; it must be changed at first sign-in.")
    else:
        click.echo(f"Created administrator {result.email}; the password must be changed at first sign-in.")


@click.command("verify-ledger")
@with_appcontext
def verify_ledger_command() -> None:
    """Check the money invariants (DESIGN.md section 2), the ledger's append-only triggers
    (audit_services.append_only_trigger_problems) and the ledger against the audit trail; exit
    status 1 on any violation."""
    from .banking.services import verify_ledger

    report = verify_ledger()
    db.session.rollback()
    if report.ok:
        click.echo(
            f"Ledger consistent: {report.accounts_checked} accounts, balances total "
            f"{report.total_balance_cents} cents = deposits {report.total_deposits_cents} cents; "
            f"{report.transfers_checked} transfers and every opening deposit match their audit rows."
        )
        return
    for problem in report.problems:
        click.echo(f"LEDGER VIOLATION: {problem}", err=True)
    raise SystemExit(1)


@click.command("verify-audit")
@click.option("--anchor", default=None, metavar="ID:HASH",
              help="A head printed by an earlier run, kept outside the database; it must still be there.")
@with_appcontext
def verify_audit_command(anchor: str | None) -> None:
    """Check the audit log's HMAC chain (DESIGN.md section 4) and its append-only triggers, then
    each user's email, role, active flag, two-step sign-in, password hash, name and phone
    (verify_user_records) and each support ticket and reply (verify_ticket_records) against
    the chain; exit 1 naming the first broken row, each missing or disabled trigger, or each
    differing user or ticket.

    Prints the current head (`ID:HASH`); recording it elsewhere and passing it back later with
    --anchor also detects the newest rows being cut off along with the head row.
    """
    from .audit.services import append_only_trigger_problems, parse_anchor, verify_chain

    try:
        expected = parse_anchor(anchor) if anchor else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--anchor") from exc
    report = verify_chain(db.session, expected)
    unguarded = append_only_trigger_problems(db.session, "audit_log")
    db.session.rollback()
    for problem in unguarded:
        click.echo(f"AUDIT LOG UNGUARDED: {problem}", err=True)
    if report.ok:
        from .auth.services import verify_user_records
        from .support.services import verify_ticket_records

        problems = verify_user_records()
        ticket_problems = verify_ticket_records()
        db.session.rollback()
        click.echo(f"Audit chain holds: {report.rows_checked} rows checked" + (
            "." if problems or ticket_problems else
            "; every user's email, role, active flag, two-step sign-in, password hash, name and phone, and every"
            " support ticket and reply, match it."))
        for problem in problems:
            click.echo(f"USER RECORD DIFFERS FROM THE AUDIT TRAIL: {problem}", err=True)
        for problem in ticket_problems:
            click.echo(f"TICKET DIFFERS FROM THE AUDIT TRAIL: {problem}", err=True)
        click.echo(f"Head (record it to use as --anchor later): {report.head_id}:{report.head_hash}")
        if problems or ticket_problems or unguarded:
            raise SystemExit(1)
        return
    click.echo(f"AUDIT CHAIN BROKEN at row {report.first_broken_id}: {report.reason}", err=True)
    raise SystemExit(1)


@click.command("grant-app-role")
@click.argument("role")
@with_appcontext
def grant_app_role_command(role: str) -> None:
    """PostgreSQL: give ROLE only the privileges the web processes need (no UPDATE, DELETE or
    TRUNCATE on the audit log or the ledger). Run as the schema owner after `db upgrade`;
    the web processes then connect as ROLE (see app/db_privileges.py). Idempotent.
    """
    from .db_privileges import PrivilegeError, grant_app_role

    try:
        with db.engine.begin() as connection:
            statements = grant_app_role(connection, role)
    except PrivilegeError as exc:
        raise click.ClickException(str(exc)) from exc
    for statement in statements:
        click.echo(statement)
    click.echo(f"Role {role} holds the application's privileges and no others.")


def operator_account() -> str:
    """Who runs a command, as the operating system says: the login name (getpass: LOGNAME, USER
    or the password database), with the account that ran sudo when there is one, e.g.
    "root (sudo from alice)"; "unknown" when none can be found. The environment can be set by the
    operator, so this names a lead for the audit row; the server's own login records prove it.
    """
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    sudo = os.environ.get("SUDO_USER")
    return f"{name} (sudo from {sudo})" if sudo and sudo != name else name


@click.command("reset-mfa")
@click.argument("email")
@click.option("--reason", required=True,
              help="Why, and how the user's identity was checked, for the audit row (e.g. the ticket).")
@with_appcontext
def reset_mfa_command(email: str, reason: str) -> None:
    """Turn off two-step sign-in for the user with EMAIL (a lost authenticator, or a key
    someone else enrolled) and end their sessions; logged as MFA_DISABLED by the operator
    (the operating system account running it) with the reason. First prove, outside the bank,
    that the request comes from the user, as firmly as at enrolment (ASVS 2.5.7).
    """
    from .auth.services import MfaStateError, UserNotFoundError, reset_mfa
    from .errors import ValidationRuleError

    try:
        user = reset_mfa(email, reason, operator_account())
    except (MfaStateError, UserNotFoundError, ValidationRuleError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Two-step sign-in is off for {user.email}; their open sessions have ended. "
               "They sign in with their password alone until they enrol again.")


def register_commands(app: Flask) -> None:
    """Attach the bank's commands to the Flask CLI."""
    for command in (seed_admin_command, verify_ledger_command, verify_audit_command, grant_app_role_command,
                    reset_mfa_command):
        app.cli.add_command(command)
