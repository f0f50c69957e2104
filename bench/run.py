"""`make bench`: the bank measured at scale, against this machine's own ceilings, in one run.

    python -m bench.run [--backends postgresql,sqlite] [--reps 3] [--duration 6] [--quick]

For each backend (PostgreSQL from BENCH_DATABASE_URL, default the local server; SQLite files
under reports/bench/):

1. two databases, migrated then seeded (bench/seed.py): "big" (10,000 customers, 20,000
   accounts, 500,000 transfers = 1,000,000 transfer rows + 20,000 opening deposits) and
   "small" (10,000 ledger rows), both holding the same customer with 5,000 ledger rows;
2. gunicorn with the committed gunicorn.conf.py on each, serving bench.wsgi:app (the bank plus
   the two ceiling routes, bench/app.py), and sessions signed in through the real login form;
3. repetitions of: the ceilings (short text, one primary-key SELECT; pgbench's own throughput
   for the transfer's SQL on PostgreSQL, bench/sqlite_ceiling.py on SQLite), transfers at 1, 4
   and 16 clients (uniform over many accounts, and hot over 5), the pages at 16 clients on both
   databases, the durable audit append alone (the write every audit hop makes), on SQLite the
   uniform transfers once more with commits not synced (a measurement of the sync's cost only:
   bench/app.py), and login at 1 client, all driven by wrk with the scripts in bench/wrk/;
4. verify-ledger and verify-audit on every database, and a check that the ledger grew by
   exactly two rows per accepted transfer POST.

Writes bench/results.md (medians, spreads, ratios to the ceilings, targets met or not) and the
raw samples to reports/bench/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.e2e.multiprocess_support import (  # noqa: E402
    Client, base_env, flask_command, free_port, stop_process_group,
)

from bench.app import UNSYNCED_SETTING  # noqa: E402
from bench.report import UNSYNCED  # noqa: E402
from bench.seed import (  # noqa: E402
    AUDITOR_EMAIL, BENCH_PASSWORD, HEAVY_EMAIL, SeedSpec, customer_email, hot_email,
)

REPORTS = REPO / "reports" / "bench"
RESULTS = REPO / "bench" / "results.md"
WRK = REPO / "bench" / "wrk"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BIG = SeedSpec()
SMALL = SeedSpec(customers=100, accounts=200, transfers=4_900)
QUICK_BIG = SeedSpec(customers=1_000, accounts=2_000, transfers=50_000)
CLIENT_COUNTS = (1, 4, 16)
PAGE_CLIENTS = 16
HOPS = 100
# All five customer filters: the last 180 days, debits, 0.01 to 25.00.
FILTERED_DAYS = 180


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def _libpq(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Databases:
    """Creates the benchmark's databases for one backend and drops/removes them at the end."""

    def __init__(self, backend: str, folder: Path, server_url: str) -> None:
        self.backend, self.folder, self.server_url = backend, folder, server_url
        self.created: list[str] = []

    def url(self, name: str) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.folder / f'{name}.db'}"
        from sqlalchemy.engine import make_url

        return make_url(self.server_url).set(database=f"bench_{name}").render_as_string(hide_password=False)

    def create(self, name: str, template: str | None = None) -> str:
        url = self.url(name)
        if self.backend == "sqlite":
            path = self.folder / f"{name}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            if template:
                shutil.copyfile(self.folder / f"{template}.db", path)
        else:
            import psycopg

            with psycopg.connect(_libpq(self.server_url), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)')
                suffix = f' TEMPLATE "bench_{template}"' if template else ""
                admin.execute(f'CREATE DATABASE "bench_{name}"{suffix}')
        self.created.append(name)
        return url

    def drop_all(self) -> None:
        if self.backend == "sqlite":
            for name in self.created:
                for suffix in ("", "-wal", "-shm", ".writers"):
                    Path(f"{self.folder / name}.db{suffix}").unlink(missing_ok=True)
            return
        if self.backend == "postgresql":
            import psycopg

            with psycopg.connect(_libpq(self.server_url), autocommit=True) as admin:
                for name in self.created:
                    admin.execute(f'DROP DATABASE IF EXISTS "bench_{name}" WITH (FORCE)')

    def scalar(self, url: str, sql: str):
        if self.backend == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
                return connection.execute(sql).fetchone()[0]
        import psycopg

        with psycopg.connect(_libpq(url)) as connection:
            return connection.execute(sql).fetchone()[0]


def migrate_and_seed(url: str, spec: SeedSpec, progress: bool) -> dict:
    migrated = flask_command(base_env(url), "db", "upgrade")
    if migrated.returncode != 0:
        raise RuntimeError(migrated.stdout + migrated.stderr)
    command = [sys.executable, "-m", "bench.seed", "--database-url", url, "--customers", str(spec.customers),
               "--accounts", str(spec.accounts), "--transfers", str(spec.transfers)]
    if not progress:
        command.append("--no-progress")
    done = subprocess.run(command, cwd=REPO, env=base_env(url), stdout=subprocess.PIPE, text=True, check=True,
                          timeout=3600)
    return json.loads(done.stdout.strip().splitlines()[-1])


def verify(url: str) -> dict[str, str]:
    env = base_env(url)
    env.pop("DATABASE_POOL_SIZE", None)
    out = {}
    for command in ("verify-ledger", "verify-audit"):
        result = subprocess.run([sys.executable, "-m", "flask", "--app", "run.py", command], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=1800, check=False)
        first = (result.stdout or result.stderr).strip().splitlines()
        out[command] = ("OK: " if result.returncode == 0 else "FAILED: ") + (first[0] if first else "")
    return out


# ---------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    port: int
    process: subprocess.Popen
    stderr_path: Path
    workers: int

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def worker_pids(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True)
        return [int(pid) for pid in found.stdout.split()]

    def stop(self) -> None:
        stop_process_group(self.process, grace_seconds=20)


