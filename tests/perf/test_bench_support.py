"""The benchmark's own code, checked in the normal suite: its ceiling routes can't reach
production, and its seeder writes data that keeps every invariant (DESIGN.md sections 2-4)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from app import create_app
from app.audit.services import verify_chain
from app.banking.services import verify_ledger
from app.config import ConfigurationError
from app.extensions import db
from app.models import Account, AuditLog, Transaction, User
from bench.app import create_bench_app
from tests import factories
from tests.perf.conftest import HEAVY_EMAIL, SMALL_SPEC

REPO = Path(__file__).resolve().parents[2]


def test_production_factory_has_no_benchmark_routes(app):
    """Does the app that run.py, `make serve` and the container build have no /bench route?"""
    assert not [rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/bench")]
    assert "bench" not in app.blueprints


def test_benchmark_factory_refuses_production(monkeypatch):
    """Does the benchmark's factory refuse to build an app when APP_ENV is production, whether
    the environment or the overrides say so?"""
    with pytest.raises(ConfigurationError):
        create_bench_app({"APP_ENV": "production"})
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigurationError):
        create_bench_app()


def test_production_entry_points_never_import_the_benchmark():
    """Do run.py, gunicorn.conf.py (its default app), the Dockerfile and compose.yaml stay
    clear of the bench package?"""
    for name in ("run.py", "Dockerfile", "compose.yaml"):
        assert "bench" not in (REPO / name).read_text(), name
    assert 'wsgi_app = "run:app"' in (REPO / "gunicorn.conf.py").read_text()


def test_benchmark_app_serves_the_ceiling_routes(database_url):
    """Do the two ceiling routes answer a short text, without a session?"""
    bench = create_bench_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url})
    client = bench.test_client()
    assert client.get("/bench/text").get_data(as_text=True) == "ok\n"
    answer = client.get("/bench/pk")
    assert answer.status_code == 200 and answer.mimetype == "text/plain"
    with bench.app_context():
        db.engine.dispose()


def test_signed_in_floor_needs_a_session_and_renders_the_layout(database_url):
    """Does `/bench/signed-in` send an anonymous visitor to the login page, and show a signed-in
    user the base layout (navigation, logout form with its CSRF token) around an empty page?"""
    bench = create_bench_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url,
                              "WTF_CSRF_ENABLED": False})
    client = bench.test_client()
    anonymous = client.get("/bench/signed-in")
    assert anonymous.status_code == 302 and "/auth/login" in anonymous.headers["Location"]
    with bench.app_context():
        user = factories.make_user("customer")
    signed_in = client.post("/auth/login", data={"email": user.email, "password": factories.DEFAULT_PASSWORD})
    assert signed_in.status_code == 302
    page = client.get("/bench/signed-in")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "Signed in" in html and 'action="/auth/logout"' in html
    with bench.app_context():
        db.engine.dispose()


def test_seeder_writes_consistent_books(app, seeded):
    """After bench/seed.py, do verify-ledger and verify-audit pass, with the promised counts
    (users, accounts, ledger rows in pairs, one audit row per event) and a heavy customer
    holding exactly the ledger rows asked for?"""
    with app.app_context():
        assert verify_ledger().ok, verify_ledger().problems
        report = verify_chain(db.session)
        assert report.ok, report.reason
        customers = db.session.scalar(select(func.count(User.id)).where(User.role == "customer"))
        accounts = db.session.scalar(select(func.count(Account.id)))
        rows = db.session.scalar(select(func.count(Transaction.id)))
        heavy = db.session.scalar(
            select(func.count(Transaction.id)).join(Account, Transaction.account_id == Account.id)
            .join(User, Account.owner_id == User.id).where(User.email == HEAVY_EMAIL))
        audit = db.session.scalar(select(func.count(AuditLog.id)))
    assert (customers, accounts) == (SMALL_SPEC.customers, SMALL_SPEC.accounts)
    assert rows == SMALL_SPEC.accounts + 2 * SMALL_SPEC.transfers == seeded["ledger_rows"]
    assert heavy == SMALL_SPEC.heavy_rows
    assert audit == seeded["audit_rows"] == seeded["users"] + accounts + SMALL_SPEC.transfers


def test_seeded_users_can_sign_in_and_transfer(app, seeded, sign_in):
    """Can a seeded customer sign in with the benchmark's password and move money, the books
    still balancing afterwards (the seeder left the sequences and the chain head right)?"""
    from tests import factories

    client = sign_in(HEAVY_EMAIL)
    with app.app_context():
        heavy = db.session.scalar(select(User).where(User.email == HEAVY_EMAIL))
        source, target = db.session.scalars(select(Account.id).where(Account.owner_id == heavy.id).order_by(Account.id)
                                            .limit(2)).all()
        heavy_id = heavy.id
    answer = client.post("/banking/transfer/internal", data={
        "source_account": str(source), "target_account": str(target), "amount": "1.00", "description": "check",
        "idempotency_key": factories.issued_key(app, heavy_id)})
    assert answer.status_code == 302, answer.get_data(as_text=True)[:300]
    with app.app_context():
        assert verify_ledger().ok
        assert verify_chain(db.session).ok


def test_production_factory_is_the_one_the_benchmark_wraps():
    """The bench app is create_app's app plus one blueprint: same routes otherwise."""
    plain = {rule.rule for rule in create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://"}).url_map.iter_rules()}
    bench = {rule.rule for rule in create_bench_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "sqlite://"}).url_map.iter_rules()}
    assert bench - plain == {"/bench/text", "/bench/pk", "/bench/audit-append", "/bench/signed-in"}


