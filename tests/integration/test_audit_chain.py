"""The append-only, hash-chained audit log (DESIGN.md section 4; issue 2 items 4 and 9)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from app.audit import services as audit_services
from app.banking import services as banking_services
from app.errors import InsufficientFundsError
from app.extensions import db
from app.models import Account, AuditChainHead, AuditLog, Transaction, User
from tests.conftest import MIGRATIONS, build_app
from tests.databases import (AUDIT_TRIGGERS, LEDGER_TRIGGERS, audit_triggers, drop_audit_triggers,
                             drop_ledger_triggers)

PASSWORD = "purple otter quietly sings 1987"
NEW_PASSWORD = "seventeen lazy walruses juggle"
WRONG_PASSWORD = "totally wrong guess but long"


def _register_and_login(client, email="alice@example.com") -> None:
    response = client.post("/auth/register", data={"full_name": "Alice Example", "email": email,
                                                   "phone": "+44 20 7946 0000", "password": PASSWORD,
                                                   "confirm_password": PASSWORD})
    assert response.status_code == 302
    assert client.post("/auth/login", data={"email": email, "password": PASSWORD}).status_code == 302


def _some_history(client) -> None:
    """Register, log in, open an account and fail one login: at least five audit rows."""
    _register_and_login(client)
    assert client.post("/banking/open-account", data={"type": "checking", "opening_balance": "10"}).status_code == 302
    client.post("/auth/logout")
    assert client.post("/auth/login", data={"email": "alice@example.com", "password": WRONG_PASSWORD}).status_code == 400


def _audit_rows(app) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).order_by(AuditLog.id)))
        db.session.expunge_all()
        return rows


def _drop_triggers(app) -> None:
    with app.app_context():
        drop_audit_triggers(db.session)
        db.session.commit()


def _raw(app, sql: str, **params) -> None:
    with app.app_context():
        db.session.execute(text(sql), params)
        db.session.commit()


def _names_row(result, row_id: int) -> bool:
    """True when the command's output (stdout and stderr as the user sees them) names `row_id`."""
    return re.search(rf"\brow {row_id}\b", result.output) is not None


# ---------------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------------


