"""The audit service: the only writer of `audit_log` and `audit_chain_head` (DESIGN.md section 4).

Events are queued on the SQLAlchemy session by `queue_event` and written just before that
session commits, so an audit row and the change it describes commit together or not at all.
Each row carries `hash = HMAC-SHA256(AUDIT_HMAC_KEY, previous hash || canonical JSON of the row)`.
Appends are serialized on the single `audit_chain_head` row (FOR UPDATE on PostgreSQL; on
SQLite the write transaction already holds the database's one write lock), and that lock is
taken at commit time, as late as possible.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

from flask import current_app
from sqlalchemy import Insert, bindparam, event, func, select, text
from sqlalchemy.orm import Session

from ..extensions import PENDING_AUDIT_KEY, db, insert_rows, rows_insert_statement
from ..models import AuditChainHead, AuditLog, after_utc_day, start_of_utc_day, utcnow
from ..pagination import KeysetPage, keyset_page

GENESIS_HASH = "0" * 64
PENDING_KEY = PENDING_AUDIT_KEY
ACTIONS = (
    "REGISTER_SUCCESS", "LOGIN_SUCCESS", "LOGIN_FAILURE", "LOGIN_THROTTLED", "LOGOUT",
    "PASSWORD_CHANGED", "PROFILE_UPDATED", "ACCOUNT_CREATED", "ACCOUNT_FROZEN", "ACCOUNT_UNFROZEN",
    "TRANSFER_CREATED", "TRANSFER_FAILED", "SUSPICIOUS_TRANSFER", "USER_UPDATED", "ROLE_CHANGED",
    "TICKET_CREATED", "TICKET_UPDATED", "ACCESS_DENIED", "AUDIT_VIEWED", "MFA_ENROLLED",
    "MFA_SUCCESS", "MFA_FAILURE", "MFA_DISABLED",
)
# Substrings of detail keys that would mean a secret is being logged (OWASP ASVS 7.1.1, 7.1.2).
FORBIDDEN_DETAIL_KEYS = ("password", "hash", "csrf", "session", "secret", "idempotency")


@dataclass(frozen=True)
class PendingEvent:
    """An audit event waiting for its transaction to commit."""

    action: str
    details: str
    user_id: int | None
    ip_address: str | None


@dataclass(frozen=True)
class ChainReport:
    """Result of `verify_chain`: `ok`, rows checked, and the first broken row id (None if ok)."""

    ok: bool
    rows_checked: int
    first_broken_id: int | None
    reason: str
    head_id: int = 0
    head_hash: str = GENESIS_HASH


def _check_details(details: dict[str, Any]) -> None:
    for key in details:
        lowered = str(key).lower()
        if any(word in lowered for word in FORBIDDEN_DETAIL_KEYS):
            raise ValueError(f"audit details must not carry secrets (key {key!r})")


def queue_event(
    session: Session,
    action: str,
    details: dict[str, Any] | None,
    user_id: int | None,
    ip_address: str | None,
) -> None:
    """Queue one audit event on `session`; it is written when that session next commits.

    action: one of ACTIONS. details: a JSON-serialisable dict without secrets (keys naming
    passwords, hashes, CSRF or session tokens raise ValueError). user_id: the acting user or
    None. ip_address: the client IP as Werkzeug reports it. Raises ValueError on an unknown
    action. Nothing is written if the transaction rolls back.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    details = details or {}
    _check_details(details)
    encoded = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    session.info.setdefault(PENDING_KEY, []).append(PendingEvent(action, encoded, user_id, ip_address))