def _gunicorn_settings(monkeypatch, **env) -> dict:
    for name in ("WEB_THREADS", "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace: dict = {}
    exec(compile((REPO / "gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"), namespace)  # noqa: S102
    return namespace


PG_URL = "postgresql+psycopg://bank@db.example:5432/bank"


def test_connection_pool_is_sized_to_the_worker(monkeypatch):
    """Does each worker's pool hold one connection per thread and no overflow (so workers x
    threads connections in all), unless the environment sets the pool explicitly?"""
    settings = _gunicorn_settings(monkeypatch, DATABASE_URL=PG_URL)
    assert (settings["threads"], settings["worker_class"]) == (2, "gthread")
    assert settings["raw_env"] == ["DATABASE_POOL_SIZE=2", "DATABASE_MAX_OVERFLOW=0"]
    settings = _gunicorn_settings(monkeypatch, DATABASE_URL=PG_URL, WEB_THREADS="1")
    assert settings["worker_class"] == "sync" and "DATABASE_POOL_SIZE=1" in settings["raw_env"]
    settings = _gunicorn_settings(monkeypatch, DATABASE_URL=PG_URL, DATABASE_POOL_SIZE="9")
    assert settings["raw_env"] == ["DATABASE_MAX_OVERFLOW=0"]


@pytest.mark.parametrize("database_url", [None, "", "sqlite:////srv/bank/bank.db", "sqlite:///bank.db"])
def test_sqlite_is_served_by_one_thread_per_process(monkeypatch, database_url):
    """On SQLite (named, or DATABASE_URL unset: the development default) does gunicorn.conf.py
    default to one thread per process, gunicorn's sync worker (the workers x threads sweep of
    `make bench`: a second thread slows SQLite's serialized writers), while WEB_THREADS still
    wins and PostgreSQL keeps two threads?"""
    env = {} if database_url is None else {"DATABASE_URL": database_url}
    settings = _gunicorn_settings(monkeypatch, **env)
    assert (settings["threads"], settings["worker_class"]) == (1, "sync")
    assert settings["raw_env"] == ["DATABASE_POOL_SIZE=1", "DATABASE_MAX_OVERFLOW=0"]
    settings = _gunicorn_settings(monkeypatch, WEB_THREADS="2", **env)
    assert (settings["threads"], settings["worker_class"]) == (2, "gthread")
    for url in (PG_URL, "postgres://bank@db.example/bank"):
        assert _gunicorn_settings(monkeypatch, DATABASE_URL=url)["threads"] == 2


def test_the_benchmark_serves_each_database_as_gunicorn_conf_would(monkeypatch):
    """Does the benchmark take each database's workers and threads from gunicorn.conf.py for that
    database (1 thread on SQLite, 2 on PostgreSQL, no connection cap for sync workers), let
    --workers and --threads override them, and leave the environment's DATABASE_URL as it was?"""
    from argparse import Namespace

    from bench.run import server_configuration

    monkeypatch.delenv("WEB_THREADS", raising=False)
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    defaults = Namespace(workers=None, threads=None)
    assert server_configuration("sqlite:////tmp/big.db", defaults) == {
        "workers": 2, "threads": 1, "worker_connections": None}
    assert server_configuration(PG_URL, defaults) == {
        "workers": 2, "threads": 2, "worker_connections": 8}
    assert server_configuration("sqlite:////tmp/big.db", Namespace(workers=4, threads=2)) == {
        "workers": 4, "threads": 2, "worker_connections": 4}
    assert os.environ["DATABASE_URL"] == "sqlite:///elsewhere.db"


def test_the_benchmark_splits_its_connections_evenly_and_a_deployment_keeps_the_default(monkeypatch):
    """Does a deployment keep gunicorn's default worker_connections (1000), while the benchmark's
    gunicorn caps each worker at its share of the 16 clients (8 each for 2 x 2), with room for
    every client and never so few that a gthread worker has no connection left to keep alive?"""
    from bench.run import PAGE_CLIENTS, gunicorn_env, sweep_configurations, worker_connections

    monkeypatch.delenv("WEB_WORKER_CONNECTIONS", raising=False)
    assert _gunicorn_settings(monkeypatch)["worker_connections"] == 1000
    env = gunicorn_env("sqlite:///bench.db", 8123, 2, 2)
    assert (env["WEB_CONCURRENCY"], env["WEB_THREADS"], env["WEB_WORKER_CONNECTIONS"]) == ("2", "2", "8")
    assert _gunicorn_settings(monkeypatch, WEB_WORKER_CONNECTIONS=env["WEB_WORKER_CONNECTIONS"])["worker_connections"] == 8
    for workers, threads in sweep_configurations("postgresql") + sweep_configurations("sqlite"):
        if threads == 1:
            continue  # sync workers: one connection at a time, closed after each answer
        cap, share = worker_connections(workers, threads), -(-PAGE_CLIENTS // workers)
        # Each worker's share, unless that would leave no idle connection to keep alive.
        assert cap == max(share, threads + 1), (workers, threads, cap)


def test_the_run_summary_counts_the_answers_that_closed_their_connection():
    """Does the benchmark read back what bench/wrk/common.lua writes at the end of a run: its
    duration, the socket errors that count (not reads: sync workers close after every answer),
    and the answers that closed their keep-alive connection, which the report lists?"""
    from bench.run import read_run_summary

    lua = (REPO / "bench" / "wrk" / "common.lua").read_text()
    assert 'out:write(string.format("closed %d\\n", total))' in lua
    text = "duration_us 6012345\nsocket_errors 1 7 2 3\nthreads 16\nclosed 4\n"
    assert read_run_summary(text, 6.0) == (6.012345, 6, 4)
    assert read_run_summary("", 6.0) == (6.0, 0, 0)


def test_cpu_figures_come_from_proc_and_reach_the_report():
    """Does the benchmark read a process's CPU time from /proc (growing as it works), and does the
    report turn per-operation CPU into a table with the ratio to the PK route?"""
    import os

    from bench import report
    from bench.run import _cpu_seconds

    before = _cpu_seconds([os.getpid()])
    sum(i * i for i in range(2_000_000))
    assert _cpu_seconds([os.getpid()]) > before
    assert _cpu_seconds([2**22 + 12345]) == 0  # a process that doesn't exist counts nothing
    values = {"ceiling.pk.16.cpu_app_ms": [1.5, 1.7], "ceiling.pk.16.cpu_db_ms": [0.5, 0.3],
              "transfer.uniform.16.cpu_app_ms": [12.0, 12.0], "transfer.uniform.16.cpu_db_ms": [4.0, 4.0]}
    table = "\n".join(report.cpu_table("postgresql", values))
    assert ("| a whole transfer (GET form + POST) | 12.00 (12.00–12.00) | 4.00 (4.00–4.00) | 16.00 (16.00–16.00) "
            "| 8.00 (8.00–8.00) |") in table


def test_the_report_weighs_an_audit_hop_against_a_page_that_only_reads():
    """Does the report's analysis name the audit write as what a hop adds, with this run's CPU
    figures (the hop's and page 1's) on each backend?"""
    from bench import report

    values = {"page.hops.big.cpu_app_ms": [6.0, 6.5], "page.hops.big.cpu_db_ms": [1.5, 1.5],
              "page.transactions.big.cpu_app_ms": [4.0, 4.0], "page.transactions.big.cpu_db_ms": [0.5, 0.5]}
    text = "\n".join(report.analysis("postgresql", values, []))
    assert "A hop costs 7.75 ms of CPU against 4.50 ms for transactions page 1" in text
    assert "1.50 ms of the database server's CPU against 0.50 ms for page 1" in text
    assert "where SQLite runs" in "\n".join(report.analysis("sqlite", values, []))
    assert "Audit hops" not in "\n".join(report.analysis("postgresql", {}, []))


def test_the_report_shows_where_the_transfers_cpu_went(tmp_path):
    """Does the GIL-held profile of transfers reach the report, by library and with its busiest
    single functions, counted by function whatever the line?"""
    from bench import report
    from bench.run import busiest_functions, summarize_profile

    samples = tmp_path / "profile.txt"
    samples.write_text("handle (gunicorn/workers/gthread.py:553);get (sqlalchemy/util/_collections.py:502) 6\n"
                       "handle (gunicorn/workers/gthread.py:553);get (sqlalchemy/util/_collections.py:510) 2\n"
                       "handle (gunicorn/workers/gthread.py:553);dumps (itsdangerous/serializer.py:40) 2\n")
    top = busiest_functions([samples, tmp_path / "missing.txt"], count=2)
    assert top == [["get (sqlalchemy/util/_collections.py)", 80.0], ["dumps (itsdangerous/serializer.py)", 20.0]]
    notes = ["profile:transfer, GIL held:" + json.dumps(summarize_profile([samples])),
             "profile-top:transfer, GIL held:" + json.dumps(top)]
    values = {"transfer.uniform.16.rate": [100.0], "ceiling.db.16": [900.0], "ceiling.pk.16.rate": [800.0],
              "ceiling.text.16.rate": [2000.0]}
    text = "\n".join(report.analysis("postgresql", values, notes))
    assert "Counting only the samples in which a worker held the GIL" in text
    assert "SQLAlchemy ORM and core 80%" in text and "get (sqlalchemy/util/_collections.py) 80.0%" in text
    assert "held the GIL" not in "\n".join(report.analysis("postgresql", values, []))
    page = "\n".join(report.render_backend("postgresql", values, notes + ["ledger rows added: consistent"], {}))
    checks = page.split("### Checks after the run", 1)[1].split("###", 1)[0]
    assert "ledger rows added: consistent" in checks and "profile" not in checks
    assert "- transfer, GIL held, busiest functions: [[" in page


def test_each_clients_own_p50_shows_how_unevenly_the_clients_were_served(tmp_path, monkeypatch):
    """Does a wrk run keep each client's own p50 (one output file per wrk thread), and does the
    report turn the slowest over the fastest into its note on p50s at 16 clients?"""
    from bench import report
    from bench import run as bench_run

    sample = bench_run.Sample(1.0, {"get": [10.0, 11.0, 30.0, 31.0]}, {}, {}, 0,
                              client_p50s={"get": [10.0, 30.0]})
    assert sample.client_spread("get") == 3.0
    assert math.isnan(bench_run.Sample(1.0, {}, {}, {}, 0).client_spread("get"))

    monkeypatch.setattr(bench_run, "REPORTS", tmp_path)
    for n, lines in enumerate((["get 200 1 10.0", "get 200 1 30.0", "get 200 1 11.0"], ["get 200 1 40.0"]), 1):
        (tmp_path / f"wrk-t.out.{n}").write_text("\n".join(lines) + "\n")
    latencies, statuses, bad, client_p50s = bench_run.read_client_files("t")
    assert latencies == {"get": [10.0, 30.0, 11.0, 40.0]} and statuses == {"get": {"200": 4}} and bad == {}
    assert client_p50s == {"get": [11.0, 40.0]}
    results = bench_run.Results()
    parsed = bench_run.Sample(1.0, latencies, statuses, bad, 0, client_p50s=client_p50s)
    bench_run.record(results, "postgresql", "ceiling.pk.16", parsed, "get")
    assert results.values["postgresql"]["ceiling.pk.16.client_spread"] == [40.0 / 11.0]

    values = {"ceiling.pk.16.client_spread": [1.2, 1.8, 1.5], "page.dashboard.big.client_spread": [1.9],
              "page.hops.big.client_spread": [1.1], "page.dashboard.small.client_spread": [9.9]}
    text = "\n".join(report.analysis("postgresql", values, []))
    assert "The slowest client's p50 was 1.5 times the fastest one's on the PK route" in text
    assert "(median of the repetitions; 1.2 to 1.8) and 1.1 to 1.9 times on the pages" in text
    assert "split between the workers" not in "\n".join(report.analysis("postgresql", {}, []))
    sync_workers = "\n".join(report.analysis("sqlite", values, [], sync=True))
    assert "No client is tied to a worker" in sync_workers and "split between the workers" not in sync_workers
    assert "The slowest client's p50 was 1.5 times the fastest one's on the PK route" in sync_workers


def test_the_report_takes_the_durable_append_out_of_an_audit_hop():
    """With the append route measured, does the analysis say what a hop costs without the audit
    write (hop minus the append route's extra over the PK route, in PK routes), and compare the
    hop's p50 with the append route's? Does the CPU table list the append route?"""
    from bench import report

    values = {"page.hops.big.cpu_app_ms": [6.0], "page.hops.big.cpu_db_ms": [1.0],
              "page.transactions.big.cpu_app_ms": [4.0], "page.transactions.big.cpu_db_ms": [0.5],
              "ceiling.pk.16.cpu_app_ms": [1.5], "ceiling.pk.16.cpu_db_ms": [0.5],
              "ceiling.append.16.cpu_app_ms": [3.0], "ceiling.append.16.cpu_db_ms": [1.0],
              "page.hops.big.p50": [40.0], "ceiling.append.16.p50": [20.0]}
    text = "\n".join(report.analysis("postgresql", values, []))
    assert "The append alone (`/bench/audit-append`) costs 4.00 ms, 2.00 ms more than the PK route's" in text
    assert "without it, a hop would cost 2.50 PK routes (page 1: 2.25; with it: 3.50)" in text
    assert "a hop's p50 is 2.00 times the append route's" in text
    table = "\n".join(report.cpu_table("postgresql", values))
    assert "| one durable audit append (`AUDIT_VIEWED`), nothing else | 3.00 | 1.00 | 4.00 | 2.00 |" in table
    assert "audit-append" not in "\n".join(report.analysis("postgresql", {k: v for k, v in values.items()
                                                                          if "append" not in k}, []))


def test_the_report_says_what_page_200_pays_for_its_numbered_page():
    """Does the analysis put page 200's CPU beside page 1's for the same customer, name the
    difference as the stepping DESIGN.md's numbered pages require, in ms and in PK routes, and
    stay silent when the run lacks page 200?"""
    from bench import report

    values = {"page.page200.big.cpu_app_ms": [5.0], "page.page200.big.cpu_db_ms": [1.5],
              "page.transactions.big.cpu_app_ms": [4.0], "page.transactions.big.cpu_db_ms": [0.5],
              "ceiling.pk.16.cpu_app_ms": [1.5], "ceiling.pk.16.cpu_db_ms": [0.5]}
    text = "\n".join(report.analysis("postgresql", values, []))
    assert "it costs 6.50 ms of CPU against 4.50 ms for page 1" in text
    assert "1.50 ms of the database server's CPU against 0.50 ms" in text
    assert ("the stepping, page 200 less page 1 within each repetition, is 2.00 ms (median, min–max), 1.00 PK "
            "routes, and page 200 costs 3.25 PK routes against page 1's 2.25") in text
    assert "where SQLite runs" in "\n".join(report.analysis("sqlite", values, []))
    assert "Page 200" not in "\n".join(report.analysis("postgresql", {k: v for k, v in values.items()
                                                                       if "page200" not in k}, []))


def test_the_append_route_writes_one_chained_audit_row(database_url):
    """Does `/bench/audit-append` append exactly one AUDIT_VIEWED row, on the chain (verify
    passes), for an anonymous request?"""
    from sqlalchemy import func, select

    from app.audit.services import verify_chain
    from app.models import AuditLog

    bench = create_bench_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url})
    client = bench.test_client()
    with bench.app_context():
        before = db.session.scalar(select(func.count(AuditLog.id)))
    answer = client.get("/bench/audit-append")
    assert answer.status_code == 200 and answer.get_data(as_text=True) == "appended\n"
    with bench.app_context():
        rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).all()
        assert len(rows) == before + 1
        assert (rows[0].action, rows[0].details, rows[0].user_id) == ("AUDIT_VIEWED", '{"view":"bench"}', None)
        assert verify_chain(db.session).ok
    with bench.app_context():
        db.engine.dispose()