def worker_connections(workers: int, threads: int) -> int:
    """gunicorn's `worker_connections` for the benchmark: each worker holds at most its share
    of the PAGE_CLIENTS connections (rounded up), so wrk's keep-alive connections, each served
    to the end by the worker that accepted it, split evenly instead of by which worker woke
    first (a 14/2 split made one client's p50 seven times another's). At least threads + 1:
    a gthread worker closes a connection after its answer once `worker_connections - threads`
    others are idle, and none may be left to keep alive."""
    return max(math.ceil(PAGE_CLIENTS / workers), threads + 1)


def gunicorn_env(url: str, port: int, workers: int, threads: int, **settings: str) -> dict[str, str]:
    """The environment of the benchmark's gunicorn: the app on `url`, bound to 127.0.0.1:`port`,
    `workers` x `threads` through gunicorn.conf.py's own variables, each worker holding at most
    worker_connections(workers, threads) connections; `settings` added as they are."""
    return base_env(url, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(workers), WEB_THREADS=str(threads),
                    WEB_WORKER_CONNECTIONS=str(worker_connections(workers, threads)), **settings)


@contextmanager
def gunicorn(name: str, url: str, folder: Path, workers: int, threads: int, **settings: str):
    """bench.wsgi:app under `gunicorn -c gunicorn.conf.py`, `workers` x `threads` through the
    config's own variables (WEB_CONCURRENCY, WEB_THREADS; the pool follows the threads), on a
    free port, with `settings` in its environment (the unsynced diagnostic server:
    bench/app.py); yields once every worker answers."""
    port = free_port()
    env = gunicorn_env(url, port, workers, threads, **settings)
    out_path, err_path = folder / f"{name}.access.log", folder / f"{name}.error.log"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "bench.wsgi:app"],
                                   cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
    server = Server(name, url, port, process, err_path, workers)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{err_path.read_text()}")
            booted = err_path.read_text(errors="replace").count("Booting worker with pid")
            if booted >= workers and _answers(server):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{err_path.read_text()}")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def _answers(server: Server) -> bool:
    try:
        return Client(server).get("/bench/text").status == 200
    except OSError:
        return False


def sign_in(server: Server, email: str) -> str:
    """A session cookie signed in as `email` through the login form (CSRF token included).
    Counts as load on the server (LOAD_EVENTS): an Argon2id verification is 100 ms of CPU."""
    LOAD_EVENTS["count"] += 1
    client = Client(server)
    answer = client.login(email, BENCH_PASSWORD)
    if answer.status != 302 or not client.cookie:
        raise RuntimeError(f"sign-in of {email} failed: {answer.status} {answer.body[:300]}")
    return client.cookie


# ---------------------------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One wrk run: per label, the latencies (ms) and how many answers were not the expected one."""

    duration: float
    latencies: dict[str, list[float]]
    statuses: dict[str, dict[str, int]]
    bad: dict[str, int]
    socket_errors: int
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU during the run: app, db
    # Per label, each client's own p50 (ms): one wrk thread, one connection, one client.
    client_p50s: dict[str, list[float]] = field(default_factory=dict)

    def client_spread(self, label: str) -> float:
        """The slowest client's p50 over the fastest one's: how unevenly the clients were
        served. With keep-alive, each connection stays on the gunicorn worker that accepted it:
        a 10/6 split of 16 clients between two workers shows here as about 1.8, a 14/2 split
        (seen) as about 7, and every p50 at 16 clients moves with it; CPU per request does not."""
        p50s = [p for p in self.client_p50s.get(label, []) if p > 0]
        return max(p50s) / min(p50s) if len(p50s) > 1 else float("nan")

    def rate(self, label: str) -> float:
        return len(self.latencies.get(label, [])) / self.duration

    def pct(self, label: str, q: float) -> float:
        values = sorted(self.latencies.get(label, []))
        if not values:
            return float("nan")
        index = min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))
        return values[index]

    def errors(self) -> int:
        return sum(self.bad.values()) + self.socket_errors


# Transfer POSTs answered with the redirect to the dashboard, and how many POSTs could have been
# in flight when a run stopped (committed by the server, never answered to wrk): one per client.
TRANSFER_TALLY = {"accepted": 0, "in_flight": 0}
# Answers at PAGE_CLIENTS clients and how many of them closed their keep-alive connection: each
# client's connection should stay on one worker for the whole run (worker_connections).
KEEPALIVE_TALLY = {"answers": 0, "closed": 0}