def format_timestamp(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and `Z`; naive datetimes (SQLite) are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_row(row_id: int, user_id: int | None, action: str, details: str, ip_address: str | None,
                  timestamp: datetime) -> str:
    """The canonical JSON of an audit row, as hashed: sorted keys, no spaces, UTC `Z` time."""
    return json.dumps(
        {
            "action": action,
            "details": details,
            "id": row_id,
            "ip_address": ip_address,
            "timestamp": format_timestamp(timestamp),
            "user_id": user_id,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )


def chain_hash(key: bytes, previous_hash: str, canonical: str) -> str:
    """HMAC-SHA256(key, previous_hash || canonical), as 64 lowercase hex characters."""
    return hmac.new(key, (previous_hash + canonical).encode("utf-8"), hashlib.sha256).hexdigest()


def _hmac_key() -> bytes:
    return current_app.config["AUDIT_HMAC_KEY"].encode("utf-8")


_HEAD = select(AuditChainHead.last_id, AuditChainHead.last_hash).where(AuditChainHead.id == 1)


def _head_row(session: Session):
    """The head's (last_id, last_hash) row as stored, or None; no lock, no ORM object."""
    return session.execute(_HEAD).one_or_none()


_HEAD_FOR_UPDATE = _HEAD.with_for_update()
# The head's new values, bound at each append (statements are built once; see _append_statement).
_NEW_HEAD = (AuditChainHead.__table__.update().where(AuditChainHead.id == 1)
             .values(last_id=bindparam("head_last_id"), last_hash=bindparam("head_last_hash")))
_APPENDED_COLUMNS = ("id", "user_id", "action", "details", "ip_address", "timestamp", "hash")


def _lock_head(session: Session) -> tuple[int, str]:
    """Lock the head row (FOR UPDATE) for the rest of the transaction; its (last id, last hash)."""
    last_id, last_hash = session.connection().execute(_HEAD_FOR_UPDATE).one()
    return last_id, last_hash


@functools.lru_cache(maxsize=8)
def _append_statement(count: int) -> Insert:
    """PostgreSQL's append of `count` rows in one statement: the audit INSERT carrying the head's
    UPDATE as a data-modifying WITH clause (built once per row count, then cached compiled)."""
    return rows_insert_statement(AuditLog.__table__, _APPENDED_COLUMNS, count).add_cte(_NEW_HEAD.cte("new_head"))


def _write_pending(session: Session) -> None:
    """Session hook: append the queued events to the chain inside the committing transaction.

    The head is locked (FOR UPDATE) only now, at commit time, and the rows and the new head
    are written as plain statements (no ORM objects, no unit-of-work bookkeeping; one statement
    on PostgreSQL), so the lock that serializes every audited change is held for as little time
    as possible.
    """
    pending: list[PendingEvent] = session.info.pop(PENDING_KEY, [])
    if not pending:
        return
    key = _hmac_key()
    last_id, last_hash = _lock_head(session)
    rows = []
    for item in pending:
        last_id += 1
        moment = utcnow()
        last_hash = chain_hash(
            key, last_hash, canonical_row(last_id, item.user_id, item.action, item.details, item.ip_address, moment)
        )
        rows.append(dict(id=last_id, user_id=item.user_id, action=item.action, details=item.details,
                         ip_address=item.ip_address, timestamp=moment, hash=last_hash))
    statement, parameters = insert_rows(AuditLog.__table__, rows)
    head = {"head_last_id": last_id, "head_last_hash": last_hash}
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # One round trip while the lock is held: the head's UPDATE rides along as a
        # data-modifying WITH clause, which PostgreSQL runs whether or not the INSERT reads it.
        connection.execute(_append_statement(len(rows)), parameters | head)
    else:
        connection.execute(statement, parameters)
        connection.execute(_NEW_HEAD, head)


def _discard_pending(session: Session, *_args: Any) -> None:
    session.info.pop(PENDING_KEY, None)


def install_session_hooks() -> None:
    """Register the commit and rollback hooks on every SQLAlchemy session (idempotent)."""
    if not event.contains(Session, "before_commit", _write_pending):
        event.listen(Session, "before_commit", _write_pending)
        event.listen(Session, "after_rollback", _discard_pending)


def parse_anchor(text: str) -> tuple[int, str]:
    """Parse an anchor `"<row id>:<64 hex hash>"`, as printed by verify-audit; raise ValueError."""
    row_part, _, digest = text.strip().partition(":")
    if not row_part.isascii() or not row_part.isdigit() or len(digest) != 64 or not all(
        ch in "0123456789abcdef" for ch in digest
    ):
        raise ValueError("an anchor is <row id>:<64 lowercase hex characters>")
    return int(row_part), digest


def record_mac(purpose: str, *values: str | int) -> str:
    """HMAC-SHA256 under AUDIT_HMAC_KEY of stored values, as 64 hex characters.

    purpose: what the values are ("password-hash", "contact", "ticket", "ticket-note"), so a MAC
    of one kind never matches another; values: the row's id first (a value copied from another
    row gets another MAC), then the column values as stored. Audit rows record such MACs where
    the values themselves must not be copied into the log (a password hash; a phone number or a
    ticket's text, which the log has no need to spread), so the verifying commands
    (verify_user_records, verify_ticket_records) can tell a value rewritten with SQL from one the
    app wrote (PCI DSS 10.2.1, 10.3.4). A MAC reveals nothing of the values without the key,
    which is kept outside the database.
    """
    key = current_app.config["AUDIT_HMAC_KEY"].encode("utf-8")
    message = json.dumps([purpose, *values], ensure_ascii=False).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


# The append-only triggers as the migrations create them (migrations/versions/
# 0001_initial_schema.py for audit_log, 0004_ledger_append_only.py for the ledger): by table and
# backend, each trigger's name and its definition, then (PostgreSQL) its function's body, as
# the database reports them. verify-audit and verify-ledger compare them whole (_squeezed), so a
# trigger narrowed with WHEN or UPDATE OF, or a function that raises only under a condition,
# differs too.
_SQLITE_REFUSAL = "BEGIN SELECT RAISE(ABORT, '{message}'); END"
_PG_ROW_TRIGGER = "CREATE TRIGGER {name} BEFORE DELETE OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION {function}()"
_PG_TRUNCATE_TRIGGER = "CREATE TRIGGER {name} BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
_PG_REFUSAL = "BEGIN RAISE EXCEPTION '{message}'; END"


def _expected_triggers(table: str, quoted: str, function: str, message: str) -> dict[str, dict[str, tuple[str, str]]]:
    """APPEND_ONLY_TRIGGERS' entry for `table` (`quoted`: as the migration's SQL names it)."""
    sqlite = {f"{table}_no_{event.lower()}": (
        f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {quoted} "
        + _SQLITE_REFUSAL.format(message=message), "") for event in ("UPDATE", "DELETE")}
    postgresql = {name: (template.format(name=name, table=quoted, function=function),
                         _PG_REFUSAL.format(message=message))
                  for name, template in ((f"{table}_no_update_delete", _PG_ROW_TRIGGER),
                                         (f"{table}_no_truncate", _PG_TRUNCATE_TRIGGER))}
    return {"sqlite": sqlite, "postgresql": postgresql}


APPEND_ONLY_TRIGGERS: dict[str, dict[str, dict[str, tuple[str, str]]]] = {
    "audit_log": _expected_triggers("audit_log", "audit_log", "audit_log_refuse_change", "audit_log is append-only"),
    "transaction": _expected_triggers("transaction", '"transaction"', "ledger_refuse_change",
                                      "the ledger (transaction) is append-only"),
}
_SQLITE_TRIGGERS = text(
    "SELECT name, sql, 'O', '' FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table")
# tgenabled: 'O' fires in ordinary sessions, 'A' always; 'D' (disabled) and 'R' (replica only) don't.
_POSTGRESQL_TRIGGERS = text(
    "SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled, p.prosrc FROM pg_trigger t "
    "JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = CAST(quote_ident(:table) AS regclass) "
    "AND NOT t.tgisinternal")
# The database's default for new sessions: 'replica' would silence every ordinary trigger.
_REPLICATION_ROLE = text("SELECT current_setting('session_replication_role')")
# PostgreSQL names the table and the function with their schema when it is not on the path.
_SCHEMA_PREFIX = re.compile(r"( ON | FUNCTION )[A-Z_][A-Z0-9_$]*\.")


def _squeezed(sql: object) -> str:
    """`sql` upper-cased, runs of white space made one space, none after "(" or before ")",
    identifiers unquoted and a schema before the table or function name dropped: how two
    definitions are compared (PostgreSQL reports `ON public.transaction` for `ON "transaction"`)."""
    squeezed = " ".join(str(sql or "").upper().replace('"', "").split()).replace("( ", "(").replace(" )", ")")
    return _SCHEMA_PREFIX.sub(r"\1", squeezed)


def append_only_trigger_problems(session: Session, table: str) -> list[str]:
    """Check that `table`'s append-only triggers (APPEND_ONLY_TRIGGERS: "audit_log" or
    "transaction") are all there, enabled, and exactly as the migrations made them (read-only).

    Each must exist under its migration's name with its migration's definition, word for word
    once white space, case and schema names are set aside (so not narrowed by WHEN or UPDATE OF,
    nor moved to other events); on PostgreSQL its function must still be the one that raises,
    the trigger enabled (not disabled, nor set to fire for replicas only), and the database's
    session_replication_role the default. Someone with the schema owner's rights who drops,
    disables or defangs one to rewrite rows would otherwise leave no trace once the rows are
    consistent again (OWASP ASVS 7.3.3, PCI DSS 10.3.2). Returns the problems found as
    sentences; an empty list when every trigger holds. Raises KeyError for an unknown table.
    """
    backend = session.get_bind().dialect.name
    query = _SQLITE_TRIGGERS if backend == "sqlite" else _POSTGRESQL_TRIGGERS
    found = {row[0]: row[1:] for row in session.execute(query, {"table": table})}
    problems = []
    if backend == "postgresql" and session.execute(_REPLICATION_ROLE).scalar_one() != "origin":
        problems.append(f"{table}: session_replication_role is not 'origin', so its triggers do not fire")
    for trigger, (definition, body) in APPEND_ONLY_TRIGGERS[table][backend].items():
        if trigger not in found:
            problems.append(f"{table}: the append-only trigger {trigger} is missing")
            continue
        actual_definition, enabled, actual_body = found[trigger]
        if _squeezed(actual_definition) != _squeezed(definition):
            problems.append(f"{table}: the append-only trigger {trigger} is not as its migration created it")
        elif enabled not in ("O", "A"):
            problems.append(f"{table}: the append-only trigger {trigger} is disabled")
        elif _squeezed(actual_body) != _squeezed(body):
            problems.append(f"{table}: the append-only trigger {trigger} no longer refuses the change")
    return problems


# How many times verify_chain follows a head that moved while it read (appends committed
# meanwhile) before it settles for the rows it has checked.
VERIFY_ROUNDS = 20


def verify_chain(session: Session, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Recompute every row's HMAC in id order and compare with the stored chain.

    anchor: optional (row id, hash) recorded earlier outside the database (verify-audit prints
    the head each time); the row must still exist with that hash. The chain alone cannot show
    that its newest rows were cut off together with the head row, so keep anchors elsewhere.
    Returns a ChainReport whose `first_broken_id` is the first row that was edited, inserted out
    of order, follows a deleted row, or lies beyond the head; when rows were removed from the
    end, it is the first missing id. Reads in batches, so memory stays flat on a large log.

    Safe while audited actions commit (PostgreSQL at READ COMMITTED sees each of its statements'
    own moment): the head is read first and only the rows it covers are checked, all of which
    were committed with it or before it; rows found beyond it are then either appends that
    committed meanwhile (the head has moved: they are checked in turn, up to VERIFY_ROUNDS
    times) or rows the head doesn't cover (a break). Reading the rows first and the head after
    took every concurrent append for missing rows.
    """
    key = _hmac_key()
    previous = GENESIS_HASH
    expected_id = 1
    checked = 0
    head = _head_row(session)
    for _ in range(VERIFY_ROUNDS):
        last_id, last_hash = (head.last_id, head.last_hash) if head is not None else (0, GENESIS_HASH)
        # Closed on every way out: with yield_per, PostgreSQL reads through a server-side cursor
        # that an early return would otherwise leave open.
        statement = (select(AuditLog).where(AuditLog.id >= expected_id, AuditLog.id <= last_id)
                     .order_by(AuditLog.id).execution_options(yield_per=1000))
        with session.execute(statement).scalars() as rows:
            for row in rows:
                if row.id != expected_id:
                    return ChainReport(False, checked, min(row.id, expected_id), f"row {expected_id} is missing")
                digest = chain_hash(
                    key, previous,
                    canonical_row(row.id, row.user_id, row.action, row.details, row.ip_address, row.timestamp),
                )
                if not hmac.compare_digest(digest, row.hash):
                    return ChainReport(False, checked, row.id, f"row {row.id} does not match its hash")
                if anchor is not None and row.id == anchor[0] and not hmac.compare_digest(row.hash, anchor[1]):
                    return ChainReport(False, checked, row.id, f"row {row.id} differs from the recorded anchor")
                previous = row.hash
                expected_id += 1
                checked += 1
        if head is None or checked != last_id or not hmac.compare_digest(previous, last_hash):
            return ChainReport(False, checked, expected_id, f"rows from {expected_id} on are missing")
        beyond = session.scalar(select(func.min(AuditLog.id)).where(AuditLog.id > last_id))
        if beyond is None:
            break
        newer = _head_row(session)
        if newer is None or newer.last_id <= last_id:
            return ChainReport(False, checked, beyond, f"row {beyond} is beyond the chain head")
        head = newer
    if anchor is not None and anchor[0] > checked:
        return ChainReport(False, checked, checked + 1, f"rows from {checked + 1} on are missing (anchor {anchor[0]})")
    return ChainReport(True, checked, None, f"{checked} rows checked; the chain holds", checked, previous)


# ---------------------------------------------------------------------------------------------
# Reading the log (the auditor's pages); nothing below writes.
# ---------------------------------------------------------------------------------------------

EVENTS_PAGE_SIZE = 50


@dataclass(frozen=True)
class AuditFilters:
    """Filters of the audit log list: `action` (one of ACTIONS, exact), `user_id` (the acting
    user), and `date_from` / `date_to` (UTC days, both inclusive). None means "any"."""

    action: str | None = None
    user_id: int | None = None
    date_from: date | None = None
    date_to: date | None = None


def list_events(filters: AuditFilters, before: int | None) -> KeysetPage:
    """Audit rows matching `filters`, newest first, 50 per page, keyset-paginated (read-only).

    before: the cursor, a row id (exclusive); None for the newest page, 0 for an empty page.
    An `action` outside ACTIONS matches nothing (the form refuses it before it gets here).
    Returns a KeysetPage of AuditLog rows (DESIGN.md sections 4 and 8).
    """
    stmt = select(AuditLog)
    if filters.action is not None:
        stmt = stmt.where(AuditLog.action == filters.action)
    if filters.user_id is not None:
        stmt = stmt.where(AuditLog.user_id == filters.user_id)
    if filters.date_from is not None:
        stmt = stmt.where(AuditLog.timestamp >= start_of_utc_day(filters.date_from))
    if filters.date_to is not None and after_utc_day(filters.date_to) is not None:
        stmt = stmt.where(AuditLog.timestamp < after_utc_day(filters.date_to))
    return keyset_page(stmt, AuditLog.id, before, EVENTS_PAGE_SIZE)


def stored_head(session: Session) -> tuple[int, str]:
    """The (last id, last hash) recorded in `audit_chain_head`, as stored (not verified);
    (0, GENESIS_HASH) before the first row. Read-only, takes no lock."""
    head = _head_row(session)
    return (head.last_id, head.last_hash) if head is not None else (0, GENESIS_HASH)


def verify_log() -> tuple[ChainReport, tuple[int, str]]:
    """Run verify_chain on the application's session and read the stored head (read-only).

    Returns the report and the head row's `(id, hash)`; when the chain holds they agree with
    the report's head, when it is broken the stored head is shown as "not verified".
    """
    report = verify_chain(db.session)
    return report, stored_head(db.session)


class RecordedEvent(NamedTuple):
    """One audit row as the verifying commands replay it: id, action, user_id (int or None) and
    details, the stored JSON text parsed; None when that text is not a JSON object."""

    id: int
    action: str
    user_id: int | None
    details: dict[str, Any] | None


def recorded_events(actions: Collection[str]) -> Iterator[RecordedEvent]:
    """Every audit row whose action is one of `actions`, in chain order (ascending id), with its
    details parsed (read-only; streamed in batches of 5,000 rows, so memory stays flat on a long
    trail). The cross-checks of `flask verify-ledger` and `flask verify-audit` replay what the
    trail says happened through this one reader (PCI DSS 10.3.4). A row whose details are not a
    JSON object comes with details None, for the caller to report."""
    rows = db.session.execute(
        select(AuditLog.id, AuditLog.action, AuditLog.user_id, AuditLog.details)
        .where(AuditLog.action.in_(tuple(actions))).order_by(AuditLog.id).execution_options(yield_per=5000))
    for row_id, action, user_id, text in rows:
        try:
            details = json.loads(text)
        except (TypeError, ValueError):
            details = None
        yield RecordedEvent(row_id, action, user_id, details if isinstance(details, dict) else None)