def test_a_figure_is_weighed_against_the_pk_runs_around_it():
    """When the run measured the PK route just before and after a figure (PkBracket), do the
    targets, the tables, the CPU ratios and the analysis use those runs instead of the
    repetition's ceiling run, which may lie minutes away (shown beside it in the targets); and
    without them, the ceiling run? Transfers at 1 and 4 clients keep their own ceilings."""
    from bench import report

    values = {"ceiling.pk.1.rate": [400.0], "ceiling.pk.4.rate": [800.0],
              "ceiling.pk.16.rate": [1000.0], "ceiling.pk.16.p50": [10.0],
              "ceiling.pk.16.cpu_app_ms": [2.0], "ceiling.pk.16.cpu_db_ms": [0.0],
              "transfer.uniform.1.rate": [40.0], "transfer.uniform.4.rate": [120.0],
              "transfer.uniform.16.rate": [100.0], "transfer.uniform.16.p50": [50.0], "transfer.uniform.16.p99": [60.0],
              "transfer.uniform.16.cpu_app_ms": [8.0], "transfer.uniform.16.cpu_db_ms": [0.0],
              "page.hops.big.p50": [40.0], "page.hops.small.p50": [40.0],
              "page.transactions.big.p50": [30.0], "page.transactions.small.p50": [30.0],
              "ceiling.floor.16.p50": [15.0], "ceiling.floor.16.rate": [900.0],
              "ceiling.append.16.rate": [800.0], "ceiling.append.16.p50": [20.0]}
    bracketed = values | {"transfer.uniform.16.pk.rate": [500.0], "transfer.uniform.16.pk.cpu_app_ms": [1.0],
                          "transfer.uniform.16.pk.cpu_db_ms": [0.0], "page.hops.big.pk.p50": [20.0],
                          "page.transactions.big.pk.p50": [15.0], "ceiling.floor.16.pk.p50": [5.0],
                          "ceiling.append.16.pk.p50": [4.0]}
    transfer_target = "| transfer (uniform, 16 clients) ≥ 0.40 x PK route |"
    assert f"{transfer_target} 0.20 | 0.20 | **not met** |" in report.targets(values, {})
    assert f"{transfer_target} 0.40 | 0.20 | **met** |" in report.targets(bracketed, {})
    hops_target = '| audit transactions, 100 rel="next" hops: ≤ 3 x PK route p50 |'
    assert f"{hops_target} 4.00 | 4.00 | **not met** |" in report.targets(values, {})
    assert f"{hops_target} 2.00 | 4.00 | **met** |" in report.targets(bracketed, {})
    transfer_row = "| a whole transfer (GET form + POST) | 8.00 | — | 8.00 |"
    assert f"{transfer_row} 4.00 |" in "\n".join(report.cpu_table("sqlite", values))
    assert f"{transfer_row} 8.00 |" in "\n".join(report.cpu_table("sqlite", bracketed))
    page = "\n".join(report.render_backend("sqlite", bracketed, [], {}))
    assert "| uniform | 1 | 40.0 |" in page and "| 0 | 0.20 |" in page   # 2 x 40 / 400, its own ceiling
    assert "| uniform | 4 | 120.0 |" in page and "| 0 | 0.30 |" in page  # 2 x 120 / 800
    assert "| 0 | 0.40 |" in page                                       # 16 clients: 2 x 100 / 500
    assert "| transactions, page 1 | 30.0 | 30.0 | 1.00 | 2.00 |" in page
    assert "÷ the PK route's p50: 3.00." in page                        # floor 15 / 5
    assert "÷ the PK route's p50: 5.00." in page                        # append 20 / 4
    assert "against the PK route's 5.0 ms" in "\n".join(report.analysis("sqlite", bracketed, []))


