"""Extension objects (created here, initialised in the app factory) and the transaction helper.

Nothing here imports the application's models or blueprints, so any module may import it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, TypeVar

from flask import Flask, current_app, request
from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_login import LoginManager, current_user
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from limits import parse as parse_rate_limit
from sqlalchemy import Insert, MetaData, Table, bindparam, event, select, union_all
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import TooManyRequests

log = logging.getLogger(__name__)

# Stable constraint names, so migrations are deterministic on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
bootstrap = Bootstrap5()


def rate_limit_key() -> str:
    """Key for per-user request limits: the user id when logged in, else the client IP."""
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{request.remote_addr}"


limiter = Limiter(key_func=lambda: request.remote_addr or "unknown")


def take_allowance(limit_setting: str, scope: str) -> bool:
    """Count one use of the request limit named by the config key `limit_setting` (e.g.
    "TICKET_RATE_LIMIT", a Flask-Limiter string such as "10 per hour") under `scope`, for the
    signed-in user (rate_limit_key), in the limiter's storage (shared by every process when it
    is Redis); False once the limit is used up. Always True when request limits are off.

    One atomic increment that checks and counts at once, for a limit a view takes only at the
    point where the request is known to count: a limit tested before the request and deducted
    after its answer (Flask-Limiter's deduct_when) lets simultaneous requests all pass the test.
    """
    if not limiter.enabled:
        return True
    config = current_app.config
    return limiter.limiter.hit(parse_rate_limit(config[limit_setting]), config["RATELIMIT_KEY_PREFIX"], scope,
                               rate_limit_key())


def require_allowance(limit_setting: str, scope: str) -> None:
    """take_allowance(`limit_setting`, `scope`), answering 429 with Retry-After
    (refuse_over_allowance) when the allowance is used up. Returns None when the use counted."""
    if not take_allowance(limit_setting, scope):
        refuse_over_allowance(limit_setting, scope)


def _whole_seconds_until(moment: float) -> int:
    """Seconds from now until `moment` (a Unix time), rounded up, at least 1: a Retry-After value."""
    return max(1, math.ceil(moment - time.time()))


def refuse_over_allowance(limit_setting: str, scope: str) -> NoReturn:
    """Answer 429 for a request that take_allowance(`limit_setting`, `scope`) refused, with a
    Retry-After header: the whole seconds (at least 1) until the moving window lets the
    signed-in user's next use in, i.e. until their oldest counted use leaves it (RFC 6585 4,
    RFC 9110 10.2.3). The header is left out, not guessed, when the limiter's storage can't say.
    Raises werkzeug's TooManyRequests, always."""
    config = current_app.config
    try:
        stats = limiter.limiter.get_window_stats(parse_rate_limit(config[limit_setting]),
                                                 config["RATELIMIT_KEY_PREFIX"], scope, rate_limit_key())
        retry_after: int | None = _whole_seconds_until(stats.reset_time)
    except Exception:  # noqa: BLE001 - the storage (Redis) gone: still a 429, without the hint
        log.warning("could not read the %s window for Retry-After", limit_setting, exc_info=True)
        retry_after = None
    raise TooManyRequests(retry_after=retry_after)


def rate_limit_retry_after() -> int | None:
    """Whole seconds (at least 1) until the Flask-Limiter limit that refused this request lets
    its next request in (its window's reset time: under the moving window, when the oldest
    counted request leaves it), for the Retry-After header of that 429 (RFC 9110 10.2.3); None
    when no limit refused the request or the storage can't say."""
    try:
        breached = limiter.current_limit
        if breached is None or not breached.breached:
            return None
        return _whole_seconds_until(breached.window.reset_time)
    except Exception:  # noqa: BLE001 - the storage (Redis) gone: still a 429, without the hint
        log.warning("could not read the breached limit's window for Retry-After", exc_info=True)
        return None


