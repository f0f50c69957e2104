"""The two database backends the test suite runs on, and the few checks that differ between them.

SQLite (default): the committed migrations build a template file once per run; each test gets a
copy of it. PostgreSQL (`--backend=postgresql`, server from TEST_DATABASE_URL): the migrations
build a template database once per run; each test gets its own database cloned from it with
`CREATE DATABASE ... TEMPLATE` (tens of milliseconds, done ahead in a helper thread), dropped
`WITH (FORCE)` after the test. Either way nothing ever runs DELETE or TRUNCATE on the
append-only audit table (DESIGN.md section 4), and every test starts from the same state (ids
from 1, empty audit chain).

PostgreSQL database names carry the pid and a random tag of this run (`bank_test_<pid>_<tag>_…`),
so two runs against one server never collide; every database a run creates is dropped by the
end of the run, failed or not. Only a run killed outright (SIGKILL) leaves its databases
behind: `psql -l | grep bank_test_` lists them.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

import psycopg
from psycopg import sql
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)

# The append-only triggers that migrations/versions/0001_initial_schema.py creates, per backend.
AUDIT_TRIGGERS = {
    SQLITE: ("audit_log_no_update", "audit_log_no_delete"),
    POSTGRESQL: ("audit_log_no_update_delete", "audit_log_no_truncate"),
}
# The ledger's, from migrations/versions/0004_ledger_append_only.py.
LEDGER_TRIGGERS = {
    SQLITE: ("transaction_no_update", "transaction_no_delete"),
    POSTGRESQL: ("transaction_no_update_delete", "transaction_no_truncate"),
}


def normalized_url(url: str) -> str:
    """`url` with the psycopg 3 driver named (as app/config.py does for DATABASE_URL)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class SqliteBackend:
    """Databases are files under `root`: a migrated template, copied for each test."""

    name = SQLITE

    def __init__(self, root: Path, migrate: Callable[[str], None]) -> None:
        self.root = root
        self._migrate = migrate
        self._counter = itertools.count(1)
        self._template: Path | None = None

    def describe(self) -> str:
        return "sqlite (a copy of a migrated template file per test)"

    def template(self) -> Path:
        """The migrated template file, built on first use by `flask db upgrade`'s code path."""
        if self._template is None:
            path = self.root / "template.db"
            self._migrate(f"sqlite:///{path}")
            self._template = path
        return self._template

    def create(self, migrated: bool = True) -> str:
        """A new database: a copy of the migrated template, or an empty file. Returns its URL."""
        path = self.root / f"bank-{next(self._counter)}.db"
        if migrated:
            shutil.copyfile(self.template(), path)
        return f"sqlite:///{path}"

    def drop(self, url: str) -> None:
        """Remove the file and its WAL side files (pytest's tmp_path retention would keep them)."""
        path = Path(make_url(url).database or "")
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing to clean up beyond pytest's temporary directories."""