def test_the_pk_runs_around_a_figure_are_averaged():
    """Does a bracketed figure record the mean of the PK runs before and after it: rate, p50,
    and the app's and the database's CPU per request?"""
    from bench import run

    def pk_run(rate: float, p50: float, app_s: float, db_s: float, load_s: float, idle_s: float):
        answers = int(rate * 2)
        cpu = {"app": app_s, "db": db_s, "load": load_s, "idle": idle_s, "steal": 0.0, "machine": 4.0}
        return run.Sample(2.0, {"get": [p50] * answers}, {}, {}, 0, cpu)

    figures = run.bracket_figures(pk_run(100.0, 4.0, 0.2, 0.02, 0.4, 2.0), pk_run(300.0, 8.0, 1.2, 0.12, 0.6, 0.4))
    assert figures == pytest.approx({
        "rate": 200.0, "p50": 6.0, "cpu_app_ms": 1.5, "cpu_db_ms": 0.15, "cpu_load_ms": 1.5,
        # percent of the machine's 4.0 s: (5 + 30) / 2, (0.5 + 3) / 2, (10 + 15) / 2, (50 + 10) / 2
        "machine_app": 17.5, "machine_db": 1.75, "machine_load": 12.5, "machine_idle": 30.0, "machine_steal": 0.0,
        "machine_other": 100 - 17.5 - 1.75 - 12.5 - 30.0})


