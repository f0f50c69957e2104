"""Seed a migrated, empty bank database with data at scale, in bulk, consistent with the rules.

    python -m bench.seed --database-url URL [--customers 10000 --accounts 20000 --transfers 500000]

What it writes (DESIGN.md sections 2-4), with a progress bar:

* users: an auditor, an admin, the customer `bench-heavy@example.com` (5 accounts and
  `--heavy-rows` ledger rows, default 5,000), `--hot-accounts` customers `bench-hot-<k>` with one
  account each (the "hot" transfer targets), and `bench-customer-<n>` for the rest; customers
  1..100 (at most half of them) are the benchmark's clients and are never the source of a seeded transfer, so their
  balances only grow. One password for all (BENCH_PASSWORD), hashed once with the app's
  Argon2id profile: hashing 10,000 passwords at 64 MiB each would take most of an hour, and a
  login verifies one hash whatever its salt.
* accounts with an opening deposit each (a credit with no sender), then transfers spread over
  the last `--days` days: a debit and a credit sharing a reference, amounts never above the
  source's balance at that moment, so every balance equals its credits minus its debits and
  the sum of balances equals the deposits.
* the audit rows the design requires for all of it (REGISTER_SUCCESS, ACCOUNT_CREATED,
  TRANSFER_CREATED), chained with the audit service's own `canonical_row` and `chain_hash`,
  and the chain head; `flask verify-ledger` and `flask verify-audit` pass afterwards.

PostgreSQL is loaded with COPY (psycopg), SQLite with executemany in one transaction; then
the sequences are moved past the ids written, and the planner's statistics are refreshed
(VACUUM ANALYZE / ANALYZE). The database must be freshly migrated (no users yet).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

BENCH_PASSWORD = "bench staple horse battery 2026"
HEAVY_EMAIL = "bench-heavy@example.com"
AUDITOR_EMAIL = "bench-auditor@example.com"
ADMIN_EMAIL = "bench-admin@example.com"
CLIENT_CUSTOMERS = 100
IP = "127.0.0.1"
MAX_SEEDED_AMOUNT_CENTS = 100_000  # 1,000.00: below the suspicious-transfer threshold


def hot_email(k: int) -> str:
    return f"bench-hot-{k}@example.com"


def customer_email(n: int) -> str:
    return f"bench-customer-{n}@example.com"


@dataclass(frozen=True)
class SeedSpec:
    """How much to write. `transfers` transfers give 2 x `transfers` ledger rows, plus one
    opening deposit per account."""

    customers: int = 10_000
    accounts: int = 20_000
    transfers: int = 500_000
    heavy_rows: int = 5_000
    hot_accounts: int = 5
    days: int = 365
    seed: int = 20261129

    def check(self) -> None:
        regular = self.customers - 1 - self.hot_accounts
        if regular < 1:
            raise ValueError("too few customers")
        left = self.accounts - 5 - self.hot_accounts
        if left < regular or left > 5 * regular:
            raise ValueError("each regular customer needs 1 to 5 accounts")
        heavy_transfers = (self.heavy_rows - 5 + 1) // 2
        if heavy_transfers > self.transfers:
            raise ValueError("--heavy-rows needs more transfers")


@dataclass
class Plan:
    """Everything generated, in memory (compact arrays), before it is written."""

    spec: SeedSpec
    users: list[tuple] = field(default_factory=list)      # (id, name, email, role)
    accounts: list[tuple] = field(default_factory=list)   # (id, number, owner_id, type, deposit_cents)
    balances: array = field(default_factory=lambda: array("q"))
    t_src: array = field(default_factory=lambda: array("l"))
    t_dst: array = field(default_factory=lambda: array("l"))
    t_amount: array = field(default_factory=lambda: array("q"))
    t_time: array = field(default_factory=lambda: array("q"))   # microseconds since the epoch
    t_internal: bytearray = field(default_factory=bytearray)
    start_us: int = 0
    client_account_ids: list[int] = field(default_factory=list)

    @property
    def ledger_rows(self) -> int:
        return len(self.accounts) + 2 * len(self.t_src)

    @property
    def audit_rows(self) -> int:
        return len(self.users) + len(self.accounts) + len(self.t_src)


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _dt(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def plan(spec: SeedSpec, now: datetime | None = None) -> Plan:
    """Draw users, accounts and transfers (deterministic for `spec.seed`)."""
    spec.check()
    rng = random.Random(spec.seed)
    now = now or datetime.now(timezone.utc)
    result = Plan(spec)
    result.start_us = _us(now - timedelta(days=spec.days + 1))
    users = result.users
    users.append((1, "Bench Auditor", AUDITOR_EMAIL, "auditor"))
    users.append((2, "Bench Admin", ADMIN_EMAIL, "admin"))
    users.append((3, "Heavy Customer", HEAVY_EMAIL, "customer"))
    for k in range(1, spec.hot_accounts + 1):
        users.append((3 + k, f"Hot Customer {k}", hot_email(k), "customer"))
    regular = spec.customers - 1 - spec.hot_accounts
    first_regular = 4 + spec.hot_accounts
    for n in range(1, regular + 1):
        users.append((first_regular + n - 1, f"Customer {n}", customer_email(n), "customer"))

    numbers = rng.sample(range(10 ** 11, 10 ** 12), spec.accounts)
    accounts = result.accounts
    heavy_ids, hot_ids, source_pool, target_pool = [], [], [], []

    def add_account(owner: int, deposit: int) -> int:
        account_id = len(accounts) + 1
        accounts.append((account_id, str(numbers[account_id - 1]), owner, rng.choice(("checking", "savings")), deposit))
        result.balances.append(deposit)
        return account_id

    for _ in range(5):
        heavy_ids.append(add_account(3, 1_000_000))
    for k in range(1, spec.hot_accounts + 1):
        hot_ids.append(add_account(3 + k, 1_000_000))
    left = spec.accounts - 5 - spec.hot_accounts
    base, extra = divmod(left, regular)
    clients = min(CLIENT_CUSTOMERS, regular // 2)
    for n in range(1, regular + 1):
        owner = first_regular + n - 1
        for _ in range(base + (1 if n <= extra else 0)):
            client = n <= clients
            account_id = add_account(owner, 1_000_000 if client else rng.randint(100_000, 1_000_000))
            (result.client_account_ids if client else source_pool).append(account_id)
            target_pool.append(account_id)
    target_pool += hot_ids

    heavy_internal = (spec.heavy_rows - 5) // 2
    heavy_external = (spec.heavy_rows - 5) % 2
    kinds = bytearray(spec.transfers)  # 0 random, 1 heavy internal, 2 heavy external
    kinds[:heavy_internal] = b"\x01" * heavy_internal
    kinds[heavy_internal:heavy_internal + heavy_external] = b"\x02" * heavy_external
    rng.shuffle(kinds)
    step = (spec.days * 86_400 * 1_000_000) // max(spec.transfers, 1)
    moment = result.start_us + 86_400 * 1_000_000
    balances = result.balances
    randint, choice = rng.randint, rng.choice
    for kind in kinds:
        moment += rng.randint(1, 2 * step - 1) if step > 1 else 1
        if kind == 1:
            src = max(heavy_ids, key=lambda i: balances[i - 1])
            dst = choice([i for i in heavy_ids if i != src])
            amount = randint(100, 5_000)
        elif kind == 2:
            src = heavy_ids[0]
            dst = choice(target_pool)
            amount = randint(100, 5_000)
        else:
            for _ in range(50):
                src = choice(source_pool)
                if balances[src - 1] >= 100:
                    break
            else:
                src = max(source_pool, key=lambda i: balances[i - 1])
            dst = choice(target_pool)
            while dst == src:
                dst = choice(target_pool)
            amount = randint(100, min(balances[src - 1], MAX_SEEDED_AMOUNT_CENTS))
        balances[src - 1] -= amount
        balances[dst - 1] += amount
        result.t_src.append(src)
        result.t_dst.append(dst)
        result.t_amount.append(amount)
        result.t_time.append(moment)
        result.t_internal.append(1 if kind == 1 else 0)
    return result


# ---------------------------------------------------------------------------------------------
# Rows, in insertion order (ids from 1), as plain tuples
# ---------------------------------------------------------------------------------------------


def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _details(values: dict) -> str:
    # Exactly as app/audit/services.queue_event encodes details.
    return json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def user_rows(p: Plan, password_hash: str, token) -> Iterator[tuple]:
    """(id, full_name, email, phone, password_hash, role, is_active, must_change_password,
    session_token, created_at_us)"""
    for index, (user_id, name, email, role) in enumerate(p.users):
        yield (user_id, name, email, "+1 555 0100", password_hash, role, True, False, token(),
               p.start_us + index * 1_000_000)


def account_created_us(p: Plan, account_id: int) -> int:
    return p.start_us + (len(p.users) + account_id) * 1_000_000


def account_rows(p: Plan) -> Iterator[tuple]:
    """(id, account_number, owner_id, type, balance_cents, status, created_at_us)"""
    for (account_id, number, owner, kind, _deposit), balance in zip(p.accounts, p.balances):
        yield (account_id, number, owner, kind, balance, "active", account_created_us(p, account_id))


def ledger_rows(p: Plan) -> Iterator[tuple]:
    """(id, account_id, sender_id, receiver_id, amount_cents, type, description, reference,
    idempotency_key, timestamp_us, initiated_by_user_id)"""
    owner = {a[0]: a[2] for a in p.accounts}
    for account_id, _number, owner_id, _kind, deposit in p.accounts:
        yield (account_id, account_id, None, account_id, deposit, "credit", "Opening deposit",
               f"DP-{account_id:016X}", None, account_created_us(p, account_id), owner_id)
    next_id = len(p.accounts) + 1
    for i in range(len(p.t_src)):
        src, dst, amount, moment = p.t_src[i], p.t_dst[i], p.t_amount[i], p.t_time[i]
        reference = f"TX-{i + 1:016X}"
        initiator = owner[src]
        yield (next_id, src, src, dst, amount, "debit", "Bench transfer", reference, f"seed.{i + 1:020d}",
               moment, initiator)
        yield (next_id + 1, dst, src, dst, amount, "credit", "Bench transfer", reference, None, moment, initiator)
        next_id += 2


def audit_events(p: Plan) -> Iterator[tuple]:
    """(user_id, action, details_json, timestamp_us) in chain order."""
    accounts = {a[0]: a for a in p.accounts}
    for index, (user_id, _name, email, role) in enumerate(p.users):
        yield user_id, "REGISTER_SUCCESS", _details({"email": email, "role": role}), p.start_us + index * 1_000_000
    for account_id, number, owner, kind, deposit in p.accounts:
        yield owner, "ACCOUNT_CREATED", _details({
            "account_id": account_id, "account_number": number, "owner_id": owner, "type": kind,
            "opening_deposit": _money(deposit)}), account_created_us(p, account_id)
    for i in range(len(p.t_src)):
        src, dst = accounts[p.t_src[i]], accounts[p.t_dst[i]]
        internal = p.t_internal[i] == 1
        target = {"target_account_id": dst[0]} if internal else {"target_account_number": dst[1]}
        yield src[2], "TRANSFER_CREATED", _details({
            "kind": "internal" if internal else "external", "amount": _money(p.t_amount[i]),
            "source_account_id": src[0], "source_owner_id": src[2], "acting_role": "customer", **target,
            "source_account": src[1], "target_account": dst[1], "target_owner_id": dst[2],
            "reference": f"TX-{i + 1:016X}"}), p.t_time[i]


def audit_rows(p: Plan, key: bytes) -> Iterator[tuple]:
    """(id, user_id, action, details, ip, timestamp_us, hash), chained like the audit service."""
    from app.audit.services import GENESIS_HASH, canonical_row, chain_hash

    previous = GENESIS_HASH
    for row_id, (user_id, action, details, moment) in enumerate(audit_events(p), start=1):
        digest = chain_hash(key, previous, canonical_row(row_id, user_id, action, details, IP, _dt(moment)))
        yield (row_id, user_id, action, details, IP, moment, digest)
        previous = digest


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _progress(total: int, description: str, enabled: bool):
    if enabled:
        from tqdm import tqdm

        return tqdm(total=total, desc=description, unit="row", unit_scale=True, mininterval=0.5, file=sys.stderr)

    class _Silent:
        def update(self, _n: int) -> None: ...
        def close(self) -> None: ...
        def set_description(self, _d: str) -> None: ...

    return _Silent()


def _pg_value(value) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return str(value)


def _pg_time(us: int) -> str:
    return _dt(us).strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _sqlite_time(us: int) -> str:
    return _dt(us).strftime("%Y-%m-%d %H:%M:%S.%f")


TABLES = {
    "user": ("id", "full_name", "email", "phone", "password_hash", "role", "is_active", "must_change_password",
             "session_token", "created_at"),
    "account": ("id", "account_number", "owner_id", "type", "balance", "status", "created_at"),
    "transaction": ("id", "account_id", "sender_account_id", "receiver_account_id", "amount", "type",
                    "description", "reference", "idempotency_key", "timestamp", "initiated_by_user_id"),
    "audit_log": ("id", "user_id", "action", "details", "ip_address", "timestamp", "hash"),
}
TIME_COLUMN = {"user": 9, "account": 6, "transaction": 9, "audit_log": 5}


def _batches(rows: Iterable[tuple], size: int) -> Iterator[list[tuple]]:
    batch: list[tuple] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_postgresql(connection, p: Plan, streams: dict, bar) -> None:
    """COPY every table (psycopg 3 connection, one transaction), then fix the sequences."""
    with connection.cursor() as cursor:
        for table, rows in streams.items():
            columns = TABLES[table]
            time_at = TIME_COLUMN[table]
            bar.set_description(f"COPY {table}")
            with cursor.copy(f'COPY "{table}" ({", ".join(columns)}) FROM STDIN') as copy:
                for batch in _batches(rows, 5_000):
                    lines = []
                    for row in batch:
                        row = list(row)
                        row[time_at] = _pg_time(row[time_at])
                        lines.append("\t".join(_pg_value(v) for v in row))
                    copy.write("\n".join(lines) + "\n")
                    bar.update(len(batch))
        for table in ("user", "account", "transaction"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), "
                           f"(SELECT max(id) FROM \"{table}\"))")


def write_sqlite(connection, p: Plan, streams: dict, bar) -> None:
    """executemany into every table (sqlite3 connection, one transaction)."""
    cursor = connection.cursor()
    for table, rows in streams.items():
        columns = TABLES[table]
        time_at = TIME_COLUMN[table]
        bar.set_description(f"INSERT {table}")
        statement = f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES ({", ".join("?" * len(columns))})'
        for batch in _batches(rows, 20_000):
            converted = []
            for row in batch:
                row = list(row)
                row[time_at] = _sqlite_time(row[time_at])
                converted.append(row)
            cursor.executemany(statement, converted)
            bar.update(len(batch))


def seed(database_url: str, spec: SeedSpec, *, progress: bool = True, app=None) -> dict:
    """Seed the freshly migrated database of `database_url`; returns counts and timings.

    app: a Flask app on that database (built here when None) whose AUDIT_HMAC_KEY chains the
    audit rows and whose ARGON2_PROFILE hashes BENCH_PASSWORD. Raises RuntimeError when the
    database already holds users.
    """
    from sqlalchemy import func, select, text

    from app.auth.services import hash_password
    from app.extensions import db
    from app.models import User, new_session_token

    if app is None:
        from app import create_app

        app = create_app({"SQLALCHEMY_DATABASE_URI": database_url})
    started = time.perf_counter()
    with app.app_context():
        if db.session.scalar(select(func.count(User.id))):
            raise RuntimeError("the database already holds users: seed a freshly migrated one")
        db.session.rollback()
        password_hash = hash_password(BENCH_PASSWORD)
        key = app.config["AUDIT_HMAC_KEY"].encode("utf-8")
        p = plan(spec)
        planned = time.perf_counter()
        total = len(p.users) + len(p.accounts) + p.ledger_rows + p.audit_rows
        bar = _progress(total, "seeding", progress)
        head: dict = {}

        def chained() -> Iterator[tuple]:
            for row in audit_rows(p, key):
                head["id"], head["hash"] = row[0], row[6]
                yield row

        streams = {
            "user": user_rows(p, password_hash, new_session_token),
            "account": account_rows(p),
            "transaction": ledger_rows(p),
            "audit_log": chained(),
        }
        engine = db.engine
        raw = engine.raw_connection()
        try:
            driver = raw.driver_connection
            if engine.dialect.name == "postgresql":
                with driver.cursor() as cursor:  # the app's 30 s statement timeout is for requests
                    cursor.execute("SET statement_timeout = 0")
                write_postgresql(driver, p, streams, bar)
                with driver.cursor() as cursor:
                    cursor.execute("UPDATE audit_chain_head SET last_id = %s, last_hash = %s WHERE id = 1",
                                   (head["id"], head["hash"]))
                driver.commit()
            else:
                driver.execute("BEGIN IMMEDIATE")
                write_sqlite(driver, p, streams, bar)
                driver.execute("UPDATE audit_chain_head SET last_id = ?, last_hash = ? WHERE id = 1",
                               (head["id"], head["hash"]))
                driver.execute("COMMIT")
        finally:
            raw.close()
        bar.close()
        written = time.perf_counter()
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("SET statement_timeout = 0"))
                connection.execute(text("VACUUM (ANALYZE)"))
        else:
            raw = engine.raw_connection()
            try:  # the driver connection is in autocommit mode (extensions.configure_sqlite)
                raw.driver_connection.execute("ANALYZE")
                raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                raw.close()
        engine.dispose()
    return {
        "users": len(p.users), "customers": spec.customers, "accounts": len(p.accounts),
        "transfers": len(p.t_src), "ledger_rows": p.ledger_rows, "audit_rows": p.audit_rows,
        "heavy_rows": spec.heavy_rows, "seconds_plan": round(planned - started, 1),
        "seconds_write": round(written - planned, 1), "seconds_total": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"), required=False)
    parser.add_argument("--customers", type=int, default=SeedSpec.customers)
    parser.add_argument("--accounts", type=int, default=SeedSpec.accounts)
    parser.add_argument("--transfers", type=int, default=SeedSpec.transfers)
    parser.add_argument("--heavy-rows", type=int, default=SeedSpec.heavy_rows)
    parser.add_argument("--days", type=int, default=SeedSpec.days)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is required")
    spec = SeedSpec(customers=args.customers, accounts=args.accounts, transfers=args.transfers,
                    heavy_rows=args.heavy_rows, days=args.days)
    from app.config import database_engine_options

    config = {"SQLALCHEMY_DATABASE_URI": args.database_url}
    database_engine_options(config)
    report = seed(config["SQLALCHEMY_DATABASE_URI"], spec, progress=not args.no_progress)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