# wrk runs and sign-ins so far in this process: tells PkBracket whether its last PK-route run
# was the one just before the figure it is about to measure, with no other load between them.
LOAD_EVENTS = {"count": 0}


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` have used so far (/proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def _machine_seconds() -> dict[str, float]:
    """The whole machine's CPU time so far, all cores together, in seconds (the first line of
    /proc/stat): "total" (every state), "idle" (idle or waiting for I/O) and "steal" (time the
    hypervisor gave to other guests while this one had work)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return {"total": total / _CLOCK_TICKS, "idle": (idle + iowait) / _CLOCK_TICKS, "steal": steal / _CLOCK_TICKS}


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended and been waited for
    (the load tool, once subprocess.run returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


MACHINE_PARTS = ("app", "db", "load", "other", "idle", "steal")


def machine_split(cpu: dict[str, float]) -> dict[str, float]:
    """Where the machine's time went during one run, as percentages of all its cores' time: the
    app's processes, the database server's, the load tool (wrk), everything else that ran, idle,
    and steal. `cpu`: seconds over the run, from run_wrk ("app", "db", "load", "idle", "steal"
    and "machine", the cores' total). Empty when the run read no machine time."""
    machine = cpu.get("machine", 0.0)
    if machine <= 0:
        return {}
    measured = {part: max(0.0, cpu.get(part, 0.0)) for part in ("app", "db", "load", "idle", "steal")}
    measured["other"] = max(0.0, machine - sum(measured.values()))
    return {part: 100 * measured[part] / machine for part in MACHINE_PARTS}


def _database_server_pids() -> list[int]:
    """The local PostgreSQL server's processes (postmaster and backends), by process name."""
    found = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _cpu_now(server: Server) -> dict[str, float]:
    return {"app": _cpu_seconds([server.process.pid, *server.worker_pids()]),
            "db": _cpu_seconds(_database_server_pids())}


def read_client_files(tag: str) -> tuple[dict[str, list[float]], dict[str, dict[str, int]], dict[str, int],
                                          dict[str, list[float]]]:
    """What bench/wrk/common.lua wrote for run `tag`, one file per client (wrk thread), lines of
    "label status ok ms": (latencies ms per label, answers per label and status, answers not the
    expected one per label, each client's own p50 ms per label)."""
    latencies: dict[str, list[float]] = {}
    statuses: dict[str, dict[str, int]] = {}
    bad: dict[str, int] = {}
    client_p50s: dict[str, list[float]] = {}
    for part in sorted(REPORTS.glob(f"wrk-{tag}.out.*")):
        mine: dict[str, list[float]] = {}
        for line in part.read_text().splitlines():
            fields = line.split()
            if len(fields) != 4:
                continue
            label, status, ok, ms = fields
            latencies.setdefault(label, []).append(float(ms))
            mine.setdefault(label, []).append(float(ms))
            by_status = statuses.setdefault(label, {})
            by_status[status] = by_status.get(status, 0) + 1
            if ok != "1":
                bad[label] = bad.get(label, 0) + 1
        for label, values in mine.items():
            client_p50s.setdefault(label, []).append(statistics.median(values))
    return latencies, statuses, bad, client_p50s


def read_run_summary(text: str, duration: float) -> tuple[float, int, int]:
    """What bench/wrk/common.lua's done() wrote: (the run's duration in seconds, `duration` if
    missing; socket errors that count; answers that closed their keep-alive connection)."""
    duration_s, socket_errors, closed = duration, 0, 0
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "duration_us":
            duration_s = int(rest) / 1e6
        elif kind == "socket_errors":
            # connect, read, write, timeout; a read error is the server closing a connection,
            # which sync workers do after every answer, so only the others count.
            connect, _read, write, timeout = (int(x) for x in rest.split())
            socket_errors = connect + write + timeout
        elif kind == "closed":
            closed = int(rest)
    return duration_s, socket_errors, closed


def run_wrk(server: Server, script: str, clients: list[dict[str, str]], duration: float, tag: str) -> Sample:
    REPORTS.mkdir(parents=True, exist_ok=True)
    clients_path = REPORTS / f"clients-{tag}.tsv"
    out_path = REPORTS / f"wrk-{tag}.out"
    clients_path.write_text("".join("\t".join(f"{k}={v}" for k, v in c.items()) + "\n" for c in clients))
    for stale in REPORTS.glob(f"wrk-{tag}.out*"):
        stale.unlink()
    n = len(clients)
    env = dict(os.environ, BENCH_CLIENTS=str(clients_path), BENCH_OUT=str(out_path), BENCH_PASSWORD=BENCH_PASSWORD)
    command = ["wrk", "-t", str(n), "-c", str(n), "-d", f"{max(1, round(duration))}s", "--timeout", "30s",
               "-s", str(WRK / script), f"http://127.0.0.1:{server.port}"]
    cpu_before, machine_before, load_before = _cpu_now(server), _machine_seconds(), _children_cpu_seconds()
    LOAD_EVENTS["count"] += 1
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=duration + 120)
    # The children's CPU is read first: _cpu_now runs pgrep, a child of its own, which is not load.
    load_after, machine_after, cpu_after = _children_cpu_seconds(), _machine_seconds(), _cpu_now(server)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    duration_s, socket_errors, closed = read_run_summary(out_path.read_text(), duration)
    latencies, statuses, bad, client_p50s = read_client_files(tag)
    # CPU seconds over the run: the app's and the database server's processes (/proc/<pid>/stat),
    # wrk's own ("load", from this process's waited-for children), and the whole machine's idle,
    # steal and total time (/proc/stat): machine_split tells where the two cores went.
    cpu = {k: cpu_after[k] - cpu_before[k] for k in cpu_after}
    cpu["load"] = load_after - load_before
    cpu.update({("machine" if k == "total" else k): machine_after[k] - machine_before[k] for k in machine_after})
    sample = Sample(duration_s, latencies, statuses, bad, socket_errors, cpu, client_p50s)
    if n == PAGE_CLIENTS:
        KEEPALIVE_TALLY["answers"] += sum(len(values) for values in latencies.values())
        KEEPALIVE_TALLY["closed"] += closed
    if script == "transfer.lua":
        TRANSFER_TALLY["accepted"] += len(latencies.get("post", [])) - bad.get("post", 0)
        TRANSFER_TALLY["in_flight"] += n
    return sample


# ---------------------------------------------------------------------------------------------
# Database ceilings
# ---------------------------------------------------------------------------------------------

PGBENCH_SCRIPT = REPO / "bench" / "pgbench_transfer.sql"


def run_pgbench(url: str, clients: int, duration: float, accounts: int) -> float:
    """pgbench's own throughput (transactions/s) for the transfer's SQL (bench/pgbench_transfer.sql)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    command = ["pgbench", "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T",
               str(int(duration)), "-D", f"naccounts={accounts}", "-f", str(PGBENCH_SCRIPT),
               "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432), "-U", parsed.username or "postgres",
               parsed.database]
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=duration + 120, check=True)
    for line in done.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(done.stdout + done.stderr)


def run_sqlite_ceiling(path: Path, clients: int, duration: float, accounts: int) -> float:
    done = subprocess.run([sys.executable, "-m", "bench.sqlite_ceiling", str(path), str(clients), str(duration),
                           str(accounts)], cwd=REPO, capture_output=True, text=True, timeout=duration + 120,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def hash_verification_ms(repeats: int = 15) -> tuple[float, str]:
    """Median time of one Argon2id verification with the app's profile, in this process."""
    from argon2 import PasswordHasher, profiles

    from app.config import BaseConfig

    profile = getattr(profiles, BaseConfig.ARGON2_PROFILE)
    hasher = PasswordHasher.from_parameters(profile)
    stored = hasher.hash(BENCH_PASSWORD)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        hasher.verify(stored, BENCH_PASSWORD)
        times.append((time.perf_counter() - started) * 1000)
    described = (f"Argon2id {BaseConfig.ARGON2_PROFILE}: m={profile.memory_cost // 1024} MiB, t={profile.time_cost}, "
                 f"p={profile.parallelism}")
    return statistics.median(times), described


# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------


@dataclass
class Population:
    """Who the clients are: ids and numbers read from a seeded database."""

    heavy_accounts: list[int]
    hot: list[tuple[int, str]]                  # (account id, number) of hot-k's account, k = 1..5
    clients: list[tuple[str, int, str]]         # (email, first account id, its number) of bench-customer-1..n
    targets: list[str]                          # account numbers for uniform transfers
    max_account_id: int
    ledger_rows: int = 0


def population(databases: Databases, url: str) -> Population:
    q = lambda sql: databases.scalar(url, sql)  # noqa: E731
    rows = []
    if databases.backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
            rows = connection.execute(
                'SELECT u.email, a.id, a.account_number FROM account a JOIN "user" u ON u.id = a.owner_id '
                "WHERE u.email LIKE 'bench-%' ORDER BY a.id").fetchall()
            targets = [r[0] for r in connection.execute(
                "SELECT account_number FROM account WHERE owner_id > 8 ORDER BY id").fetchall()]
    else:
        import psycopg

        with psycopg.connect(_libpq(url)) as connection:
            rows = connection.execute(
                'SELECT u.email, a.id, a.account_number FROM account a JOIN "user" u ON u.id = a.owner_id '
                "WHERE u.email LIKE 'bench-%' ORDER BY a.id").fetchall()
            targets = [r[0] for r in connection.execute(
                "SELECT account_number FROM account WHERE owner_id > 8 ORDER BY id").fetchall()]
    first: dict[str, tuple[int, str]] = {}
    for email, account_id, number in rows:
        first.setdefault(email, (account_id, number))
    heavy = [account_id for email, account_id, _ in rows if email == HEAVY_EMAIL]
    hot = [first[hot_email(k)] for k in range(1, 6)]
    clients = []
    n = 1
    while customer_email(n) in first and n <= 100:
        clients.append((customer_email(n), *first[customer_email(n)]))
        n += 1
    rng = random.Random(7)
    return Population(heavy, hot, clients, rng.sample(targets, min(1000, len(targets))),
                      q("SELECT max(id) FROM account"), q('SELECT count(*) FROM "transaction"'))


def filtered_path() -> str:
    today = dt.datetime.now(dt.timezone.utc).date()
    start = today - dt.timedelta(days=FILTERED_DAYS)
    return (f"/banking/transactions?date_from={start.isoformat()}&date_to={today.isoformat()}"
            "&type=debit&min_amount=0.01&max_amount=25.00")


PAGES = {
    "dashboard": "/banking/dashboard",
    "transactions": "/banking/transactions",
    "filtered": None,  # filtered_path(), computed at run time
    "page200": "/banking/transactions?page=200",
}


@dataclass
class Results:
    """Every measurement, per backend, per figure: one value per repetition."""

    values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, backend: str, key: str, value: float) -> None:
        self.values.setdefault(backend, {}).setdefault(key, []).append(value)

    def add_errors(self, backend: str, key: str, count: int) -> None:
        bucket = self.errors.setdefault(backend, {})
        bucket[key] = bucket.get(key, 0) + count

    def note(self, backend: str, text: str) -> None:
        self.notes.setdefault(backend, []).append(text)


def record_transfer(results: Results, backend: str, key: str, sample: Sample) -> None:
    """record() for a transfer run: the POST's figures, and the GET form's p50 beside them."""
    record(results, backend, key, sample, "post")
    results.add(backend, f"{key}.form_p50", sample.pct("form", 50))


def record(results: Results, backend: str, key: str, sample: Sample, label: str) -> None:
    results.add(backend, f"{key}.rate", sample.rate(label))
    results.add(backend, f"{key}.p50", sample.pct(label, 50))
    results.add(backend, f"{key}.p99", sample.pct(label, 99))
    results.add_errors(backend, key, sample.errors())
    spread = sample.client_spread(label)
    if not math.isnan(spread):
        results.add(backend, f"{key}.client_spread", spread)
    if sample.cpu and sample.latencies.get(label):
        # CPU per answered operation: the app's processes and the database server's, from /proc.
        results.add(backend, f"{key}.cpu_app_ms", cpu_ms_per_answer(sample, label, "app"))
        results.add(backend, f"{key}.cpu_db_ms", cpu_ms_per_answer(sample, label, "db"))
        results.add(backend, f"{key}.cpu_load_ms", cpu_ms_per_answer(sample, label, "load"))
        for part, share in machine_split(sample.cpu).items():
            results.add(backend, f"{key}.machine_{part}", share)


def cpu_ms_per_answer(sample: Sample, label: str, part: str) -> float:
    """CPU ms of `part` ("app": the server's processes, "db": the database server's) per answer
    labelled `label` in the run (NaN when the run read no CPU for it)."""
    return 1000 * sample.cpu.get(part, math.nan) / max(1, len(sample.latencies.get(label, [])))


class PkBracket:
    """The PK route at 16 clients measured right before and right after each 16-client figure
    that is weighed against it, so each ratio compares runs seconds apart: the machine's speed
    moves during a run (one repetition's transfer took 17 ms of CPU, the next ones 9.5), and a
    ceiling measured minutes earlier carries that drift into the ratio. Records, per figure
    `key`, the mean of the two PK runs as `key.pk.rate`, `.pk.p50`, `.pk.cpu_app_ms` and
    `.pk.cpu_db_ms`; a PK run directly after one figure is the "before" of the next when nothing
    else loaded the server between them (LOAD_EVENTS). Each PK run lasts as long as a figure's,
    so a run's fixed costs weigh the same on both sides of the ratio."""

    def __init__(self, server: Server, results: Results, backend: str, tag: str, duration: float) -> None:
        self.server, self.results, self.backend, self.tag = server, results, backend, tag
        self.duration = duration
        self.last: Sample | None = None
        self.last_run = -1

    def _run(self) -> Sample:
        sample = run_wrk(self.server, "page.lua", [{"path": "/bench/pk"}] * PAGE_CLIENTS, self.duration,
                         f"{self.tag}-pk-bracket-{LOAD_EVENTS['count'] + 1}")
        self.last, self.last_run = sample, LOAD_EVENTS["count"]
        return sample

    def around(self, key: str, measure) -> Sample:
        """Run `measure()` (one wrk run) between two PK-route runs; returns its Sample."""
        before = self.last if self.last is not None and self.last_run == LOAD_EVENTS["count"] else self._run()
        sample = measure()
        after = self._run()
        for stat, value in bracket_figures(before, after).items():
            self.results.add(self.backend, f"{key}.pk.{stat}", value)
        return sample


def bracket_figures(before: Sample, after: Sample) -> dict[str, float]:
    """The PK route's figures for a bracketed figure: the mean of the runs before and after it
    (req/s, p50 ms, the app's, the database server's and the load tool's CPU ms per request, and
    where the machine's time went, `machine_<part>` in percent: machine_split)."""
    figures = {}
    for stat, read in (("rate", lambda s: s.rate("get")), ("p50", lambda s: s.pct("get", 50)),
                       ("cpu_app_ms", lambda s: cpu_ms_per_answer(s, "get", "app")),
                       ("cpu_db_ms", lambda s: cpu_ms_per_answer(s, "get", "db")),
                       ("cpu_load_ms", lambda s: cpu_ms_per_answer(s, "get", "load"))):
        figures[stat] = (read(before) + read(after)) / 2
    split_before, split_after = machine_split(before.cpu), machine_split(after.cpu)
    if split_before and split_after:
        for part in MACHINE_PARTS:
            figures[f"machine_{part}"] = (split_before[part] + split_after[part]) / 2
    return figures


def bench_backend(backend: str, args, results: Results, meta: dict) -> None:
    folder = REPORTS / backend
    folder.mkdir(parents=True, exist_ok=True)
    databases = Databases(backend, folder, args.pg_url)
    big_spec = QUICK_BIG if args.quick else BIG
    try:
        log(f"{backend}: seeding the big database ({big_spec.transfers:,} transfers)")
        big_url = databases.create("big")
        meta.setdefault("seed", {})[f"{backend}.big"] = migrate_and_seed(big_url, big_spec, not args.no_progress)
        log(f"{backend}: seeding the small database ({SMALL.transfers:,} transfers)")
        small_url = databases.create("small")
        meta["seed"][f"{backend}.small"] = migrate_and_seed(small_url, SMALL, not args.no_progress)
        # The database ceiling runs on a scratch copy: its audit chain is not valid afterwards.
        ceiling_url = databases.create("ceiling", template="small")
        pop = population(databases, big_url)
        ledger_before = databases.scalar(big_url, 'SELECT count(*) FROM "transaction"')
        TRANSFER_TALLY.update(accepted=0, in_flight=0)
        KEEPALIVE_TALLY.update(answers=0, closed=0)
        meta.setdefault("hash", {})[backend] = hash_verification_ms()
        served = meta.setdefault("gunicorn", {})[backend] = server_configuration(big_url, args)
        workers, threads = served["workers"], served["threads"]
        with ExitStack() as stack:
            big = stack.enter_context(gunicorn(f"{backend}-big", big_url, folder, workers, threads))
            small = stack.enter_context(gunicorn(f"{backend}-small", small_url, folder, workers, threads))
            # SQLite only: the same big database behind a server whose commits skip the sync, for
            # the one diagnostic figure that prices SQLite's durable commit (bench/app.py).
            unsynced = stack.enter_context(gunicorn(
                f"{backend}-big-unsynced", big_url, folder, workers, threads, **{UNSYNCED_SETTING: "1"},
            )) if backend == "sqlite" else None
            paths = dict(PAGES, filtered=filtered_path())
            warm(big, small, pop, paths, args)
            if unsynced is not None:
                run_wrk(unsynced, "transfer.lua", transfer_clients(big, pop, "uniform", 4), 1, "warm")
            for rep in range(1, 0 if args.only_sweep else args.reps + 1):
                log(f"{backend}: repetition {rep}/{args.reps} (load average {os.getloadavg()[0]:.2f})")
                results.add(backend, "loadavg", os.getloadavg()[0])
                tag = f"{backend}-r{rep}"
                # Ceilings
                for clients in CLIENT_COUNTS:
                    for route in ("text", "pk"):
                        sample = run_wrk(big, "page.lua", [{"path": f"/bench/{route}"}] * clients, args.duration,
                                         f"{tag}-{route}-{clients}")
                        record(results, backend, f"ceiling.{route}.{clients}", sample, "get")
                    if backend == "postgresql":
                        tps = run_pgbench(ceiling_url, clients, args.duration, 200)
                    else:
                        tps = run_sqlite_ceiling(Path(ceiling_url.removeprefix("sqlite:///")), clients, args.duration,
                                                 200)
                    results.add(backend, f"ceiling.db.{clients}", tps)
                # Transfers at 1 and 4 clients
                for pattern in ("uniform", "hot"):
                    for clients in CLIENT_COUNTS[:-1]:
                        sessions = transfer_clients(big, pop, pattern, clients)
                        sample = run_wrk(big, "transfer.lua", sessions, args.duration, f"{tag}-{pattern}-{clients}")
                        record_transfer(results, backend, f"transfer.{pattern}.{clients}", sample)
                # Every 16-client figure weighed against the PK route sits between two runs of it;
                # the sessions are signed in first, so no sign-in comes between a figure's runs.
                bracket = PkBracket(big, results, backend, tag, args.duration)
                cookie = sign_in(big, HEAVY_EMAIL)
                transfer_sessions = {pattern: transfer_clients(big, pop, pattern, PAGE_CLIENTS)
                                     for pattern in ("uniform", "hot")}
                # The signed-in floor, at the pages' number of clients (bench/app.py)
                sample = bracket.around(f"ceiling.floor.{PAGE_CLIENTS}", partial(
                    run_wrk, big, "page.lua", [{"cookie": cookie, "path": "/bench/signed-in"}] * PAGE_CLIENTS,
                    args.duration, f"{tag}-floor"))
                record(results, backend, f"ceiling.floor.{PAGE_CLIENTS}", sample, "get")
                # Transfers at 16 clients
                for pattern in ("uniform", "hot"):
                    key = f"transfer.{pattern}.{PAGE_CLIENTS}"
                    sample = bracket.around(key, partial(
                        run_wrk, big, "transfer.lua", transfer_sessions[pattern], args.duration,
                        f"{tag}-{pattern}-{PAGE_CLIENTS}"))
                    record_transfer(results, backend, key, sample)
                if unsynced is not None:
                    # The uniform transfers again, the same sessions, on the unsynced server.
                    key = f"{UNSYNCED}.{PAGE_CLIENTS}"
                    sample = bracket.around(key, partial(
                        run_wrk, unsynced, "transfer.lua", transfer_sessions["uniform"], args.duration,
                        f"{tag}-uniform-unsynced"))
                    record_transfer(results, backend, key, sample)
                # Pages at 16 clients, on the small database and then on the big one, between PK runs
                for name, path in [*paths.items(), ("hops", "/audit/transactions")]:
                    for size, server in (("small", small), ("big", big)):
                        if name == "hops":
                            script, label = "hops.lua", "hop"
                            session = {"cookie": sign_in(server, AUDITOR_EMAIL), "path": path, "hops": str(HOPS)}
                        else:
                            script, label = "page.lua", "get"
                            session = {"cookie": sign_in(server, HEAVY_EMAIL), "path": path}
                        key = f"page.{name}.{size}"
                        measure = partial(run_wrk, server, script, [session] * PAGE_CLIENTS, args.duration,
                                          f"{tag}-{name}-{size}")
                        sample = bracket.around(key, measure) if size == "big" else measure()
                        record(results, backend, key, sample, label)
                # The durable audit append alone, the write every hop must make (bench/app.py)
                sample = bracket.around(f"ceiling.append.{PAGE_CLIENTS}", partial(
                    run_wrk, big, "page.lua", [{"path": "/bench/audit-append"}] * PAGE_CLIENTS, args.duration,
                    f"{tag}-append"))
                record(results, backend, f"ceiling.append.{PAGE_CLIENTS}", sample, "get")
                # Login, one client
                emails = ",".join(email for email, *_ in pop.clients[:50])
                sample = run_wrk(big, "login.lua", [{"emails": emails}], args.duration, f"{tag}-login")
                record(results, backend, "login", sample, "post")
                results.add(backend, "hash_ms", hash_verification_ms(7)[0])
            if args.reps and not args.only_sweep:
                results.note(backend, f"answers at {PAGE_CLIENTS} clients that closed their keep-alive connection "
                                      f"(gunicorn's `Connection: close`"
                                      + ("; a sync worker closes every one" if threads == 1 else "")
                                      + f"): {KEEPALIVE_TALLY['closed']:,} of {KEEPALIVE_TALLY['answers']:,}")
            if args.profile:
                profile(backend, big, pop, args, results)
        if args.sweep:
            sweep(backend, big_url, folder, pop, args, results)
        ledger_after = databases.scalar(big_url, 'SELECT count(*) FROM "transaction"')
        grown = ledger_after - ledger_before
        accepted, in_flight = TRANSFER_TALLY["accepted"], TRANSFER_TALLY["in_flight"]
        pairs_ok = grown % 2 == 0 and accepted <= grown // 2 <= accepted + in_flight
        results.note(backend, f"ledger rows added during the run: {grown:,} (= 2 x {grown // 2:,} transfers); transfer "
                              f"POSTs answered with success: {accepted:,}, plus at most {in_flight:,} in flight when "
                              f"wrk stopped each run (committed, never answered): "
                              f"{'consistent' if pairs_ok else 'NOT CONSISTENT'}")
        log(f"{backend}: verifying the ledger and the audit chain")
        for name, url in (("big", big_url), ("small", small_url)):
            for command, outcome in verify(url).items():
                results.note(backend, f"{name}: `flask {command}`: {outcome}")
    finally:
        if not args.keep:
            databases.drop_all()


def warm(big: Server, small: Server, pop: Population, paths: dict, args) -> None:
    """A few seconds of every request type, so templates are compiled and caches filled."""
    for server in (big, small):
        cookie = sign_in(server, HEAVY_EMAIL)
        for path in list(paths.values()) + ["/bench/pk", "/bench/text", "/bench/signed-in"]:
            run_wrk(server, "page.lua", [{"cookie": cookie, "path": path}] * 4, 1, "warm")
    run_wrk(big, "transfer.lua", transfer_clients(big, pop, "uniform", 4), 1, "warm")


SWEEP = ((2, 1), (4, 1), (6, 1), (8, 1), (2, 2), (2, 4), (4, 2), (4, 4))
# On SQLite, only what the choice turns on there: one thread per process or more. SQLite lets
# one writer in at a time, so more processes or threads add writers queueing for the same lock.
SQLITE_SWEEP = ((2, 1), (4, 1), (2, 2), (2, 4))


def sweep_configurations(backend: str) -> tuple[tuple[int, int], ...]:
    """The (workers, threads) pairs the sweep measures on `backend` ("postgresql" or "sqlite")."""
    return SQLITE_SWEEP if backend == "sqlite" else SWEEP


def sweep(backend: str, url: str, folder: Path, pop: Population, args, results: Results) -> None:
    """Workers x threads: the PK route, transfers and transactions page 1 at 16 clients, so
    gunicorn.conf.py's choice rests on a measurement. Two passes, the second in reverse order,
    so a change in the machine's background load doesn't favour the configurations run first."""
    configurations = sweep_configurations(backend)
    for workers, threads in configurations + tuple(reversed(configurations)):
        log(f"{backend}: sweep {workers} workers x {threads} threads")
        with gunicorn(f"{backend}-sweep", url, folder, workers, threads) as server:
            cookie = sign_in(server, HEAVY_EMAIL)
            run_wrk(server, "page.lua", [{"cookie": cookie, "path": "/banking/transactions"}] * 4, 1, "warm")
            key = f"sweep.{workers}x{threads}"
            sample = run_wrk(server, "page.lua", [{"path": "/bench/pk"}] * 16, args.duration, f"{key}-pk")
            record(results, backend, f"{key}.pk", sample, "get")
            sample = run_wrk(server, "transfer.lua", transfer_clients(server, pop, "uniform", 16), args.duration,
                             f"{key}-transfer")
            record(results, backend, f"{key}.transfer", sample, "post")
            sample = run_wrk(server, "page.lua", [{"cookie": cookie, "path": "/banking/transactions"}] * 16,
                             args.duration, f"{key}-page")
            record(results, backend, f"{key}.page", sample, "get")


def transfer_clients(server: Server, pop: Population, pattern: str, clients: int) -> list[dict[str, str]]:
    sessions = []
    for i in range(clients):
        if pattern == "uniform":
            email, source, own = pop.clients[i % len(pop.clients)]
            targets = [number for number in pop.targets if number != own]
        else:
            k = i % len(pop.hot)
            email, source = hot_email(k + 1), pop.hot[k][0]
            targets = [number for j, (_, number) in enumerate(pop.hot) if j != k]
        sessions.append({"cookie": sign_in(server, email), "source": str(source), "targets": ",".join(targets)})
    return sessions


def profile(backend: str, server: Server, pop: Population, args, results: Results) -> None:
    """py-spy on every worker during a 16-client uniform transfer run and a login run."""
    if not shutil.which("py-spy") and not (Path(sys.executable).parent / "py-spy").exists():
        results.note(backend, "profile skipped: py-spy is not installed")
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    heavy = sign_in(server, HEAVY_EMAIL)
    # "transfer, GIL held": only the samples in which a worker thread held the GIL, i.e. ran
    # Python: where the workers' CPU went, without the time they waited for the database.
    for name, script, sessions, gil in (
        ("transfer", "transfer.lua", transfer_clients(server, pop, "uniform", 16), False),
        ("transfer, GIL held", "transfer.lua", transfer_clients(server, pop, "uniform", 16), True),
        ("transactions page", "page.lua", [{"cookie": heavy, "path": "/banking/transactions"}] * 16, False),
        ("login", "login.lua", [{"emails": ",".join(e for e, *_ in pop.clients[:50])}], False),
    ):
        spies = []
        slug = name.replace(",", "").replace(" ", "-")
        for pid in server.worker_pids():
            out = REPORTS / f"profile-{backend}-{slug}-{pid}.txt"
            spies.append((out, subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(int(args.duration)), "-r", "200",
                                                 "-f", "raw", "-o", str(out), "--nonblocking", *(["--gil"] if gil else [])],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        run_wrk(server, script, sessions, args.duration, f"{backend}-profile-{slug}")
        for _, spy_process in spies:
            spy_process.wait(timeout=60)
        paths = [out for out, _ in spies]
        results.note(backend, f"profile:{name}:" + json.dumps(summarize_profile(paths)))
        if gil:
            results.note(backend, f"profile-top:{name}:" + json.dumps(busiest_functions(paths)))


PROFILE_BUCKETS = (
    ("Argon2id hash", ("argon2",)),
    ("in the database driver (round trips, and the GIL after them)", ("psycopg/", "sqlite3", "pgconn", "_sqlite",
                                                                    "wait_conn", "generators.py")),
    ("Jinja templates", ("jinja2/", "templates/")),
    ("SQLAlchemy ORM and core", ("sqlalchemy/",)),
    ("forms and CSRF (WTForms, Flask-WTF, itsdangerous)", ("wtforms/", "flask_wtf/", "itsdangerous/")),
    ("Flask, Werkzeug, gunicorn", ("flask/", "werkzeug/", "gunicorn/", "flask_login/", "flask_limiter/")),
)


def _samples(paths: list[Path]) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw output ("frame;frame;... count" per line) of every existing file in `paths`:
    (the frames, outermost first; the number of samples with that stack)."""
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if count.isdigit():
                yield stack.split(";"), int(count)


def summarize_profile(paths: list[Path]) -> dict[str, float]:
    """Share of py-spy samples (%) by the innermost frame's bucket."""
    counts: dict[str, int] = {}
    total = 0
    for frames, count in _samples(paths):
        bucket = "other (app code, idle)"
        for frame in reversed(frames):
            hit = next((name for name, needles in PROFILE_BUCKETS if any(n in frame for n in needles)), None)
            if hit:
                bucket = hit
                break
        if any("accept" in f or "select (selectors" in f or "sleep (gunicorn" in f for f in frames[-2:]):
            bucket = "idle (waiting for a request)"
        counts[bucket] = counts.get(bucket, 0) + count
        total += count
    return {name: round(100 * n / total, 1) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {}


def busiest_functions(paths: list[Path], count: int = 3) -> list[list]:
    """The functions most often innermost in py-spy's samples: [[function, share %], ...], the
    busiest first. A function is its name and file, whatever the line ("LRUCache.get
    (sqlalchemy/util/_collections.py)"): with --gil, the share of the workers' Python CPU spent
    in that function's own code, a hotspot if one stands out."""
    counts: dict[str, int] = {}
    total = 0
    for frames, samples in _samples(paths):
        if frames == [""]:
            continue
        innermost = re.sub(r":\d+\)$", ")", frames[-1])
        counts[innermost] = counts.get(innermost, 0) + samples
        total += samples
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
    return [[function, round(100 * n / total, 1)] for function, n in ranked] if total else []


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def machine_description() -> dict[str, str]:
    def out(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unavailable"

    cpu = next((line.split(":", 1)[1].strip() for line in out(["lscpu"]).splitlines() if line.startswith("Model name")),
               platform.processor())
    memory = next((line.split()[1] for line in out(["free", "-g"]).splitlines() if line.startswith("Mem:")), "?")
    from importlib import metadata

    versions = {name: metadata.version(name) for name in ("Flask", "SQLAlchemy", "psycopg", "gunicorn", "Werkzeug",
                                                           "Jinja2", "argon2-cffi", "Flask-WTF", "Flask-Login")}
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores, {memory} GiB memory",
        "os": out(["uname", "-srm"]),
        "python": platform.python_version(),
        "postgresql": out(["psql", "--version"]) + " (server: " + out(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "SHOW server_version"]) + ")",
        "sqlite": sqlite3.sqlite_version,
        "wrk": out(["wrk", "--version"]).splitlines()[0] if out(["wrk", "--version"]) else "?",
        "pgbench": out(["pgbench", "--version"]),
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured run")
    parser.add_argument("--workers", type=int, default=None, help="default: gunicorn.conf.py's for each database")
    parser.add_argument("--threads", type=int, default=None, help="default: gunicorn.conf.py's for each database")
    parser.add_argument("--quick", action="store_true", help="a 10x smaller big database (for trying the bench)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip py-spy on the workers during a transfer run and a login run")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the workers x threads sweep")
    parser.add_argument("--only-sweep", action="store_true", help="seed, then only the configuration sweep")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_DATABASE_URL") or DEFAULT_PG)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.sweep = args.sweep or args.only_sweep
    for tool in ("wrk",) + (("pgbench",) if "postgresql" in args.backends else ()):
        if not shutil.which(tool):
            parser.error(f"{tool} is not installed (Debian package: {'wrk' if tool == 'wrk' else 'postgresql-client'})")
    if "postgresql" in args.backends:
        try:
            import psycopg

            psycopg.connect(_libpq(args.pg_url), connect_timeout=5).close()
        except Exception as exc:  # noqa: BLE001 - any failure: say which server and why
            parser.error(f"cannot connect to PostgreSQL at {args.pg_url} (BENCH_DATABASE_URL): {exc}")
    REPORTS.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    meta: dict = {"started": started.strftime("%Y-%m-%d %H:%M UTC"), "loadavg_start": os.getloadavg(),
                  "machine": machine_description(),
                  "duration": args.duration, "reps": args.reps, "quick": args.quick}
    results = Results()
    for backend in args.backends.split(","):
        bench_backend(backend.strip(), args, results, meta)
    meta["loadavg_end"] = os.getloadavg()
    meta["minutes"] = round((dt.datetime.now(dt.timezone.utc) - started).total_seconds() / 60, 1)
    (REPORTS / "results.json").write_text(json.dumps({"meta": meta, "values": results.values, "notes": results.notes,
                                                      "errors": results.errors}, indent=1, default=str))
    from bench.report import render

    Path(args.out).write_text(render(meta, results.values, results.notes, results.errors))
    log(f"wrote {args.out}")
    return 0


def load_gunicorn_conf(database_url: str) -> dict:
    """workers and threads as gunicorn.conf.py computes them for a server on `database_url`
    (the rest of the environment as it is: WEB_CONCURRENCY and WEB_THREADS still win)."""
    namespace: dict = {}
    saved = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = database_url
    try:
        exec(compile((REPO / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)  # nosec B102
    finally:
        if saved is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = saved
    return {"workers": namespace.get("workers", 1), "threads": namespace.get("threads", 1)}


def server_configuration(database_url: str, args) -> dict:
    """The gunicorn configuration every server on `database_url`'s database runs with: gunicorn.conf.py's
    workers and threads for that database, unless --workers or --threads say otherwise, and
    each worker's connection cap (None for sync workers, which hold one connection at a time)."""
    conf = load_gunicorn_conf(database_url)
    workers, threads = args.workers or conf["workers"], args.threads or conf["threads"]
    return {"workers": workers, "threads": threads,
            "worker_connections": worker_connections(workers, threads) if threads > 1 else None}


if __name__ == "__main__":
    sys.exit(main())