def test_the_load_tools_cpu_and_the_machines_idle_time_are_read_over_a_run():
    """Does the benchmark count a finished child's CPU (the load tool's, read once subprocess.run
    has waited for it), and read the whole machine's time from /proc/stat, idle and steal within
    the total, growing as time passes?"""
    import subprocess
    import sys
    import time

    from bench import run

    machine_before, load_before = run._machine_seconds(), run._children_cpu_seconds()
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    time.sleep(0.2)
    machine_after, load_after = run._machine_seconds(), run._children_cpu_seconds()
    assert load_after - load_before > 0.05
    assert machine_after["total"] - machine_before["total"] >= load_after - load_before
    for reading in (machine_before, machine_after):
        assert 0 <= reading["steal"] <= reading["total"] and 0 <= reading["idle"] <= reading["total"]


def test_the_machine_split_puts_what_no_measured_process_used_under_other():
    """Does machine_split give each part's share of the machine's time, with everything the app,
    the database, the load tool, idle and steal don't account for as "other", summing to 100%,
    and nothing for a run that read no machine time?"""
    from bench import run

    split = run.machine_split({"app": 1.2, "db": 0.3, "load": 0.2, "idle": 0.1, "steal": 0.04, "machine": 2.0})
    assert split == pytest.approx({"app": 60.0, "db": 15.0, "load": 10.0, "idle": 5.0, "steal": 2.0, "other": 8.0})
    assert sum(split.values()) == pytest.approx(100.0)
    assert run.machine_split({"app": 1.0, "db": 0.1}) == {}


