"""The concurrency proof (issue 4, DESIGN.md section 3): the app under gunicorn with four worker
processes, 32 client threads firing a few thousand transfers at once, on SQLite and PostgreSQL.

Set-up writes the customers and accounts straight to a freshly migrated database: 8 customers
with 4 logged-in sessions (threads) each; 5 "hot" accounts that nearly every transfer touches,
in both directions, and 16 cold ones. Each thread runs its own pre-planned list of transfers:
hot→hot external transfers, internal moves between a customer's hot and cold accounts, cold→hot
and hot→cold external transfers, exact-balance drains (the amount is the source's balance as read
just before sending) and repeats of the same idempotency key — once in a row by one thread, and
once from two threads of the same customer at about the same time.

Then: no response was a 500 (or anything but a redirect or a refusal page); the sum of all
balances is unchanged and none is negative; every transfer reported successful has exactly one
debit, one credit and one TRANSFER_CREATED row, and there are no others; every refused one left
no ledger row and one TRANSFER_FAILED row; an idempotency key moved money at most once;
`flask verify-ledger` and `flask verify-audit` pass. The figures (attempted, succeeded, refused by
reason, replays, retries counted in gunicorn's log, wall time) are printed and written to
reports/concurrency-<backend>.txt.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from sqlalchemy import create_engine, func, select

from app.extensions import db
from app.models import Account, AuditLog, Transaction
from tests import factories
from tests.e2e.multiprocess_support import (
    REPO,
    WORKERS,
    Client,
    csrf_token_from,
    flask_command,
    gunicorn_server,
    local_app,
    migrated_database,
    run_only_in_its_pass,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS = 8
THREADS_PER_CUSTOMER = 4  # 32 client threads
JOBS_PER_THREAD = 54  # plus the repeats: about 2,000 transfer requests in all
HOT_ACCOUNTS = 5
HOT_BALANCE = Decimal("1000.00")
COLD_BALANCE = Decimal("500.00")
COLD_PER_CUSTOMER = 2
SEED = 20240404
DRAIN = "drain"
REFERENCE = re.compile(r"Transfer complete\. Reference (TX-[0-9A-F]{16})\.")
REFUSALS = {
    "Insufficient funds in the source account.": "InsufficientFunds",
    "The bank is busy right now. Nothing was changed; please try again.": "Busy",
}


@dataclass
class Job:
    """One transfer request as planned: `amount` is a Decimal or DRAIN (the balance at send time)."""

    kind: str  # "internal" or "external"
    source_id: int
    target: int | str  # internal: the target account id; external: its 12-digit number
    amount: Decimal | str
    key: str
    tag: str


@dataclass
class Outcome:
    key: str
    tag: str
    status: int
    result: str  # "success", "replay", "refused", "error"
    detail: str = ""
    reference: str = ""


@dataclass
class Setup:
    customers: list
    hot: list
    cold: dict  # customer index -> [accounts]
    plans: list[list[Job]] = field(default_factory=list)  # one per thread
    thread_customer: list[int] = field(default_factory=list)


def _amount(rng: random.Random, low: str = "0.01", high: str = "60.00") -> Decimal:
    cents = rng.randint(int(Decimal(low) * 100), int(Decimal(high) * 100))
    return Decimal(cents) / 100


def _arrange(app) -> Setup:
    """Customers, accounts and every thread's transfer plan (idempotency keys minted here)."""
    from app.banking.services import new_idempotency_key

    rng = random.Random(SEED)
    with app.app_context():
        customers = [factories.make_user("customer") for _ in range(CUSTOMERS)]
        hot = [factories.make_account(customers[i], HOT_BALANCE) for i in range(HOT_ACCOUNTS)]
        cold = {i: [factories.make_account(c, COLD_BALANCE, type="savings") for _ in range(COLD_PER_CUSTOMER)]
                for i, c in enumerate(customers)}
        setup = Setup(customers, hot, cold)

        def plan_one(c: int, tag: str | None = None) -> Job:
            own_hot = hot[c] if c < HOT_ACCOUNTS else None
            own_cold = cold[c]
            other_hot = [a for a in hot if a is not own_hot]
            other_cold = [a for i, accounts in cold.items() if i != c for a in accounts]
            key = new_idempotency_key(customers[c].id)
            choice = tag or rng.choices(["hot_ext", "internal", "cold_ext", DRAIN], [47, 25, 18, 10])[0]
            if choice == "hot_ext":  # hot -> hot (customers without a hot account send from a cold one)
                source = own_hot or rng.choice(own_cold)
                return Job("external", source.id, rng.choice(other_hot).account_number, _amount(rng), key, choice)
            if choice == "internal":  # a customer's hot <-> cold (or cold <-> cold), either way
                pair = [own_hot, rng.choice(own_cold)] if own_hot else list(own_cold)
                rng.shuffle(pair)
                return Job("internal", pair[0].id, pair[1].id, _amount(rng), key, choice)
            if choice == "cold_ext":  # cold -> someone's hot, or hot -> someone's cold
                if own_hot and rng.random() < 0.5:
                    return Job("external", own_hot.id, rng.choice(other_cold).account_number, _amount(rng), key, choice)
                return Job("external", rng.choice(own_cold).id, rng.choice(other_hot).account_number,
                           _amount(rng, high="40.00"), key, choice)
            # An exact-balance drain of the customer's busiest account, to another hot account.
            source = own_hot or rng.choice(own_cold)
            return Job("external", source.id, rng.choice(other_hot).account_number, DRAIN, key, DRAIN)

        plans: list[list[Job]] = [[] for _ in range(CUSTOMERS * THREADS_PER_CUSTOMER)]
        setup.thread_customer = [t // THREADS_PER_CUSTOMER for t in range(len(plans))]
        for _ in range(JOBS_PER_THREAD):
            for t, plan in enumerate(plans):
                c = setup.thread_customer[t]
                roll = rng.random()
                if roll < 0.08:  # the same request twice in a row (a double click)
                    job = plan_one(c)
                    job.tag = "repeat"
                    plan.extend([job, job])
                elif roll < 0.18:  # the same request from two sessions of the customer at once
                    job = plan_one(c, "hot_ext")
                    job.tag = "twin"
                    sibling = rng.choice([s for s in range(len(plans)) if setup.thread_customer[s] == c and s != t])
                    plan.append(job)
                    plans[sibling].append(job)
                else:
                    plan.append(plan_one(c))
        setup.plans = plans
    return setup


def _login_for_transfers(client: Client, email: str) -> str:
    """Log in, then open the transfer form so the session holds its CSRF token; returns the
    token. The client's cookie after this is the one every transfer of the thread sends."""
    answer = client.login(email, factories.DEFAULT_PASSWORD)
    assert answer.status == 302 and answer.location.endswith("/banking/dashboard"), (answer.status, answer.body[:500])
    form = client.get("/banking/transfer/external")
    assert form.status == 200, form.status
    return csrf_token_from(form.body)


class Runner:
    """Runs every thread's plan against the server and records each request's outcome."""

    def __init__(self, server, app, setup: Setup, database_url: str) -> None:
        self.server, self.setup = server, setup
        self.serializer = app.session_interface.get_signing_serializer(app)
        self.reader = create_engine(database_url, pool_size=4, max_overflow=0)  # drains read balances
        self.outcomes: list[Outcome] = []
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.start = threading.Barrier(len(setup.plans) + 1)
        self.login_seconds = 0.0

    def balance(self, account_id: int) -> Decimal:
        with self.reader.connect() as connection:
            return connection.execute(select(Account.balance).where(Account.id == account_id)).scalar_one()

    def classify(self, job: Job, response) -> Outcome:
        if response.status == 302:
            flashes = []
            if "session" in response.set_cookies:
                flashes = self.serializer.loads(response.set_cookies["session"]).get("_flashes", [])
            messages = " ".join(message for _, message in flashes)
            if match := REFERENCE.search(messages):
                return Outcome(job.key, job.tag, 302, "success", reference=match.group(1))
            if "already made" in messages:
                return Outcome(job.key, job.tag, 302, "replay")
            return Outcome(job.key, job.tag, 302, "error", f"redirect to {response.location} with {flashes!r}")
        if response.status == 400:
            for message, reason in REFUSALS.items():
                if message in response.body:
                    return Outcome(job.key, job.tag, 400, "refused", reason)
            alerts = re.findall(r'class="alert alert-danger"[^>]*>([^<]*)<', response.body)
            return Outcome(job.key, job.tag, 400, "error", f"unexpected refusal {alerts!r}")
        return Outcome(job.key, job.tag, response.status, "error", response.body[:300])

    def run_thread(self, index: int) -> None:
        records: list[Outcome] = []
        try:
            customer = self.setup.customers[self.setup.thread_customer[index]]
            client = Client(self.server)
            token = _login_for_transfers(client, customer.email)
        except Exception as exc:  # noqa: BLE001 - reported by the test, never lost in a thread
            with self.lock:
                self.failures.append(f"thread {index} could not log in: {exc!r}")
            self.start.abort()
            return
        try:
            self.start.wait()
            for job in self.setup.plans[index]:
                amount = job.amount
                if amount == DRAIN:
                    amount = self.balance(job.source_id)
                    amount = amount if amount > 0 else Decimal("0.01")
                path = f"/banking/transfer/{job.kind}"
                fields = {"csrf_token": token, "source_account": str(job.source_id), "amount": f"{amount:.2f}",
                          "description": job.tag, "idempotency_key": job.key}
                fields["target_account" if job.kind == "internal" else "target_account_number"] = str(job.target)
                try:
                    response = client.post(path, fields, keep_cookie=False)
                except OSError as exc:
                    records.append(Outcome(job.key, job.tag, 0, "error", repr(exc)))
                    continue
                records.append(self.classify(job, response))
        except Exception as exc:  # noqa: BLE001
            with self.lock:
                self.failures.append(f"thread {index} stopped: {exc!r}")
        finally:
            with self.lock:
                self.outcomes.extend(records)

    def run(self) -> float:
        """Log every thread in, then start their transfers together; returns the wall time of
        the transfer phase in seconds (the log-in phase's is left in `login_seconds`)."""
        threads = [threading.Thread(target=self.run_thread, args=(i,), name=f"client-{i}")
                   for i in range(len(self.setup.plans))]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            self.start.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        self.login_seconds = time.monotonic() - started
        started = time.monotonic()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        self.reader.dispose()
        return elapsed


def _ledger_state(app) -> dict:
    """Balances, transfer ledger rows and transfer audit rows, read after the run."""
    with app.app_context():
        balances = dict(db.session.execute(select(Account.id, Account.balance)).all())
        rows = db.session.execute(
            select(Transaction.reference, Transaction.type, Transaction.idempotency_key, Transaction.account_id,
                   Transaction.amount).where(Transaction.reference.like("TX-%"))
        ).all()
        audits = db.session.execute(
            select(AuditLog.action, AuditLog.details)
            .where(AuditLog.action.in_(["TRANSFER_CREATED", "TRANSFER_FAILED"]))
        ).all()
        deposits = db.session.scalar(select(func.count(Transaction.id)).where(Transaction.reference.like("DP-%")))
        db.session.rollback()
    return {"balances": balances, "rows": rows, "audits": audits, "deposits": deposits}


def _summary(command) -> str:
    """The first line a flask command printed, and how many more lines there were."""
    lines = (command.stdout + command.stderr).strip().splitlines() or ["(no output)"]
    more = f" (+{len(lines) - 1} more lines)" if len(lines) > 1 else ""
    return lines[0][:300] + more


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    run_only_in_its_pass(request.config, request.param)
    return request.param


def test_concurrent_transfers_across_four_workers(backend, tmp_path):
    """Under 4 gunicorn workers and 32 concurrent clients, do a few thousand transfers among hot
    accounts (drains and repeated idempotency keys included) keep every invariant: no 500, the
    total unchanged, nothing negative, one debit + one credit + one TRANSFER_CREATED per success
    and nothing for a refusal, each key used at most once, verify-ledger and verify-audit clean?"""
    began = time.monotonic()
    with migrated_database(backend, tmp_path) as database_url:
        app = local_app(database_url)
        try:
            setup = _arrange(app)
            before = _ledger_state(app)
            with gunicorn_server(database_url, tmp_path, RATELIMIT_ENABLED="false") as server:
                runner = Runner(server, app, setup, database_url)
                ready = time.monotonic() - began
                wall = runner.run()
                worker_pids = server.worker_pids("POST", "/banking/transfer/external")
            log = server.stderr()
            after = _ledger_state(app)
            ledger = flask_command(server.env, "verify-ledger")
            audit = flask_command(server.env, "verify-audit")
        finally:
            with app.app_context():
                db.engine.dispose()
    total = time.monotonic() - began

    outcomes = runner.outcomes
    results = Counter(o.result for o in outcomes)
    refusals = Counter(o.detail for o in outcomes if o.result == "refused")
    statuses = Counter(o.status for o in outcomes)
    retries = Counter(re.findall(r"transfer retried after (.+?) \(attempt \d+\)", log))
    successes = {o.reference: o for o in outcomes if o.result == "success"}
    figures = [
        f"Concurrency proof on {backend}: gunicorn {WORKERS} workers, {len(setup.plans)} client threads",
        f"transfers attempted: {len(outcomes)} "
        f"(planned {sum(len(p) for p in setup.plans)}; tags {dict(sorted(Counter(o.tag for o in outcomes).items()))})",
        f"succeeded: {results['success']}",
        f"refused: {results['refused']} {dict(sorted(refusals.items()))}",
        f"replays (same idempotency key, moved nothing): {results['replay']}",
        f"retried (WARNING lines in gunicorn's stderr): {sum(retries.values())} {dict(sorted(retries.items()))}",
        f"errors (unexpected answers): {results['error']}",
        f"HTTP statuses: {dict(sorted(statuses.items()))}",
        f"workers that served transfers: {len(worker_pids)}",
        f"wall time of the transfer phase: {wall:.1f} s ({len(outcomes) / wall:.0f} requests/s)",
        f"whole test: {total:.0f} s (database, data and 4 workers ready in {ready:.0f} s; "
        f"{len(setup.plans)} log-ins {runner.login_seconds:.0f} s; then transfers, checks and the verify commands)",
        f"sum of balances: before {sum(before['balances'].values())}, after {sum(after['balances'].values())}",
        f"verify-ledger exit {ledger.returncode}: {_summary(ledger)}",
        f"verify-audit exit {audit.returncode}: {_summary(audit)}",
    ]
    report = "\n".join(figures) + "\n"
    print("\n" + report)
    (REPO / "reports").mkdir(exist_ok=True)
    (REPO / "reports" / f"concurrency-{backend}.txt").write_text(report, encoding="utf-8")

    # The run itself: every thread ran, nothing answered 500 or anything but a redirect / refusal page.
    assert not runner.failures, runner.failures
    assert len(outcomes) == sum(len(p) for p in setup.plans)
    assert statuses[500] == 0, "a transfer answered 500"
    errors = [o for o in outcomes if o.result == "error"]
    assert not errors, errors[:5]
    assert len(worker_pids) >= WORKERS, f"transfers were served by {len(worker_pids)} workers"
    # It really was contended: drains, refusals and replays all happened.
    assert results["success"] > 500 and refusals["InsufficientFunds"] > 0 and results["replay"] > 0

    # Money is neither created nor destroyed, and no balance went below zero.
    assert sum(after["balances"].values()) == sum(before["balances"].values())
    assert min(after["balances"].values()) >= 0
    assert after["deposits"] == before["deposits"]

    # Exactly one debit, one credit and one TRANSFER_CREATED per success; none for anything else.
    entries = Counter((reference, kind) for reference, kind, *_ in after["rows"])
    for reference in successes:
        assert entries[(reference, "debit")] == 1 and entries[(reference, "credit")] == 1, reference
    assert len(after["rows"]) == 2 * len(successes), "ledger rows that no reported success accounts for"
    created = Counter(json.loads(details).get("reference") for action, details in after["audits"]
                      if action == "TRANSFER_CREATED")
    assert created == Counter(successes.keys()), "TRANSFER_CREATED rows do not match the successful transfers"
    failed = sum(1 for action, _ in after["audits"] if action == "TRANSFER_FAILED")
    assert failed == results["refused"], "every refusal is audited once (and replays are not refusals)"

    # Each idempotency key moved money at most once; keys that never succeeded left no ledger row.
    succeeded_keys = Counter(o.key for o in successes.values())
    assert max(succeeded_keys.values()) == 1
    debit_keys = Counter(key for _, kind, key, *_ in after["rows"] if kind == "debit")
    assert debit_keys == succeeded_keys

    assert ledger.returncode == 0, ledger.stdout + ledger.stderr
    assert audit.returncode == 0, audit.stdout + audit.stderr
