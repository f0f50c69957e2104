"""Concurrent money movements on the suite's database: a SQLite file, or a PostgreSQL database in
the PostgreSQL run (DESIGN.md section 3; issue 2 item 9, issue 4 item 2).

Each thread gets its own application context, hence its own SQLAlchemy session and connection,
and all threads are released together by a barrier so their reads and writes overlap. A naive
read-check-write implementation oversells (or, on SQLite, fails with "database is locked") under
this test; the conditional updates — inside BEGIN IMMEDIATE transactions on SQLite, holding row
locks at READ COMMITTED on PostgreSQL — must give exact results.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.audit.services import verify_chain
from app.auth import mfa
from app.auth import services as auth_services
from app.banking import services
from app.errors import DomainError
from app.extensions import db
from app.models import Account, AuditLog, LoginAttempt, Transaction, User
from tests.factories import issued_key

THREADS = 20
JOIN_TIMEOUT_SECONDS = 60


def _run_together(app, user_id: int, count: int, action: Callable[[User, int], object]) -> list[str]:
    """Run `action(actor, index)` in `count` threads released together by a barrier, each in its
    own app context (own session). Returns "ok" or the exception's class name per thread."""
    barrier = threading.Barrier(count)
    outcomes: list[str] = ["not run"] * count

    def worker(index: int) -> None:
        with app.app_context():
            try:
                actor = db.session.get(User, user_id)
                db.session.commit()
                barrier.wait(timeout=JOIN_TIMEOUT_SECONDS)
                action(actor, index)
                outcomes[index] = "ok"
            except DomainError as exc:
                outcomes[index] = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - reported in the assertion, never lost
                outcomes[index] = f"unexpected {type(exc).__name__}: {exc}"
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,), name=f"transfer-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return outcomes


def _balances(app) -> dict[int, Decimal]:
    with app.app_context():
        return dict(db.session.execute(select(Account.id, Account.balance)).all())


def _actions(app) -> Counter:
    with app.app_context():
        return Counter(db.session.scalars(select(AuditLog.action)))


def _ledger_and_chain_ok(app) -> None:
    with app.app_context():
        ledger = services.verify_ledger()
        chain = verify_chain(db.session)
    assert ledger.ok, ledger.problems
    assert chain.ok, chain.reason


@pytest.mark.parametrize("kind", ["external", "internal"])
def test_twenty_concurrent_withdrawals_of_ten_from_one_hundred(app, customer, other_customer, make_account, kind):
    """With 20 threads each sending 10.00 from an account holding 100.00 at the same moment, do
    exactly 10 succeed and 10 fail for insufficient funds (never busy/locked), leaving 0.00, a
    consistent ledger and an unbroken audit chain?"""
    source = make_account(customer, "100.00")
    target = make_account(customer if kind == "internal" else other_customer, "0.00")
    keys = [issued_key(app, customer.id) for _ in range(THREADS)]

    def withdraw(actor: User, index: int) -> None:
        if kind == "internal":
            services.transfer_internal(actor, actor.id, source.id, target.id, Decimal("10.00"), f"t{index}", keys[index])
        else:
            services.transfer_external(actor, actor.id, source.id, target.account_number, Decimal("10.00"),
                                       f"t{index}", keys[index])

    outcomes = _run_together(app, customer.id, THREADS, withdraw)

    assert Counter(outcomes) == {"ok": 10, "InsufficientFundsError": 10}, outcomes
    balances = _balances(app)
    assert balances[source.id] == Decimal("0.00")
    assert balances[target.id] == Decimal("100.00")
    actions = _actions(app)
    assert actions["TRANSFER_CREATED"] == 10 and actions["TRANSFER_FAILED"] == 10
    with app.app_context():
        debits = db.session.scalar(select(func.count(Transaction.id)).where(Transaction.type == "debit"))
    assert debits == 10
    _ledger_and_chain_ok(app)


def test_same_idempotency_key_from_several_threads_moves_money_once(app, customer, other_customer, make_account):
    """When the same form (one idempotency key) is submitted by 8 threads at once, does the money
    move exactly once, with every other submission told it was already made?"""
    source = make_account(customer, "100.00")
    target = make_account(other_customer, "0.00")
    key = issued_key(app, customer.id)

    def submit(actor: User, _index: int) -> None:
        services.transfer_external(actor, actor.id, source.id, target.account_number, Decimal("10.00"), "once", key)

    outcomes = _run_together(app, customer.id, 8, submit)

    assert Counter(outcomes) == {"ok": 1, "DuplicateTransferError": 7}, outcomes
    balances = _balances(app)
    assert balances[source.id] == Decimal("90.00") and balances[target.id] == Decimal("10.00")
    actions = _actions(app)
    assert actions["TRANSFER_CREATED"] == 1 and actions["TRANSFER_FAILED"] == 0
    _ledger_and_chain_ok(app)