def test_the_report_shows_where_the_machines_time_went_during_transfers():
    """Does the report show, for the transfers and the PK runs around them, each part's share of
    the machine and the load tool's CPU per operation, and say in the analysis how the transfer
    runs' split differs from the PK runs'?"""
    from bench import report

    values = {"ceiling.pk.16.cpu_app_ms": [2.0], "ceiling.pk.16.cpu_db_ms": [0.5],
              "transfer.uniform.16.rate": [100.0], "ceiling.db.16": [500.0], "ceiling.text.16.rate": [900.0],
              "transfer.uniform.16.pk.rate": [500.0]}
    for key, shares, load_ms in (("transfer.uniform.16", (70, 10, 12, 3, 5, 0), 1.25),
                                 ("transfer.uniform.16.pk", (78, 8, 6, 2, 6, 0), 0.31)):
        values |= {f"{key}.machine_{part}": [float(share)] for part, share in zip(report.MACHINE_COLUMNS, shares)}
        values[f"{key}.cpu_load_ms"] = [load_ms]
    table = "\n".join(report.machine_table("postgresql", values))
    assert "| a whole transfer (GET form + POST), uniform | 70.0 | 10.0 | 12.0 | 3.0 | 5.0 | 0.0 | 1.25 |" in table
    assert "| one PK SELECT (ORM), the runs around the uniform transfers | 78.0 | 8.0 | 6.0 | 2.0 | 6.0 | 0.0 | 0.31 |" in table
    analysis = "\n".join(report.analysis("postgresql", values, []))
    assert ("the app and the database had 80% of the machine's time against 86% in the PK runs around them; "
            "the load tool 12% against 6% (1.25 ms of its CPU per operation against 0.31)") in analysis
    assert report.machine_table("postgresql", {"ceiling.pk.16.cpu_app_ms": [2.0]}) == []