class PostgresBackend:
    """Databases on the server of `server_url`: a migrated template, cloned for each test.

    Two helper threads do the server-side work while the tests run instead of between them:
    one keeps READY_AHEAD clones made in advance; the other drops used databases in batches of
    DROP_BATCH, at least DROP_DELAY seconds after their test ended (by then the test's
    connections have really gone, so `DROP ... WITH (FORCE)` doesn't stop to wait for them).
    Each DROP DATABASE asks for a checkpoint and waits for it; a batch is dropped from
    DROP_BATCH connections at once, so its requests share one checkpoint (measured: 16 drops in
    0.1 s instead of 1.5 s one after the other). A fresh database takes about 8 MB on disk, so
    only a few hundred MB are in use at any time. The clones run with `synchronous_commit = off`:
    commits don't wait for the WAL flush, which changes only what a server crash could lose —
    nothing a test can observe (visibility and locking are unchanged).
    """

    name = POSTGRESQL
    READY_AHEAD = 2
    DROP_DELAY = 0.5
    DROP_BATCH = 16
    WAIT_SECONDS = 120
    _STOP = object()

    def __init__(self, server_url: str, migrate: Callable[[str], None]) -> None:
        self.server_url = make_url(normalized_url(server_url))
        self._migrate = migrate
        self.prefix = f"bank_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._counter = itertools.count(1)
        self._template: str | None = None
        self._created: set[str] = set()
        self._lock = threading.Lock()
        self._admin: psycopg.Connection | None = None
        self._clone_requests: queue.Queue = queue.Queue()
        self._ready: queue.Queue = queue.Queue()
        self._drops: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()

    def describe(self) -> str:
        where = self.server_url.render_as_string(hide_password=True)
        return f"postgresql at {where} (a database cloned from {self.prefix}_template per test)"

    # -- connections to the maintenance database (the one named in TEST_DATABASE_URL) ------------

    def _connect(self) -> psycopg.Connection:
        conninfo = self.server_url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True, connect_timeout=5)

    def _admin_connection(self) -> psycopg.Connection:
        if self._admin is None or self._admin.closed or self._admin.broken:
            self._admin = self._connect()
        return self._admin

    def check(self) -> str:
        """Connect once; returns the server version. Raises psycopg.Error when unreachable."""
        return str(self._admin_connection().execute("SHOW server_version").fetchone()[0])

    def url_of(self, name: str) -> str:
        return self.server_url.set(database=name).render_as_string(hide_password=False)

    # -- creating and dropping (a name is remembered first, so close() can always clean up) -----

    def _create(self, connection: psycopg.Connection, template: str) -> str:
        name = f"{self.prefix}_{next(self._counter)}"
        with self._lock:
            self._created.add(name)
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                           sql.Identifier(template)))
        connection.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
        return name

    def _drop(self, connection: psycopg.Connection, name: str) -> None:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        with self._lock:
            self._created.discard(name)

    # -- databases -------------------------------------------------------------------------------

    def template(self) -> str:
        """The migrated template database, built on first use; connections to it are then
        refused, so nothing can keep it busy (cloning needs it idle). Starts the helper threads."""
        if self._template is None:
            name = f"{self.prefix}_template"
            with self._lock:
                self._created.add(name)
            self._admin_connection().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self._migrate(self.url_of(name))
            self._admin_connection().execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            self._template = name
            for loop, label in ((self._clone_ahead, "clones"), (self._drop_behind, "drops")):
                thread = threading.Thread(target=loop, name=f"test-database-{label}", daemon=True)
                thread.start()
                self._threads.append(thread)
            for _ in range(self.READY_AHEAD):
                self._clone_requests.put(None)
        return self._template

    def create(self, migrated: bool = True) -> str:
        """A new database cloned from the migrated template (or from template0: empty). Returns its URL."""
        if not migrated:
            return self.url_of(self._create(self._admin_connection(), "template0"))
        self.template()
        self._clone_requests.put(None)  # replaces the clone taken now
        try:
            made = self._ready.get(timeout=self.WAIT_SECONDS)
        except queue.Empty:
            raise RuntimeError(f"no test database was cloned within {self.WAIT_SECONDS} s") from None
        if isinstance(made, BaseException):
            raise RuntimeError(f"cloning the test database failed: {made}") from made
        return self.url_of(made)

    def drop(self, url: str) -> None:
        """Drop the database of `url` (soon, in the background), ending any connection to it."""
        self._drops.put((time.monotonic() + self.DROP_DELAY, make_url(url).database))

    # -- the helper threads ----------------------------------------------------------------------

    def _clone_ahead(self) -> None:
        connection: psycopg.Connection | None = None
        try:
            while self._clone_requests.get() is not self._STOP and not self._closing.is_set():
                try:
                    if connection is None or connection.closed or connection.broken:
                        connection = self._connect()
                    self._ready.put(self._create(connection, self._template))
                except Exception as exc:  # noqa: BLE001 - handed to the test waiting for a database
                    self._ready.put(exc)
        finally:
            if connection is not None:
                connection.close()

    def _drop_behind(self) -> None:
        connections: list[psycopg.Connection] = []
        batch: list[tuple[float, str]] = []
        try:
            while (job := self._drops.get()) is not self._STOP:
                batch.append(job)
                if len(batch) == self.DROP_BATCH:
                    time.sleep(max(0.0, batch[-1][0] - time.monotonic()))
                    self._drop_together([name for _, name in batch], connections)
                    batch.clear()
        finally:
            for connection in connections:
                connection.close()

    def _drop_together(self, names: list[str], connections: list[psycopg.Connection]) -> None:
        """Drop `names` at the same time, each from its own connection (taken from, and added
        to, `connections`). A database that could not be dropped stays remembered."""
        for index in range(len(names)):
            if index == len(connections):
                connections.append(self._connect())
            elif connections[index].closed or connections[index].broken:
                connections[index] = self._connect()

        def drop(connection: psycopg.Connection, name: str) -> None:
            try:
                self._drop(connection, name)
            except Exception:  # noqa: BLE001 - still remembered: close() tries again, then reports it
                pass

        threads = [threading.Thread(target=drop, args=pair) for pair in zip(connections, names)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        """Stop the helper threads and drop every database this run created, the template last
        (whatever the helper threads did not get to); safe to call twice. Raises RuntimeError
        naming any database that could not be dropped."""
        self._closing.set()
        self._clone_requests.put(self._STOP)
        self._drops.put(self._STOP)
        for thread in self._threads:
            thread.join(timeout=self.WAIT_SECONDS)
        self._threads.clear()
        connections: list[psycopg.Connection] = []
        try:
            with self._lock:
                leftovers = sorted(self._created - {self._template})
            if leftovers:
                time.sleep(self.DROP_DELAY)
            for start in range(0, len(leftovers), self.DROP_BATCH):
                self._drop_together(leftovers[start:start + self.DROP_BATCH], connections)
            if self._template is not None:
                self._drop_together([self._template], connections)
        finally:
            for connection in connections:
                connection.close()
            if self._admin is not None:
                self._admin.close()
                self._admin = None
        with self._lock:
            left = sorted(self._created)
        if left:
            raise RuntimeError(f"test databases left on the server (drop them by hand): {', '.join(left)}")


# -------------------------------------------------------------------------------------------------
# Checks that are written differently on each backend
# -------------------------------------------------------------------------------------------------


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def audit_triggers(session: Session) -> dict[str, str]:
    """The user-defined triggers on audit_log: name → definition (SQL)."""
    return table_triggers(session, "audit_log")


def table_triggers(session: Session, table: str) -> dict[str, str]:
    """The user-defined triggers on `table` (a name from the schema): name → definition (SQL)."""
    if dialect_of(session) == SQLITE:
        query = text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table")
    else:
        query = text("SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                     "WHERE t.tgrelid = CAST(:table AS regclass) AND NOT t.tgisinternal")
        table = f'"{table}"'
    return dict(session.execute(query, {"table": table}).all())


def drop_audit_triggers(session: Session) -> None:
    """Drop the append-only triggers (what an attacker with DDL rights would do); not committed."""
    _drop_triggers(session, "audit_log", AUDIT_TRIGGERS)


def drop_ledger_triggers(session: Session) -> None:
    """Drop the ledger's append-only triggers (what an attacker with DDL rights would do); not
    committed."""
    _drop_triggers(session, "transaction", LEDGER_TRIGGERS)


def _drop_triggers(session: Session, table: str, triggers: dict[str, tuple[str, ...]]) -> None:
    """Drop the triggers `triggers` names for the session's backend from `table`."""
    backend = dialect_of(session)
    for name in triggers[backend]:
        session.execute(text(f"DROP TRIGGER {name}" if backend == SQLITE else f'DROP TRIGGER {name} ON "{table}"'))