def test_opposite_transfers_at_once_neither_deadlock_nor_lose_money(app, customer, other_customer, make_account):
    """Do 10 transfers A→B and 10 transfers B→A released together all complete, leaving both
    balances where they started?"""
    alice_account = make_account(customer, "50.00")
    bob_account = make_account(other_customer, "50.00")
    keys = [issued_key(app, customer.id if index % 2 == 0 else other_customer.id) for index in range(THREADS)]
    accounts = {customer.id: (alice_account, bob_account), other_customer.id: (bob_account, alice_account)}
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = ["not run"] * THREADS

    def worker(index: int) -> None:
        owner_id = customer.id if index % 2 == 0 else other_customer.id
        source, target = accounts[owner_id]
        with app.app_context():
            try:
                actor = db.session.get(User, owner_id)
                db.session.commit()
                barrier.wait(timeout=JOIN_TIMEOUT_SECONDS)
                services.transfer_external(actor, owner_id, source.id, target.account_number, Decimal("1.00"), "",
                                           keys[index])
                outcomes[index] = "ok"
            except Exception as exc:  # noqa: BLE001
                outcomes[index] = f"{type(exc).__name__}: {exc}"
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT_SECONDS)

    assert outcomes == ["ok"] * THREADS, outcomes
    balances = _balances(app)
    assert balances[alice_account.id] == balances[bob_account.id] == Decimal("50.00")
    _ledger_and_chain_ok(app)


def test_concurrent_account_openings_respect_the_limit(app, customer):
    """When 10 openings for one customer race, do exactly MAX_ACCOUNTS_PER_CUSTOMER (5) succeed?"""

    def open_one(actor: User, _index: int) -> None:
        services.open_account(actor, "savings", Decimal("1.00"))

    outcomes = _run_together(app, customer.id, 10, open_one)

    assert Counter(outcomes) == {"ok": 5, "LimitExceededError": 5}, outcomes
    with app.app_context():
        numbers = list(db.session.scalars(select(Account.account_number).where(Account.owner_id == customer.id)))
    assert len(numbers) == len(set(numbers)) == 5
    _ledger_and_chain_ok(app)


# --- the sign-in throttle under simultaneous attempts -------------------------------------

WRONG_PASSWORD = "certainly not the password"
NEW_PASSWORD = "violet harbour lanterns drift 2031"
ATTACKER_IP = "203.0.113.9"
# Long enough that every thread is inside its secret's check before the first one finishes it:
# the window in which a throttle that counts before it records lets every attempt through.
CHECK_SECONDS = 0.3


def _enrol(app, user_id: int) -> None:
    """Turn two-step sign-in on for the user, with a fresh key and its current code."""
    with app.app_context():
        user = db.session.get(User, user_id)
        secret = mfa.new_secret()
        auth_services.enrol_mfa(user, secret, mfa.code_at(secret, int(time.time()) // 30))


def _sign_in_attempts():
    """(name, failure raised by a wrong secret, enrol first, attempt(actor, index)) for each place
    a secret is checked against the throttle (DESIGN.md section 5)."""
    return [
        ("password", "InvalidCredentialsError", False,
         lambda actor, _i: auth_services.authenticate(actor.email, WRONG_PASSWORD, ATTACKER_IP)),
        ("current password", "WrongPasswordError", False,
         lambda actor, _i: auth_services.change_password(actor, WRONG_PASSWORD, NEW_PASSWORD, ATTACKER_IP)),
        ("code", "MfaCodeError", True,
         lambda actor, _i: auth_services.complete_mfa_sign_in(actor.id, actor.session_token, "000000", ATTACKER_IP)),
        ("password to turn codes off", "WrongPasswordError", True,
         lambda actor, _i: auth_services.disable_mfa(actor, WRONG_PASSWORD, ATTACKER_IP)),
    ]


@pytest.mark.parametrize(("name", "failure", "enrolled", "attempt"), _sign_in_attempts(),
                         ids=[entry[0] for entry in _sign_in_attempts()])
def test_simultaneous_wrong_secrets_are_checked_exactly_five_times(app, customer, monkeypatch, name, failure,
                                                                   enrolled, attempt):
    """When 20 wrong secrets for one user arrive at the same moment, each check slowed to 0.3 s,
    are exactly 5 of them checked (LOGIN_MAX_FAILURES_PER_EMAIL) and the other 15 refused as
    throttled, with the 5 on record as failures? A throttle that counts the failures before the
    check and records them after lets all 20 through; one whose counts aren't serialized with
    the claims checks fewer or more than 5 (OWASP ASVS 4.0.3 2.2.1)."""
    if enrolled:
        _enrol(app, customer.id)
    verify_password, matching_step = auth_services.verify_password, mfa.matching_step

    def slow_password_check(stored_hash: str, password: str) -> bool:
        time.sleep(CHECK_SECONDS)
        return verify_password(stored_hash, password)

    def slow_code_check(secret: str, code: str, now: float | None = None) -> int | None:
        time.sleep(CHECK_SECONDS)
        return matching_step(secret, code, now)

    monkeypatch.setattr(auth_services, "verify_password", slow_password_check)
    monkeypatch.setattr(mfa, "matching_step", slow_code_check)

    outcomes = _run_together(app, customer.id, THREADS, attempt)

    counts = Counter(outcomes)
    checked = counts[failure]
    assert checked == 5, f"{checked} wrong {name}s were checked: {outcomes}"
    assert counts["LoginThrottledError"] == THREADS - checked, outcomes
    with app.app_context():
        recorded = db.session.scalar(select(func.count(LoginAttempt.id)).where(LoginAttempt.email == customer.email))
    assert recorded == checked, "a refused attempt must leave no failure behind, a checked one must"
    actions = _actions(app)
    assert actions["LOGIN_FAILURE"] + actions["MFA_FAILURE"] == checked
    assert actions["LOGIN_THROTTLED"] == THREADS - checked
    _ledger_and_chain_ok(app)