def test_the_pk_bracket_shares_a_run_only_between_adjacent_figures(monkeypatch, tmp_path):
    """Does PkBracket measure the PK route before and after each figure, and reuse the run
    after one figure as the run before the next only when nothing loaded the server between
    them (another wrk run, a sign-in), recording the mean of the two runs around each figure?"""
    from bench import run

    runs: list[str] = []
    lengths: set[int] = set()
    rates = iter([100.0, 300.0, 500.0, 700.0, 900.0, 1100.0, 1300.0])

    def fake_subprocess_run(command, cwd, env, **_):
        """wrk as run_wrk starts it: writes what bench/wrk/common.lua would, one client."""
        out = Path(env["BENCH_OUT"])
        path = Path(env["BENCH_CLIENTS"]).read_text().split("path=")[1].split()[0]
        runs.append(path)
        seconds = int(command[command.index("-d") + 1].rstrip("s"))
        lengths.add(seconds)
        answers = int(next(rates) * seconds) if path == "/bench/pk" else 10
        out.write_text(f"duration_us {seconds * 1_000_000}\nsocket_errors 0 0 0 0\nclosed 0\n")
        Path(f"{out}.1").write_text("get 200 1 5.0\n" * answers)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(run.subprocess, "run", fake_subprocess_run)
    monkeypatch.setattr(run, "REPORTS", tmp_path)

    class SignedIn:
        def __init__(self, server):
            self.cookie = "session=signed"

        def login(self, email, password):
            return type("Answer", (), {"status": 302, "body": ""})()

    monkeypatch.setattr(run, "Client", SignedIn)
    monkeypatch.setattr(run, "_cpu_now", lambda server: {"app": 0.0, "db": 0.0})

    class Server:
        port = 1

    def figure(path: str):
        return lambda: run.run_wrk(Server(), "page.lua", [{"path": path}], 2.0, path.strip("/"))

    results = run.Results()
    bracket = run.PkBracket(server=Server(), results=results, backend="sqlite", tag="t", duration=2.0)
    bracket.around("a", figure("/a"))
    bracket.around("b", figure("/b"))
    figure("/other")()
    bracket.around("c", figure("/c"))
    run.sign_in(Server(), "someone@example.com")   # an Argon2id verification on the server
    bracket.around("d", figure("/d"))
    assert runs == ["/bench/pk", "/a", "/bench/pk", "/b", "/bench/pk", "/other", "/bench/pk", "/c", "/bench/pk",
                    "/bench/pk", "/d", "/bench/pk"]
    assert lengths == {2}   # each PK run as long as the figure's: fixed costs weigh the same
    measured = results.values["sqlite"]
    assert (measured["a.pk.rate"], measured["b.pk.rate"], measured["c.pk.rate"], measured["d.pk.rate"]) == (
        [200.0], [400.0], [800.0], [1200.0])


