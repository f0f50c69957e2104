"""SQLite's own ceiling for the SQL of one transfer (the counterpart of pgbench_transfer.sql).

    python -m bench.sqlite_ceiling DB_FILE CLIENTS SECONDS ACCOUNTS

CLIENTS processes, each with the app's connection settings (WAL, synchronous=FULL, foreign
keys, busy timeout; app/extensions.configure_sqlite), run the transfer's statements in
`BEGIN IMMEDIATE ... COMMIT` for SECONDS; prints the committed transfers per second. Run on a
scratch copy of the small database, whose audit chain is not valid afterwards.
"""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import sys
import time

DETAILS = ('{"acting_role":"customer","amount":"1.00","kind":"external","reference":"%s","source_account":'
           '"100000000000","source_account_id":1,"source_owner_id":3,"target_account":"100000000001",'
           '"target_account_number":"100000000001","target_owner_id":4}')


def worker(path: str, seconds: float, accounts: int, start, counts, index: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=15)
    for pragma in ("busy_timeout = 15000", "journal_mode = WAL", "synchronous = FULL", "foreign_keys = ON"):
        connection.execute(f"PRAGMA {pragma}")
    rng = random.Random()  # seeded from the OS: references must not repeat across runs
    start.wait()
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        src, dst, amount, key = rng.randint(1, accounts), rng.randint(1, accounts), rng.randint(1, 200), rng.getrandbits(48)
        now = time.strftime("%Y-%m-%d %H:%M:%S.000000", time.gmtime())
        connection.execute("BEGIN IMMEDIATE")
        connection.execute('SELECT id, reference FROM "transaction" WHERE initiated_by_user_id = 3 AND idempotency_key = ?',
                           (f"sq.{key}",)).fetchall()
        connection.execute("SELECT * FROM account WHERE id = ?", (src,)).fetchall()
        connection.execute("SELECT * FROM account WHERE id = ?", (dst,)).fetchall()
        for account_id in sorted((src, dst)):
            if account_id == src:
                connection.execute("UPDATE account SET balance = balance - ? WHERE id = ? AND status = 'active' "
                                   "AND balance >= ?", (amount, src, amount))
            else:
                connection.execute("UPDATE account SET balance = balance + ? WHERE id = ? AND status = 'active'",
                                   (amount, dst))
        connection.execute(
            'INSERT INTO "transaction" (account_id, sender_account_id, receiver_account_id, amount, type, description, '
            "reference, idempotency_key, timestamp, initiated_by_user_id) VALUES (?, ?, ?, ?, 'debit', 'ceiling', ?, ?, ?, 3),"
            " (?, ?, ?, ?, 'credit', 'ceiling', ?, NULL, ?, 3) RETURNING id",
            (src, src, dst, amount, f"SQ-{key}", f"sq.{key}", now, dst, src, dst, amount, f"SQ-{key}", now)).fetchall()
        last_id, last_hash = connection.execute("SELECT last_id, last_hash FROM audit_chain_head WHERE id = 1").fetchone()
        digest = f"{key:064x}"[-64:]
        connection.execute("INSERT INTO audit_log (id, user_id, action, details, ip_address, timestamp, hash) "
                           "VALUES (?, 3, 'TRANSFER_CREATED', ?, '127.0.0.1', ?, ?)",
                           (last_id + 1, DETAILS % f"SQ-{key}", now, digest))
        connection.execute("UPDATE audit_chain_head SET last_id = ?, last_hash = ? WHERE id = 1", (last_id + 1, digest))
        connection.execute("COMMIT")
        done += 1
    counts[index] = done


def main(argv: list[str]) -> int:
    path, clients, seconds, accounts = argv[0], int(argv[1]), float(argv[2]), int(argv[3])
    start = multiprocessing.Barrier(clients + 1)
    counts = multiprocessing.Array("l", clients)
    processes = [multiprocessing.Process(target=worker, args=(path, seconds, accounts, start, counts, i))
                 for i in range(clients)]
    for process in processes:
        process.start()
    start.wait()
    began = time.monotonic()
    for process in processes:
        process.join()
    elapsed = time.monotonic() - began
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed:
        print(f"{len(failed)} of {clients} clients failed (exit codes {failed})", file=sys.stderr)
        return 1
    print(f"{sum(counts) / elapsed:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