def test_each_row_is_the_hmac_of_the_previous_hash_and_the_canonical_row(client, app):
    """Is every row's hash HMAC-SHA256(AUDIT_HMAC_KEY, previous hash || canonical JSON), starting
    from the genesis hash, with ids 1, 2, 3 ... and the head pointing at the last row?"""
    _some_history(client)
    rows = _audit_rows(app)
    assert len(rows) >= 5
    key = app.config["AUDIT_HMAC_KEY"].encode()

    previous = "0" * 64
    for expected_id, row in enumerate(rows, start=1):
        assert row.id == expected_id
        canonical = json.dumps({"action": row.action, "details": row.details, "id": row.id,
                                "ip_address": row.ip_address,
                                "timestamp": row.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                "user_id": row.user_id}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row.hash == audit_services.chain_hash(key, previous, canonical)
        previous = row.hash
    with app.app_context():
        head = db.session.get(AuditChainHead, 1)
        assert (head.last_id, head.last_hash) == (rows[-1].id, rows[-1].hash)


def test_rows_record_who_what_when_where(client, app):
    """Does each row carry the acting user, the action, a UTC timestamp and the client IP?"""
    _some_history(client)

    rows = _audit_rows(app)

    actions = [row.action for row in rows]
    assert actions[:3] == ["REGISTER_SUCCESS", "LOGIN_SUCCESS", "ACCOUNT_CREATED"]
    assert "LOGIN_FAILURE" in actions
    assert all(row.ip_address == "127.0.0.1" for row in rows)
    assert all(row.timestamp.tzinfo is not None and row.timestamp.utcoffset().total_seconds() == 0 for row in rows)
    assert rows[0].user_id == rows[1].user_id == rows[2].user_id is not None


# --- the users table against the audit trail (verify-audit's verify_user_records) ---


def _edit_user(app, admin, user, **changes) -> None:
    """The admin's edit of `user` through the service (audited as the app audits it)."""
    from app.auth import services as identity

    with app.app_context():
        target = db.session.get(User, user.id)
        fields = {"full_name": target.full_name, "email": target.email, "phone": target.phone,
                  "role": target.role, "is_active": target.is_active} | changes
        identity.update_user(db.session.get(User, admin.id), user.id, **fields)


def test_verify_audit_follows_the_admins_edits_of_users(app, runner, admin, customer, other_customer):
    """After an admin changes a role, an email and deactivates a user (each audited), do the
    users still match the trail, so verify-audit passes and says so?"""
    _edit_user(app, admin, customer, role="auditor")
    _edit_user(app, admin, other_customer, email="renamed@example.com", is_active=False)

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output
    assert "every user's email, role, active flag, two-step sign-in, password hash, name and phone, and every support ticket and reply, match it" in result.output


@pytest.mark.parametrize("column, value, shown", [
    ("role", "'admin'", "role is 'admin', but the audit trail says 'customer'"),
    ("email", "'attacker@example.com'", "email is 'attacker@example.com', but the audit trail says"),
    ("is_active", "false", "is_active is False, but the audit trail says True"),
])
def test_verify_audit_reports_a_user_changed_behind_the_app(app, runner, customer, column, value, shown):
    """Is a customer raised to admin, an email swapped (the way to take an account over), or a
    user deactivated with SQL, which needs no trigger dropped, reported by verify-audit with
    exit status 1, naming the user and the field, though the chain itself holds?"""
    with app.app_context():
        db.session.execute(text(f'UPDATE "user" SET {column} = {value} WHERE id = :id'), {"id": customer.id})
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    assert "Audit chain holds" in result.output
    assert f"user {customer.id}: {shown}" in result.output


def _registered(app, email: str, password: str) -> int:
    """A customer registered through the service (its REGISTER_SUCCESS row records the hash's
    credential_mac, as the registration page's does); returns the id."""
    from app.auth import services as identity

    with app.app_context():
        return identity.register_customer("Reg Istered", email, "+1 555 0100", password).id


REGISTERED_PASSWORD = "plum kettle orbit harbour 58"
CHANGED_PASSWORD = "violet canyon ledger spoon 31"


def test_verify_audit_follows_password_changes_and_rehashes(app, client, runner):
    """After one customer changes their password and another's hash is upgraded at sign-in
    (ARGON2_PROFILE changed), each write logged with the new hash's credential_mac, do the users
    still match the trail?"""
    first = _registered(app, "first@example.com", REGISTERED_PASSWORD)
    _registered(app, "second@example.com", REGISTERED_PASSWORD)
    assert client.post("/auth/login", data={"email": "first@example.com",
                                            "password": REGISTERED_PASSWORD}).status_code == 302
    assert client.post("/auth/change-password", data={
        "current_password": REGISTERED_PASSWORD, "new_password": CHANGED_PASSWORD,
        "confirm_password": CHANGED_PASSWORD}).status_code == 302
    client.post("/auth/logout")
    app.config["ARGON2_PROFILE"] = "RFC_9106_LOW_MEMORY"
    assert client.post("/auth/login", data={"email": "second@example.com",
                                            "password": REGISTERED_PASSWORD}).status_code == 302

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output
    rehashed = [json.loads(row.details) for row in _audit_rows(app) if row.action == "PASSWORD_CHANGED"]
    assert [row.get("reason") for row in rehashed] == [None, "rehash"]
    assert rehashed[0]["user_id"] == first and all(len(row["credential_mac"]) == 64 for row in rehashed)


def test_verify_audit_reports_a_password_hash_replaced_behind_the_app(app, runner):
    """Is a user's password hash replaced with SQL by one whose password the intruder knows
    (here another user's, copied) reported by verify-audit with exit status 1, naming the user,
    though the chain holds, while the user whose hash was copied is not?"""
    victim = _registered(app, "victim@example.com", REGISTERED_PASSWORD)
    intruder = _registered(app, "intruder@example.com", CHANGED_PASSWORD)
    with app.app_context():
        db.session.execute(text('UPDATE "user" SET password_hash = (SELECT password_hash FROM "user" WHERE id = :from) '
                                "WHERE id = :to"), {"from": intruder, "to": victim})
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    assert "Audit chain holds" in result.output
    assert f"user {victim}: the password hash is not what its last change (audit row" in result.output
    assert f"user {intruder}:" not in result.output


def test_verify_audit_follows_name_and_phone_edits_and_reports_one_made_behind_the_app(app, client, runner,
                                                                                    admin):
    """After a customer edits their profile and an admin edits the customer's name and phone
    (each audited with the values' contact_mac), do the users match the trail; and is a phone
    number then rewritten with SQL (the number reset-mfa's call-back would ring) reported?"""
    customer = _registered(app, "caller@example.com", REGISTERED_PASSWORD)
    assert client.post("/auth/login", data={"email": "caller@example.com",
                                            "password": REGISTERED_PASSWORD}).status_code == 302
    assert client.post("/auth/profile", data={"full_name": "Callie Caller",
                                              "phone": "+1 555 0111"}).status_code == 302
    _edit_user(app, admin, SimpleNamespace(id=customer), phone="+1 555 0122")
    with app.app_context():
        assert (db.session.get(User, customer).full_name, db.session.get(User, customer).phone) == (
            "Callie Caller", "+1 555 0122")
    intact = runner.invoke(args=["verify-audit"])
    with app.app_context():
        db.session.execute(text('UPDATE "user" SET phone = :phone WHERE id = :id'),
                           {"phone": "+1 555 0199", "id": customer})
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert intact.exit_code == 0, intact.output
    assert result.exit_code == 1
    assert f"user {customer}: the name or phone is not what its last change (audit row" in result.output


def test_verify_audit_holds_when_edits_of_one_user_overlap(app, runner, admin):
    """When an admin's edit of a user's phone commits while the user's own profile edit (of the
    name, from a form showing the old phone) is in flight, and the other way round, does each
    service start from the row as committed, so the recorded contact_mac matches what is stored
    and verify-audit passes?"""
    from app.auth import services as identity

    customer = _registered(app, "overlap@example.com", REGISTERED_PASSWORD)
    with app.app_context():
        stale = db.session.get(User, customer)  # the profile request's user, read before the edit
        _edit_user(app, admin, SimpleNamespace(id=customer), phone="+1 555 0133")
        identity.update_profile(stale, "Olive Overlap", "+1 555 0100")
        stale_admin = db.session.get(User, admin.id)
        target = db.session.get(User, customer)  # the admin's form, read before the next edit
        fields = {"full_name": target.full_name, "email": target.email, "phone": target.phone,
                  "role": target.role, "is_active": target.is_active}
    with app.app_context():
        identity.update_profile(db.session.get(User, customer), "Olive Overlap", "+1 555 0144")
    with app.app_context():
        identity.update_user(db.session.get(User, stale_admin.id), customer, **(fields | {"full_name": "Olive O."}))
        stored = db.session.get(User, customer)
        final = (stored.full_name, stored.phone)

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output
    assert final == ("Olive O.", "+1 555 0100")


def test_verify_audit_reports_a_user_no_registration_records(app, runner):
    """Is a user inserted behind the app (say, an admin with a known password) reported?"""
    with app.app_context():
        intruder = User(full_name="Intruder", email="intruder@example.com", phone="+1 555 0100",
                        password_hash="x", role="admin")
        db.session.add(intruder)
        db.session.commit()
        intruder_id = intruder.id

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    assert f"user {intruder_id}: no REGISTER_SUCCESS audit row records its creation" in result.output


def test_verify_chain_and_verify_audit_accept_an_intact_log(client, app, runner):
    """Do verify_chain and `flask verify-audit` report an untouched log as intact (exit 0)?"""
    _some_history(client)

    with app.app_context():
        report = audit_services.verify_chain(db.session)
    result = runner.invoke(args=["verify-audit"])

    assert report.ok and report.first_broken_id is None and report.rows_checked == len(_audit_rows(app))
    assert result.exit_code == 0, result.output
    assert "Audit chain holds" in result.output


def test_verify_audit_accepts_an_empty_log(runner):
    """Does verify-audit accept a fresh database with no audit rows yet?"""
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 0, result.output


def test_chain_hash_depends_on_the_key(app):
    """Would a different AUDIT_HMAC_KEY give a different hash (so the key, kept outside the
    database, is what makes forging rows impossible)?"""
    canonical = audit_services.canonical_row(1, None, "LOGIN_FAILURE", "{}", "127.0.0.1",
                                             datetime(2024, 1, 1, tzinfo=timezone.utc))

    assert audit_services.chain_hash(b"k1", "0" * 64, canonical) != audit_services.chain_hash(b"k2", "0" * 64, canonical)


def test_verify_audit_fails_with_another_key(client, app, database_url):
    """Does a log checked with a different HMAC key fail, naming row 1?"""
    _some_history(client)
    other = build_app(database_url, AUDIT_HMAC_KEY="another-key-0123456789abcdef0123456789abcdef")

    result = other.test_cli_runner().invoke(args=["verify-audit"])

    assert result.exit_code != 0
    assert _names_row(result, 1)


# ---------------------------------------------------------------------------------------------
# Append-only: triggers
# ---------------------------------------------------------------------------------------------


def test_triggers_exist_after_flask_db_upgrade(make_database, backend_name):
    """Does `flask db upgrade` on an empty database create the triggers that refuse UPDATE and
    DELETE on audit_log (two on SQLite; on PostgreSQL one row trigger for UPDATE/DELETE and one
    statement trigger for TRUNCATE)?"""
    fresh = build_app(make_database(migrated=False))

    result = fresh.test_cli_runner().invoke(args=["db", "upgrade", "--directory", MIGRATIONS])

    assert result.exit_code == 0, result.output
    with fresh.app_context():
        triggers = audit_triggers(db.session)
        db.session.rollback()
    assert set(triggers) == set(AUDIT_TRIGGERS[backend_name])
    if backend_name == "sqlite":
        assert "BEFORE UPDATE ON audit_log" in triggers["audit_log_no_update"]
        assert "BEFORE DELETE ON audit_log" in triggers["audit_log_no_delete"]
        assert all("RAISE(ABORT" in sql for sql in triggers.values())
    else:
        assert "BEFORE DELETE OR UPDATE ON public.audit_log FOR EACH ROW" in triggers["audit_log_no_update_delete"]
        assert "BEFORE TRUNCATE ON public.audit_log FOR EACH STATEMENT" in triggers["audit_log_no_truncate"]
        assert all("EXECUTE FUNCTION audit_log_refuse_change()" in sql for sql in triggers.values())


@pytest.mark.postgres
@pytest.mark.parametrize("statement", [
    "TRUNCATE audit_log",
    "TRUNCATE audit_log, audit_chain_head RESTART IDENTITY",
    'TRUNCATE "user" CASCADE',
])
def test_truncate_of_audit_log_is_refused_on_postgresql(client, app, statement):
    """Is TRUNCATE on audit_log refused on PostgreSQL (a statement trigger: row triggers don't see
    it), also when it arrives as a CASCADE from a table audit_log refers to, leaving every row?
    (SQLite has no TRUNCATE; its `DELETE FROM audit_log` is refused by the row triggers.)"""
    _some_history(client)
    before = [(row.id, row.hash) for row in _audit_rows(app)]

    with app.app_context():
        # A CASCADE from "user" reaches the ledger too, whose own trigger would refuse it first:
        # without it, only audit_log's trigger stands in the way.
        drop_ledger_triggers(db.session)
        with pytest.raises(DBAPIError, match="audit_log is append-only"):
            db.session.execute(text(statement))
        db.session.rollback()

    assert [(row.id, row.hash) for row in _audit_rows(app)] == before


def test_orm_update_of_an_audit_row_fails(client, app):
    """Is changing an audit row through the ORM refused by the database, leaving it unchanged?"""
    _some_history(client)
    original = _audit_rows(app)[0]

    with app.app_context():
        row = db.session.get(AuditLog, original.id)
        row.details = json.dumps({"email": "someone-else@example.com"})
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.commit()
        db.session.rollback()

    assert _audit_rows(app)[0].details == original.details


def test_orm_delete_of_an_audit_row_fails(client, app):
    """Is deleting an audit row through the ORM refused by the database?"""
    _some_history(client)
    count = len(_audit_rows(app))

    with app.app_context():
        db.session.delete(db.session.get(AuditLog, 1))
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.commit()
        db.session.rollback()

    assert len(_audit_rows(app)) == count


@pytest.mark.parametrize("statement", [
    "UPDATE audit_log SET details = '{}' WHERE id = 2",
    "UPDATE audit_log SET hash = 'x'",
    "DELETE FROM audit_log WHERE id = 2",
    "DELETE FROM audit_log",
])
def test_raw_sql_update_and_delete_on_audit_log_fail(client, app, statement):
    """Are raw SQL UPDATE and DELETE statements on audit_log refused, whoever sends them?"""
    _some_history(client)
    before = [(row.id, row.details, row.hash) for row in _audit_rows(app)]

    with app.app_context():
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(text(statement))
        db.session.rollback()

    assert [(row.id, row.details, row.hash) for row in _audit_rows(app)] == before


def test_bulk_orm_update_and_delete_on_audit_log_fail(client, app):
    """Are SQLAlchemy bulk update() and delete() statements on AuditLog refused too?"""
    _some_history(client)

    with app.app_context():
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(update(AuditLog).values(action="LOGOUT"))
        db.session.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(delete(AuditLog).where(AuditLog.id > 1))
        db.session.rollback()


# ---------------------------------------------------------------------------------------------
# Tampering is detected even with the triggers gone
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("column, value", [
    ("details", '{"email":"mallory@example.com"}'),
    ("action", "LOGOUT"),
    ("user_id", None),
    ("ip_address", "10.0.0.1"),
    ("timestamp", "2020-01-01 00:00:00.000000"),
])
def test_edited_row_is_reported_at_its_id(client, app, runner, column, value):
    """With the triggers dropped, is an edit of any hashed column of row 3 reported by verify-audit
    (non-zero exit, naming row 3)?"""
    _some_history(client)
    _drop_triggers(app)

    _raw(app, f"UPDATE audit_log SET {column} = :value WHERE id = 3", value=value)
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code != 0
    assert _names_row(result, 3)


def test_edit_with_a_recomputed_plain_hash_is_still_detected(client, app, runner):
    """Does an attacker who edits a row and recomputes an unkeyed SHA-256 hash still fail the check
    (the chain is keyed)?"""
    import hashlib

    _some_history(client)
    _drop_triggers(app)
    rows = _audit_rows(app)
    forged = hashlib.sha256((rows[1].hash + "forged").encode()).hexdigest()

    _raw(app, "UPDATE audit_log SET details = '{}', hash = :hash WHERE id = 3", hash=forged)
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code != 0 and _names_row(result, 3)


def test_deleted_middle_row_is_reported_at_its_id(client, app, runner):
    """With the triggers dropped, is a deleted middle row reported at the missing id?"""
    _some_history(client)
    _drop_triggers(app)
    assert len(_audit_rows(app)) >= 5

    _raw(app, "DELETE FROM audit_log WHERE id = 3")
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code != 0
    assert _names_row(result, 3)


def test_deleted_last_rows_are_reported(client, app, runner):
    """With the triggers dropped, is removing the newest rows reported, naming the first missing id?"""
    _some_history(client)
    _drop_triggers(app)
    last = len(_audit_rows(app))

    _raw(app, "DELETE FROM audit_log WHERE id >= :first", first=last - 1)
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code != 0
    assert _names_row(result, last - 1)


def test_swapped_rows_are_reported(client, app, runner):
    """With the triggers dropped, is swapping the content of two rows (keeping their hashes)
    reported at the first of them?"""
    _some_history(client)
    _drop_triggers(app)
    rows = _audit_rows(app)

    _raw(app, "UPDATE audit_log SET action = :a, details = :d WHERE id = 2", a=rows[2].action, d=rows[2].details)
    _raw(app, "UPDATE audit_log SET action = :a, details = :d WHERE id = 3", a=rows[1].action, d=rows[1].details)
    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code != 0 and _names_row(result, 2)


# ---------------------------------------------------------------------------------------------
# Unit of work: an audit row and its change commit together
# ---------------------------------------------------------------------------------------------


def test_failed_transfer_leaves_no_transfer_created_row(app, customer, make_account):
    """Does a transfer refused at write time leave a TRANSFER_FAILED row and no TRANSFER_CREATED?"""
    source = make_account(customer, "5.00")
    target = make_account(customer, "0.00")
    opened = len(_audit_rows(app))  # the two ACCOUNT_CREATED rows

    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(InsufficientFundsError):
            banking_services.transfer_internal(actor, customer.id, source.id, target.id, Decimal("6.00"), "",
                                               banking_services.new_idempotency_key(actor.id))

    actions = [row.action for row in _audit_rows(app)[opened:]]
    assert actions == ["TRANSFER_FAILED"]


def test_audit_row_is_rolled_back_with_its_change(app, customer, make_account, monkeypatch):
    """When a transfer fails after its TRANSFER_CREATED row was queued, is that row discarded with
    the money movement (nothing committed), and does it not leak into the next commit?"""
    source = make_account(customer, "50.00")
    target = make_account(customer, "0.00")
    opened = len(_audit_rows(app))  # the two ACCOUNT_CREATED rows
    real_log_event = banking_services.log_event

    def log_then_fail(action, details=None, **kwargs):
        real_log_event(action, details, **kwargs)
        if action == "TRANSFER_CREATED":
            raise RuntimeError("simulated crash after the audit row was queued")

    monkeypatch.setattr(banking_services, "log_event", log_then_fail)

    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(RuntimeError, match="simulated crash"):
            banking_services.transfer_internal(actor, customer.id, source.id, target.id, Decimal("10.00"), "",
                                               banking_services.new_idempotency_key(actor.id))
        monkeypatch.setattr(banking_services, "log_event", real_log_event)
        banking_services.open_account(actor, "savings", Decimal("0.00"))
        balances = dict(db.session.execute(select(Account.id, Account.balance)).all())
        transfer_rows = db.session.scalars(select(Transaction).where(Transaction.sender_account_id.is_not(None))).all()
        report = audit_services.verify_chain(db.session)

    assert balances[source.id] == Decimal("50.00") and balances[target.id] == Decimal("0.00")
    assert transfer_rows == []
    assert [row.action for row in _audit_rows(app)[opened:]] == ["ACCOUNT_CREATED"]
    assert report.ok


def test_change_is_rolled_back_when_its_audit_row_cannot_be_written(app, customer, make_account, monkeypatch):
    """If writing the audit row fails at commit, is the change it describes rolled back too?"""
    source = make_account(customer, "50.00")
    target = make_account(customer, "0.00")
    opened = len(_audit_rows(app))  # the two ACCOUNT_CREATED rows

    def broken_head(_session):
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(audit_services, "_lock_head", broken_head)

    with app.app_context():
        actor = db.session.get(User, customer.id)
        with pytest.raises(RuntimeError, match="audit store unavailable"):
            banking_services.transfer_internal(actor, customer.id, source.id, target.id, Decimal("10.00"), "",
                                               banking_services.new_idempotency_key(actor.id))
        balances = dict(db.session.execute(select(Account.id, Account.balance)).all())

    assert balances[source.id] == Decimal("50.00") and balances[target.id] == Decimal("0.00")
    assert len(_audit_rows(app)) == opened


def test_unknown_action_and_secret_detail_keys_are_refused(app):
    """Does the audit service refuse unknown action names and detail keys that name secrets?"""
    with app.app_context():
        with pytest.raises(ValueError, match="unknown audit action"):
            audit_services.queue_event(db.session, "MONEY_PRINTED", {}, None, None)
        for key in ("password", "new_password", "password_hash", "csrf_token", "session_id", "idempotency_key"):
            with pytest.raises(ValueError, match="must not carry secrets"):
                audit_services.queue_event(db.session, "LOGIN_FAILURE", {key: "x"}, None, None)
        db.session.rollback()


# ---------------------------------------------------------------------------------------------
# No secrets in the details
# ---------------------------------------------------------------------------------------------


def test_audit_details_never_contain_passwords(client, app):
    """After a registration, a failed and a successful login and a password change, does no audit
    row contain any of the passwords used (nor their hashes)?"""
    _register_and_login(client)
    response = client.post("/auth/change-password", data={"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                                           "confirm_password": NEW_PASSWORD})
    assert response.status_code == 302
    client.post("/auth/logout")
    client.post("/auth/login", data={"email": "alice@example.com", "password": WRONG_PASSWORD})
    client.post("/auth/login", data={"email": "nobody@example.com", "password": WRONG_PASSWORD})
    assert client.post("/auth/login", data={"email": "alice@example.com", "password": NEW_PASSWORD}).status_code == 302

    rows = _audit_rows(app)
    with app.app_context():
        password_hash = db.session.scalar(select(User.password_hash))
    actions = {row.action for row in rows}
    assert {"REGISTER_SUCCESS", "LOGIN_SUCCESS", "PASSWORD_CHANGED", "LOGIN_FAILURE", "LOGOUT"} <= actions
    for row in rows:
        for secret in (PASSWORD, NEW_PASSWORD, WRONG_PASSWORD, password_hash, password_hash.split("$")[-1]):
            assert secret not in row.details, (row.action, row.details)
        assert "password" not in json.loads(row.details)


def _head_from(result) -> str:
    return result.output.strip().splitlines()[-1].rsplit(" ", 1)[-1]


def test_anchor_detects_rows_cut_off_with_the_head_rewritten(client, app, runner):
    """With the triggers dropped, the newest rows deleted and the head row set back to match,
    does the chain alone still hold (only the missing triggers are reported), while verify-audit
    with an anchor recorded earlier reports the missing rows?"""
    _some_history(client)
    anchor = _head_from(runner.invoke(args=["verify-audit"]))
    last = int(anchor.split(":")[0])
    rows = _audit_rows(app)
    _drop_triggers(app)

    _raw(app, "DELETE FROM audit_log WHERE id >= :first", first=last - 1)
    _raw(app, "UPDATE audit_chain_head SET last_id = :i, last_hash = :h", i=last - 2, h=rows[last - 3].hash)
    without_anchor = runner.invoke(args=["verify-audit"])
    with_anchor = runner.invoke(args=["verify-audit", "--anchor", anchor])

    assert "Audit chain holds" in without_anchor.output and "AUDIT CHAIN BROKEN" not in without_anchor.output
    assert "AUDIT LOG UNGUARDED: audit_log: the append-only trigger" in without_anchor.output
    assert with_anchor.exit_code != 0 and _names_row(with_anchor, last - 1)


def test_verify_commands_report_append_only_triggers_dropped(app, runner, backend_name):
    """Are the audit log's and the ledger's append-only triggers, dropped as someone with the
    schema owner's rights would before rewriting rows, reported by verify-audit and
    verify-ledger (exit status 1, naming each trigger), though no row has changed?"""
    assert runner.invoke(args=["verify-audit"]).exit_code == 0
    assert runner.invoke(args=["verify-ledger"]).exit_code == 0
    with app.app_context():
        drop_audit_triggers(db.session)
        drop_ledger_triggers(db.session)
        db.session.commit()

    audit = runner.invoke(args=["verify-audit"])
    ledger = runner.invoke(args=["verify-ledger"])

    assert audit.exit_code == 1 and ledger.exit_code == 1
    for name in AUDIT_TRIGGERS[backend_name]:
        assert f"audit_log: the append-only trigger {name} is missing" in audit.output
    for name in LEDGER_TRIGGERS[backend_name]:
        assert f"transaction: the append-only trigger {name} is missing" in ledger.output


NARROWED_TRIGGERS = {
    "sqlite": {
        "when never": ('DROP TRIGGER transaction_no_update',
                       'CREATE TRIGGER transaction_no_update BEFORE UPDATE ON "transaction" WHEN 0 '
                       "BEGIN SELECT RAISE(ABORT, 'the ledger (transaction) is append-only'); END"),
        "one column only": ('DROP TRIGGER transaction_no_update',
                            'CREATE TRIGGER transaction_no_update BEFORE UPDATE OF idempotency_key ON "transaction" '
                            "BEGIN SELECT RAISE(ABORT, 'the ledger (transaction) is append-only'); END"),
    },
    "postgresql": {
        "when never": ('DROP TRIGGER transaction_no_update_delete ON "transaction"',
                       'CREATE TRIGGER transaction_no_update_delete BEFORE UPDATE OR DELETE ON "transaction" '
                       "FOR EACH ROW WHEN (false) EXECUTE FUNCTION ledger_refuse_change()"),
        "raises only if": ("CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
                           "BEGIN IF false THEN RAISE EXCEPTION 'the ledger (transaction) is append-only'; END IF; "
                           "RETURN NEW; END $$",),
    },
}


@pytest.mark.parametrize("how", ["when never", "one column only", "raises only if"])
def test_verify_ledger_reports_a_trigger_narrowed_so_it_never_refuses(app, runner, backend_name, how):
    """Is a ledger trigger left in place under its name but made harmless (a WHEN that is never
    true, UPDATE OF one column, or a function that raises only under a condition never met),
    after which a ledger row can be rewritten, reported by verify-ledger?"""
    statements = NARROWED_TRIGGERS[backend_name].get(how)
    if statements is None:
        pytest.skip(f"{how!r} is a {'PostgreSQL' if backend_name == 'sqlite' else 'SQLite'} case")
    with app.app_context():
        for statement in statements:
            db.session.execute(text(statement))
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code == 1
    trigger = "transaction_no_update" if backend_name == "sqlite" else "transaction_no_update_delete"
    shown = "no longer refuses the change" if how == "raises only if" else "is not as its migration created it"
    assert f"transaction: the append-only trigger {trigger} {shown}" in result.output


def test_trigger_check_reports_triggers_silenced_by_the_replication_role(app, backend_name):
    """On PostgreSQL, is session_replication_role = replica (which, set as the database's
    default, keeps every ordinary trigger from firing) reported?"""
    if backend_name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite has no replication role")
    with app.app_context():
        db.session.execute(text("SET LOCAL session_replication_role = replica"))
        problems = audit_services.append_only_trigger_problems(db.session, "audit_log")
        db.session.rollback()

    assert problems == ["audit_log: session_replication_role is not 'origin', so its triggers do not fire"]


@pytest.mark.parametrize("how", ["disabled", "defanged"])
def test_verify_audit_reports_an_append_only_trigger_disabled_or_defanged(app, runner, backend_name, how):
    """Is an audit-log trigger left in place but disabled (PostgreSQL's ALTER TABLE ... DISABLE
    TRIGGER) or made harmless (its body no longer raises) reported by verify-audit?"""
    if backend_name != "postgresql" and how == "disabled":
        pytest.skip("SQLite has no disabled triggers: it can only drop one")
    with app.app_context():
        if how == "disabled":
            db.session.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete"))
        elif backend_name == "postgresql":
            db.session.execute(text("CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger "
                                    "LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$"))
        else:
            db.session.execute(text("DROP TRIGGER audit_log_no_update"))
            db.session.execute(text("CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
                                    "BEGIN SELECT 1; END"))
        db.session.commit()

    result = runner.invoke(args=["verify-audit"])

    assert result.exit_code == 1
    trigger = "audit_log_no_update_delete" if backend_name == "postgresql" else "audit_log_no_update"
    shown = {"disabled": "is disabled", "defanged": "no longer refuses the change" if backend_name == "postgresql"
             else "is not as its migration created it"}[how]
    assert f"audit_log: the append-only trigger {trigger} {shown}" in result.output


def test_anchor_of_an_intact_log_passes_and_a_forged_one_fails(client, runner):
    """Does a recorded anchor pass on the untouched log, while an anchor with another hash fails?"""
    _some_history(client)
    anchor = _head_from(runner.invoke(args=["verify-audit"]))
    row_id = anchor.split(":")[0]

    assert runner.invoke(args=["verify-audit", "--anchor", anchor]).exit_code == 0
    assert runner.invoke(args=["verify-audit", "--anchor", f"{row_id}:{'a' * 64}"]).exit_code != 0
    assert runner.invoke(args=["verify-audit", "--anchor", "not-an-anchor"]).exit_code != 0


def test_verify_holds_while_audited_actions_commit_during_the_check(client, app, monkeypatch, backend_name):
    """Does verify_chain report an intact log as intact when another transaction appends an audit
    row while it reads (the auditor's check on a live system), instead of taking the new row for
    rows missing after the head? On PostgreSQL, where each statement sees the latest commits,
    does it go on to check the appended row too?"""
    _some_history(client)
    before = len(_audit_rows(app))
    original = audit_services._head_row
    appended = {"done": False}

    def head_then_a_concurrent_append(session):
        head = original(session)
        if not appended["done"]:
            appended["done"] = True
            with app.app_context():  # another session, another connection: commits on its own
                from app.security import log_standalone_event

                log_standalone_event("AUDIT_VIEWED", {"view": "concurrent"})
        return head

    monkeypatch.setattr(audit_services, "_head_row", head_then_a_concurrent_append)
    with app.app_context():
        report = audit_services.verify_chain(db.session)
    assert appended["done"] and len(_audit_rows(app)) == before + 1
    assert report.ok, report.reason
    if backend_name == "postgresql":
        assert report.rows_checked == before + 1


def test_a_row_beyond_the_head_is_reported_at_its_id(client, app, runner):
    """Is an audit row written past the chain head (inserted without moving the head, as a forger
    with INSERT rights could) reported as a break at its id?"""
    _some_history(client)
    last = len(_audit_rows(app))
    with app.app_context():
        db.session.execute(AuditLog.__table__.insert().values(
            id=last + 1, user_id=None, action="LOGIN_SUCCESS", details="{}", ip_address="203.0.113.9",
            timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc), hash="0" * 64))
        db.session.commit()
        report = audit_services.verify_chain(db.session)
    result = runner.invoke(args=["verify-audit"])

    assert not report.ok and report.first_broken_id == last + 1
    assert result.exit_code != 0 and _names_row(result, last + 1)
