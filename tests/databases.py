"""The two database backends the test suite runs on, and the few checks that differ between them.

SQLite (default): the committed migrations build a template file once per run; each test gets a
copy of it. PostgreSQL (`--backend=postgresql`, server from TEST_DATABASE_URL): the migrations
build a template database once per run, each test gets its own database cloned from it with
`CREATE DATABASE ... TEMPLATE` (tens of milliseconds), dropped `WITH (FORCE)` when the test ends.
Either way nothing ever runs DELETE or TRUNCATE on the append-only audit table (DESIGN.md §4).

PostgreSQL database names carry the pid and a random tag of this run (`bank_test_<pid>_<tag>_…`),
so two runs against one server never collide; every database a run creates is dropped when the
test (or the run) ends, failed or not. Only a run killed outright (SIGKILL) leaves its databases
behind: `psql -c '\\l bank_test_*'` lists them.
"""

from __future__ import annotations

import itertools
import os
import queue
import secrets
import shutil
import threading
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

    A helper thread (its own connection) keeps READY_AHEAD clones made in advance and drops the
    used ones, so the server does that work while the tests run instead of between them. The
    clones run with `synchronous_commit = off`: commits don't wait for the WAL flush (only crash
    durability differs, which no test can observe; visibility and locking are unchanged).
    """

    name = POSTGRESQL
    READY_AHEAD = 2
    WAIT_SECONDS = 120
    _CLONE, _DROP, _STOP = 1, 2, 0  # job priorities: stop first, then clones, then drops

    def __init__(self, server_url: str, migrate: Callable[[str], None]) -> None:
        self.server_url = make_url(normalized_url(server_url))
        self._migrate = migrate
        self.prefix = f"bank_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._counter = itertools.count(1)
        self._template: str | None = None
        self._created: set[str] = set()
        self._lock = threading.Lock()
        self._admin: psycopg.Connection | None = None
        self._jobs: queue.PriorityQueue = queue.PriorityQueue()
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._worker: threading.Thread | None = None

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

    def _remember(self, name: str, created: bool) -> None:
        with self._lock:
            (self._created.add if created else self._created.discard)(name)

    @staticmethod
    def _create(connection: psycopg.Connection, name: str, template: str) -> None:
        connection.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        connection.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))

    @staticmethod
    def _drop(connection: psycopg.Connection, name: str) -> None:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    # -- databases -------------------------------------------------------------------------------

    def template(self) -> str:
        """The migrated template database, built on first use; connections to it are then
        refused, so nothing can keep it busy (cloning needs it idle). Starts the helper thread."""
        if self._template is None:
            name = f"{self.prefix}_template"
            self._remember(name, True)
            self._admin_connection().execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self._migrate(self.url_of(name))
            self._admin_connection().execute(
                sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
            self._template = name
            self._worker = threading.Thread(target=self._work, name="test-database-clones", daemon=True)
            self._worker.start()
            for _ in range(self.READY_AHEAD):
                self._jobs.put((self._CLONE, next(self._counter), None))
        return self._template

    def create(self, migrated: bool = True) -> str:
        """A new database cloned from the migrated template (or from template0: empty). Returns its URL."""
        if not migrated:
            name = f"{self.prefix}_{next(self._counter)}"
            self._remember(name, True)
            self._create(self._admin_connection(), name, "template0")
            return self.url_of(name)
        self.template()
        self._jobs.put((self._CLONE, next(self._counter), None))  # replace the one taken now
        try:
            made = self._ready.get(timeout=self.WAIT_SECONDS)
        except queue.Empty:
            raise RuntimeError(f"no test database cloned within {self.WAIT_SECONDS} s") from None
        if isinstance(made, BaseException):
            raise RuntimeError(f"cloning the test database failed: {made}") from made
        return self.url_of(made)

    def drop(self, url: str) -> None:
        """Drop the database of `url` (soon, by the helper thread), ending any connection to it."""
        self._jobs.put((self._DROP, next(self._counter), make_url(url).database))

    def _work(self) -> None:
        """The helper thread: clone ahead and drop, on its own connection, until told to stop."""
        connection: psycopg.Connection | None = None
        while True:
            kind, _, name = self._jobs.get()
            if kind == self._STOP:
                break
            try:
                if connection is None or connection.closed or connection.broken:
                    connection = self._connect()
                if kind == self._CLONE:
                    name = f"{self.prefix}_{next(self._counter)}"
                    self._remember(name, True)
                    self._create(connection, name, self._template)
                    self._ready.put(name)
                else:
                    self._drop(connection, name)
                    self._remember(name, False)
            except Exception as exc:  # noqa: BLE001 - handed to the waiting test; drops are retried at close
                if kind == self._CLONE:
                    self._ready.put(exc)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Stop the helper thread and drop every database this run created (the template last);
        safe to call twice."""
        if self._worker is not None:
            self._jobs.put((self._STOP, 0, None))
            self._worker.join(timeout=self.WAIT_SECONDS)
            self._worker = None
        try:
            with self._lock:
                leftovers = sorted(self._created, key=lambda name: name == self._template)
            for name in leftovers:
                self._drop(self._admin_connection(), name)
                self._remember(name, False)
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None


# -------------------------------------------------------------------------------------------------
# Checks that are written differently on each backend
# -------------------------------------------------------------------------------------------------


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def audit_triggers(session: Session) -> dict[str, str]:
    """The user-defined triggers on audit_log: name → definition (SQL)."""
    if dialect_of(session) == SQLITE:
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'"
    else:
        query = ("SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
                 "WHERE t.tgrelid = 'audit_log'::regclass AND NOT t.tgisinternal")
    return dict(session.execute(text(query)).all())


def drop_audit_triggers(session: Session) -> None:
    """Drop the append-only triggers (what an attacker with DDL rights would do); not committed."""
    if dialect_of(session) == SQLITE:
        for name in AUDIT_TRIGGERS[SQLITE]:
            session.execute(text(f"DROP TRIGGER {name}"))
    else:
        for name in AUDIT_TRIGGERS[POSTGRESQL]:
            session.execute(text(f"DROP TRIGGER {name} ON audit_log"))