# True while a service is inside atomic(): SQLite then begins its transaction IMMEDIATE.
_write_intent: contextvars.ContextVar[bool] = contextvars.ContextVar("write_intent", default=False)
# True while this thread holds the SQLite writers' queue (see _sqlite_writer_turn).
_writer_turn: contextvars.ContextVar[bool] = contextvars.ContextVar("writer_turn", default=False)

T = TypeVar("T")


class TryAgainError(Exception):
    """The database reported a deadlock, serialization failure or lock timeout too many times."""


@contextmanager
def atomic() -> Iterator[None]:
    """Run the block as one database transaction: commit if it succeeds, roll back and re-raise if not.

    On SQLite, any read-only transaction the request already opened (the user loader queries) is
    ended first, so the block starts a fresh transaction that begins IMMEDIATE (the write lock
    is taken up front, so two writers queue on the busy timeout instead of failing to upgrade a
    read snapshot), after its turn in the writers' queue (_sqlite_writer_turn). On PostgreSQL
    the block continues the request's READ COMMITTED transaction (every statement sees the
    latest committed data anyway), which saves a COMMIT, a BEGIN and the reload of everything
    the commit would have expired. Raises RuntimeError if the session holds unflushed changes
    made outside any atomic block, because they would otherwise be committed by accident.
    """
    session = db.session()
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("atomic() entered with changes made outside a transaction block")
    if session.in_transaction() and session.get_bind().dialect.name == "sqlite":
        # SQLite must end the read transaction so the block's begins IMMEDIATE. PostgreSQL at
        # READ COMMITTED takes a fresh snapshot for every statement, so the block simply goes on
        # in the request's transaction: no COMMIT, BEGIN and reload of the expired user first
        # (three round trips on every transfer). Values read before are never trusted either way.
        session.commit()
    token = _write_intent.set(True)
    try:
        with _sqlite_writer_turn(session):
            try:
                yield
                session.commit()
            except BaseException:
                session.rollback()
                raise
    finally:
        _write_intent.reset(token)


@contextmanager
def _sqlite_writer_turn(session) -> Iterator[None]:
    """On a SQLite file, wait for this write transaction's turn on an OS file lock beside the
    database (`<file>.writers`, flock), held until the commit or rollback; elsewhere, nothing.

    SQLite lets one writer in at a time and makes the others poll (its busy handler sleeps
    1 ms, 2 ms, ... up to 100 ms between tries), so under concurrent transfers most of a
    waiter's time is spent asleep after the lock was already free, and the slowest transfers
    wait ten times the typical one (make bench, bench/results.md). Queued on flock, a waiting
    writer is woken as soon as the previous one finishes. BEGIN IMMEDIATE and the busy timeout
    stay underneath for writers that don't queue (another program on the same file). Nested
    atomic() blocks (none today) would reuse the turn they already hold.
    """
    bind = session.get_bind()
    path = bind.url.database if bind.dialect.name == "sqlite" else None
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: SQLite's busy handler alone
        fcntl = None
    if fcntl is None or not path or path == ":memory:" or path.startswith("file:") or _writer_turn.get():
        yield
        return

    descriptor = os.open(f"{path}.writers", os.O_RDWR | os.O_CREAT, 0o600)
    token = _writer_turn.set(True)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        _writer_turn.reset(token)
        os.close(descriptor)  # closing releases the lock


def is_transient_conflict(exc: BaseException) -> bool:
    """True for a deadlock, serialization failure or lock wait that a retry may resolve.

    PostgreSQL SQLSTATE 40001 / 40P01 / 55P03; SQLite "database is locked" / "busy".
    """
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in {"40001", "40P01", "55P03"}:
        return True
    message = str(exc.orig).lower()
    return isinstance(exc, OperationalError) and ("database is locked" in message or "busy" in message)