def _synchronous(application) -> int:
    with application.app_context():
        value = db.session.execute(text("PRAGMA synchronous")).scalar_one()
        db.session.remove()
        db.engine.dispose()
    return value


def test_only_the_unsynced_diagnostic_server_commits_without_syncing(tmp_path, monkeypatch):
    """Does the benchmark's app keep the app's `synchronous = FULL` (2) on SQLite, and turn it
    off (0) only with BENCH_SQLITE_UNSYNCED=1, which it refuses on any other database?"""
    from bench.app import UNSYNCED_SETTING

    settings = {"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'sync.db'}"}
    monkeypatch.delenv(UNSYNCED_SETTING, raising=False)
    assert _synchronous(create_bench_app(settings)) == 2
    assert _synchronous(create_app(settings)) == 2
    monkeypatch.setenv(UNSYNCED_SETTING, "1")
    assert _synchronous(create_bench_app(settings)) == 0
    assert _synchronous(create_app(settings)) == 2  # the production factory never reads it
    with pytest.raises(ConfigurationError):
        create_bench_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://nobody@127.0.0.1:1/none"})


def _transfer_figures(ratio: float, ratio_unsynced: float) -> dict:
    values = {"transfer.uniform.16.rate": [100.0], "transfer.uniform.16.pk.rate": [200.0 / ratio],
              "transfer.uniform.16.cpu_app_ms": [20.0], "transfer.uniform.16.machine_idle": [12.0],
              "transfer.uniform.16.machine_steal": [30.0], "transfer.uniform.unsynced.16.machine_steal": [10.0],
              "transfer.uniform.unsynced.16.rate": [130.0],
              "transfer.uniform.unsynced.16.pk.rate": [260.0 / ratio_unsynced],
              "transfer.uniform.unsynced.16.cpu_app_ms": [15.0], "transfer.uniform.unsynced.16.machine_idle": [4.0],
              "ceiling.db.16": [500.0], "ceiling.text.16.rate": [900.0]}
    return values


def test_the_report_prices_sqlites_durable_commit_from_the_unsynced_run():
    """With the unsynced transfers measured, does the SQLite analysis compare them with the synced
    ones (rate, ratio, CPU, idle), say the sync is the bound when only the unsynced run meets the
    target, and otherwise how much of the distance to it the sync accounts for? Does the
    transfers table show the run as a measurement, and does a run without it say nothing?"""
    from bench import report

    bound = "\n".join(report.analysis("sqlite", _transfer_figures(0.30, 0.45), []))
    assert ("made 130.0 transfers/s against 100.0: 2 x transfers/s ÷ PK route 0.45 against 0.30, 15.00 ms of the "
            "app's CPU per transfer against 20.00, the machine idle 4% against 12% and stolen by the hypervisor 10% "
            "against 30%.") in bound
    assert "Without the wait for the disk the target (0.40) is met" in bound
    partial_share = "\n".join(report.analysis("sqlite", _transfer_figures(0.30, 0.35), []))
    assert "The sync accounts for 50% of the distance to the target (0.40)" in partial_share
    assert "Without the wait for the disk" not in partial_share
    table = "\n".join(report.render_backend("sqlite", _transfer_figures(0.30, 0.35), [], {}))
    assert "| uniform, commits not synced (a measurement only: bench/app.py) | 16 | 130.0 |" in table
    without = {k: v for k, v in _transfer_figures(0.30, 0.35).items() if "unsynced" not in k}
    assert "durable commit" not in "\n".join(report.analysis("sqlite", without, []))
    assert "not synced" not in "\n".join(report.render_backend("sqlite", without, [], {}))
