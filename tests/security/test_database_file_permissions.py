"""The SQLite database file is private to its owner (app/extensions.py: private_database_file;
OWASP ASVS 4.0.3 14.1.3, CWE-732): it holds password hashes, personal details, encrypted MFA
keys and the audit log, and SQLite would create it readable by every local user."""

from __future__ import annotations

import os
import stat

import pytest
from sqlalchemy import text

from app.extensions import db, private_database_file
from tests.conftest import build_app


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def loose_umask():
    """A umask that would let SQLite create world-readable files (the common 022)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_new_database_and_its_wal_files_are_owner_only(tmp_path, loose_umask):
    """Does the app create its SQLite database, and SQLite its -wal and -shm files, with mode 0600?"""
    database = tmp_path / "bank.db"
    app = build_app(database)
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (id INTEGER PRIMARY KEY)"))
            connection.execute(text("INSERT INTO probe (id) VALUES (1)"))
        modes = {suffix: _mode(f"{database}{suffix}") for suffix in ("", "-wal", "-shm")}
        db.engine.dispose()
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600}


def test_an_existing_database_left_readable_is_tightened(tmp_path, loose_umask):
    """Is a database file (and its -wal) that an earlier run left world-readable made owner-only,
    its content kept?"""
    database = tmp_path / "bank.db"
    database.write_bytes(b"")
    (tmp_path / "bank.db-wal").write_bytes(b"")
    os.chmod(database, 0o644)
    os.chmod(tmp_path / "bank.db-wal", 0o664)

    private_database_file(str(database))

    assert _mode(database) == 0o600 and _mode(tmp_path / "bank.db-wal") == 0o600


@pytest.mark.parametrize("path", [None, "", ":memory:", "file:bank?mode=memory", "/no/such/folder/bank.db"])
def test_memory_uris_and_missing_folders_are_left_to_sqlite(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    private_database_file(path)
    assert list(tmp_path.iterdir()) == []