def retry_on_conflict(operation: Callable[[], T], attempts: int | None = None) -> T:
    """Call `operation` (which must run its own atomic() block) and retry on transient conflicts.

    attempts: total tries, default the TRANSFER_MAX_RETRIES setting. Raises TryAgainError when
    every try hit a deadlock or serialization failure (DESIGN.md section 3: never a 500).
    Each retry logs a WARNING "transfer retried after <SQLSTATE or 'database is locked'>
    (attempt n)", n being the try about to start, so load runs can count them.
    """
    tries = attempts or current_app.config["TRANSFER_MAX_RETRIES"]
    for attempt in range(1, tries + 1):
        try:
            return operation()
        except DBAPIError as exc:
            if not is_transient_conflict(exc):
                raise
            if attempt == tries:
                raise TryAgainError() from exc
            code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
            log.warning("transfer retried after %s (attempt %d)", code or "database is locked", attempt + 1)
            time.sleep(0.01 * attempt)
    raise TryAgainError()


def insert_rows(table: Table, rows: Sequence[Mapping[str, Any]]) -> tuple[Insert, dict[str, Any]]:
    """One INSERT that writes `rows` into `table`, in the order given: (statement, parameters),
    to run as `session.execute(statement, parameters)`.

    rows: one or more dicts with the same keys (column names); every column the table needs
    must be given (Python-side column defaults are not applied). The statement is built once per
    (table, columns, number of rows) and SQLAlchemy's compiled cache holds it, where
    `table.insert().values([row, row])`, a multi-VALUES INSERT, is built and compiled afresh on
    every execution (SQLAlchemy never caches those). One row goes in as `INSERT ... VALUES`,
    several as `INSERT ... SELECT ... UNION ALL SELECT ...`. Each value is a bound parameter
    converted by its column's type (the cents type included), never SQL text; the parameters are
    named `row<index>_<column>`, never like SQLAlchemy's own `<column>_<n>` (which a WITH clause
    added to the statement may carry). Raises ValueError for no rows or rows whose keys differ.
    """
    if not rows:
        raise ValueError("insert_rows needs at least one row")
    names = tuple(rows[0])
    if any(tuple(row) != names for row in rows):
        raise ValueError("every row must name the same columns in the same order")
    parameters = {f"row{index}_{name}": row[name] for index, row in enumerate(rows) for name in names}
    return rows_insert_statement(table, names, len(rows)), parameters


@functools.lru_cache(maxsize=64)
def rows_insert_statement(table: Table, names: tuple[str, ...], count: int) -> Insert:
    """The statement of insert_rows for `count` rows of the columns `names` (cached: statements
    are immutable, and building one costs more than running it from the compiled cache)."""
    def bound(name: str, index: int):
        return bindparam(f"row{index}_{name}", type_=table.c[name].type)

    if count == 1:
        return table.insert().values({name: bound(name, 0) for name in names})
    selects = [select(*(bound(name, index).label(name) for name in names)) for index in range(count)]
    return table.insert().from_select(list(names), union_all(*selects), include_defaults=False)


SQLITE_FILE_SUFFIXES = ("", "-wal", "-shm")


def private_database_file(path: str | None) -> None:
    """Make the SQLite database at `path` readable and writable by its owner only (mode 0600),
    creating it empty when it doesn't exist yet; None, "" and ":memory:" are left alone.

    The file holds password hashes, personal details, encrypted MFA keys and the audit log
    (OWASP ASVS 4.0.3 14.1.3, CWE-732). SQLite would create it with the process umask (0644 as
    a rule, readable by every local user); it gives its -wal and -shm files the database file's
    own permissions, and any of the three left broader by an earlier run is tightened here.
    """
    if not path or path == ":memory:" or path.startswith("file:") or not os.path.isdir(os.path.dirname(path) or "."):
        return  # in memory, a URI, or a folder that isn't there (SQLite's own error will say so)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for suffix in SQLITE_FILE_SUFFIXES:
        with suppress(FileNotFoundError):
            if os.stat(f"{path}{suffix}").st_mode & 0o077:
                os.chmod(f"{path}{suffix}", 0o600)


def configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    """Make a SQLite engine safe for money: WAL, synchronous=FULL, foreign keys, busy timeout
    (durability first), plus a larger page cache, memory-mapped reads and in-memory sorts.

    The driver's own transaction handling is switched off and SQLAlchemy emits BEGIN itself:
    `BEGIN IMMEDIATE` inside atomic() (writers queue for the lock), plain `BEGIN` elsewhere
    (readers never block). This is the recipe from SQLAlchemy's pysqlite documentation.
    The database file is made private to its owner first (private_database_file).
    """
    private_database_file(engine.url.database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # pragma: no cover - driver callback
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # PRAGMA values can't be bound parameters; int() leaves nothing but digits to insert.
        # nosemgrep: sql-built-from-string
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        # Speed that costs no durability (make bench, bench/results.md): a 32 MiB page cache
        # instead of 2 MiB, reads through a memory map instead of a read() per page, and sorts
        # (a deep page of transactions) in memory. Writes still go through the WAL, synced.
        cursor.execute("PRAGMA cache_size = -32768")
        cursor.execute("PRAGMA mmap_size = 268435456")
        cursor.execute("PRAGMA temp_store = MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _write_intent.get() else "BEGIN")


# Where the audit service queues the events of the current unit of work (app/audit/services.py).
PENDING_AUDIT_KEY = "pending_audit_events"


# Set on a connection's info when a statement other than a SELECT ran on it outside atomic().
_WROTE_OUTSIDE_ATOMIC = "wrote_outside_atomic"


def _note_write_outside_atomic(conn, _cursor, statement: str, _parameters, _context, _executemany) -> None:
    if not _write_intent.get() and statement.lstrip()[:6].upper() != "SELECT":
        conn.info[_WROTE_OUTSIDE_ATOMIC] = True


def _forget_writes_of_the_last_transaction(conn) -> None:
    conn.info.pop(_WROTE_OUTSIDE_ATOMIC, None)


def end_read_only_transaction(error: BaseException | None) -> None:
    """Request teardown, run before Flask-SQLAlchemy's: end the request's open transaction with
    COMMIT instead of ROLLBACK when it only read (PostgreSQL only).

    Every write runs inside atomic(), which commits or rolls back before the view returns, so a
    transaction still open here has normally only read; COMMIT and ROLLBACK then end it alike,
    but psycopg forgets every prepared statement at a ROLLBACK. Ending reads with COMMIT lets the
    connection keep its prepared statements from request to request, so PostgreSQL neither
    parses nor (once it settles on a generic plan) plans them again. The transaction is left to
    the usual ROLLBACK when the request failed; when the session holds changes or queued audit
    events, or a statement other than a SELECT ran outside atomic() (work abandoned outside a
    transaction block, which must never be committed by accident); and on SQLite, whose driver
    keeps its statement cache across rollbacks.
    """
    session = db.session()
    if not session.in_transaction() or session.get_bind().dialect.name != "postgresql":
        return
    wrote = session.connection().info.pop(_WROTE_OUTSIDE_ATOMIC, False)
    if error is not None or wrote or session.new or session.dirty or session.deleted or session.info.get(PENDING_AUDIT_KEY):
        return
    try:
        session.commit()
    except DBAPIError:
        log.warning("ending a read-only transaction failed; it is rolled back", exc_info=True)
        session.rollback()


def register_database_engine_options(app: Flask) -> None:
    """Apply per-backend engine settings once the engine exists (SQLite pragmas, pool pre-ping)."""
    with app.app_context():
        engine = db.engine
        if engine.dialect.name == "sqlite":
            configure_sqlite(engine, app.config["SQLITE_BUSY_TIMEOUT_MS"])
        elif not event.contains(engine, "before_cursor_execute", _note_write_outside_atomic):
            # The mark belongs to one transaction: every transaction starts without it.
            event.listen(engine, "begin", _forget_writes_of_the_last_transaction)
            event.listen(engine, "before_cursor_execute", _note_write_outside_atomic)
