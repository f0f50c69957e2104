"""`flask verify-ledger`: the money invariants of DESIGN.md section 2, checkable at any time."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from app.banking import services
from app.extensions import db
from app.models import Account, Transaction, User, utcnow
from tests.conftest import MIGRATIONS, build_app
from tests.databases import AUDIT_TRIGGERS, LEDGER_TRIGGERS, drop_ledger_triggers, table_triggers


@pytest.fixture
def after_transfers(app, customer, other_customer, make_account):
    """Three accounts with opening deposits and a few internal and external transfers between them."""
    checking = make_account(customer, "500.00")
    savings = make_account(customer, "0.00", type="savings")
    theirs = make_account(other_customer, "25.00")
    with app.app_context():
        alice = db.session.get(User, customer.id)
        bob = db.session.get(User, other_customer.id)
        services.transfer_internal(alice, alice.id, checking.id, savings.id, Decimal("120.50"), "save",
                                   services.new_idempotency_key(alice.id))
        services.transfer_external(alice, alice.id, checking.id, theirs.account_number, Decimal("79.50"), "dinner",
                                   services.new_idempotency_key(alice.id))
        services.transfer_external(bob, bob.id, theirs.id, checking.account_number, Decimal("0.01"), "cent",
                                   services.new_idempotency_key(bob.id))
    return checking, savings, theirs


def test_verify_ledger_passes_after_transfers(runner, after_transfers):
    """Does verify-ledger exit 0 and report matching totals after a series of transfers?"""
    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code == 0, result.output
    assert "Ledger consistent: 3 accounts" in result.output
    assert "balances total 52500 cents = deposits 52500 cents" in result.output
    assert "3 transfers and every opening deposit match their audit rows" in result.output


def test_verify_ledger_fails_when_a_balance_is_changed_behind_the_ledger(app, runner, after_transfers):
    """Does verify-ledger exit non-zero, naming the account, when raw SQL changes a balance?"""
    checking, _, _ = after_transfers
    with app.app_context():
        db.session.execute(text("UPDATE account SET balance = balance + 1 WHERE id = :id"), {"id": checking.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert f"account {checking.id}: balance" in result.output
    assert "differs from deposits" in result.output


def test_verify_ledger_fails_when_money_moves_between_balances_without_ledger_rows(app, runner, after_transfers):
    """Is a balance shift that keeps the grand total (one account up, another down) still caught?"""
    checking, savings, _ = after_transfers
    with app.app_context():
        db.session.execute(text("UPDATE account SET balance = balance - 100 WHERE id = :id"), {"id": checking.id})
        db.session.execute(text("UPDATE account SET balance = balance + 100 WHERE id = :id"), {"id": savings.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert f"account {checking.id}" in result.output and f"account {savings.id}" in result.output


def test_verify_ledger_fails_on_a_debit_without_its_credit(app, runner, after_transfers):
    """Is a transfer whose credit row vanished (and its balance reverted) reported?"""
    _, savings, _ = after_transfers
    with app.app_context():
        drop_ledger_triggers(db.session)  # as someone holding the schema owner's rights would
        db.session.execute(text(
            "DELETE FROM \"transaction\" WHERE type = 'credit' AND account_id = :id AND description = 'save'"
        ), {"id": savings.id})
        db.session.execute(text("UPDATE account SET balance = 0 WHERE id = :id"), {"id": savings.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert "debit without a matching credit" in result.output


# --- the ledger against the audit trail (verify_ledger's _audit_cross_check) ---


def _write_behind_the_app(app, rows, *, credits: dict[int, str]) -> None:
    """Add ledger `rows` (Transaction objects) and raise each balance in `credits` ({account id:
    amount}) by its amount, with SQL and without an audit row, as someone with write access to
    the tables but not to the application would."""
    with app.app_context():
        db.session.add_all(rows)
        for account_id, amount in credits.items():
            db.session.execute(text("UPDATE account SET balance = balance + :cents WHERE id = :id"),
                               {"cents": int(Decimal(amount) * 100), "id": account_id})  # stored in cents
        db.session.commit()


def _balance_problems(app) -> list[str]:
    """What verify_ledger reports with the audit cross-check left out: the balance checks only."""
    with app.app_context():
        return [p for p in services.verify_ledger().problems if "audit row" not in p and "opening deposit" not in p]


def test_verify_ledger_fails_on_a_deposit_no_account_opening_recorded(app, runner, customer, after_transfers):
    """Is money printed as a second opening deposit, with its balance raised to match, caught?
    Every balance check passes on it (the balance equals the ledger, the total equals the
    deposits); only the ACCOUNT_CREATED row, which records a 0.00 opening, gives it away."""
    _, savings, _ = after_transfers
    _write_behind_the_app(app, [Transaction(
        account_id=savings.id, sender_account_id=None, receiver_account_id=savings.id, amount=Decimal("1000.00"),
        type="credit", description="Opening deposit", reference="DP-FORGED000000000001",
        initiated_by_user_id=customer.id)], credits={savings.id: "1000.00"})

    result = runner.invoke(args=["verify-ledger"])

    assert _balance_problems(app) == []
    assert result.exit_code != 0
    assert f"account {savings.id}: opening deposit 100000 cents in the ledger" in result.output
    assert "says 0 cents" in result.output


def test_verify_ledger_fails_on_a_second_opening_deposit(app, runner, customer, after_transfers):
    """Is a second deposit on an account that was opened with money reported as one too many?"""
    checking, _, _ = after_transfers
    _write_behind_the_app(app, [Transaction(
        account_id=checking.id, sender_account_id=None, receiver_account_id=checking.id, amount=Decimal("5.00"),
        type="credit", description="Opening deposit", reference="DP-FORGED000000000002",
        initiated_by_user_id=customer.id)], credits={checking.id: "5.00"})

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert f"account {checking.id}: 2 opening deposits in the ledger, one at most" in result.output


def _forged_transfer(source, target, amount: str, reference: str, user_id: int) -> list[Transaction]:
    common = dict(sender_account_id=source.id, receiver_account_id=target.id, amount=Decimal(amount),
                  description="forged", reference=reference, initiated_by_user_id=user_id, timestamp=utcnow())
    return [Transaction(account_id=source.id, type="debit", **common),
            Transaction(account_id=target.id, type="credit", **common)]


def test_verify_ledger_fails_on_a_transfer_no_audit_row_records(app, runner, customer, other_customer,
                                                                after_transfers):
    """Is a balanced debit and credit pair, with both balances moved, that the application never
    wrote (no TRANSFER_CREATED row) reported, though every balance check passes on it?"""
    checking, _, theirs = after_transfers
    _write_behind_the_app(app, _forged_transfer(checking, theirs, "50.00", "TX-FORGED000000000001", customer.id),
                          credits={checking.id: "-50.00", theirs.id: "50.00"})

    result = runner.invoke(args=["verify-ledger"])

    assert _balance_problems(app) == []
    assert result.exit_code != 0
    assert "transfer TX-FORGED000000000001: no TRANSFER_CREATED audit row records it" in result.output


def _log_transfer_created(app, source, target, amount: str, reference: str, user_id: int) -> None:
    """A TRANSFER_CREATED audit row for a transfer of `amount` from `source` to `target`, written
    as the app writes one but with no ledger rows of its own."""
    with app.app_context():
        services.log_event("TRANSFER_CREATED", {
            "kind": "internal", "amount": amount, "source_account_id": source.id,
            "source_account": source.account_number, "target_account": target.account_number,
            "reference": reference}, user_id=user_id)
        db.session.commit()


def test_verify_ledger_fails_when_the_ledger_and_its_audit_row_disagree(app, runner, customer, after_transfers):
    """Is a transfer whose ledger rows say 50.00 to one account, while its audit row says 0.50 to
    another, reported field by field (amount and target account)?"""
    checking, savings, theirs = after_transfers
    _write_behind_the_app(app, _forged_transfer(checking, theirs, "50.00", "TX-FORGED000000000002", customer.id),
                          credits={checking.id: "-50.00", theirs.id: "50.00"})
    _log_transfer_created(app, checking, savings, "0.50", "TX-FORGED000000000002", customer.id)

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert "transfer TX-FORGED000000000002: the ledger's amount is 5000, its TRANSFER_CREATED audit row" in result.output
    assert "says 50" in result.output
    assert f"the ledger's target account is {theirs.account_number}" in result.output
    assert "the ledger's source account" not in result.output


def test_verify_ledger_fails_on_an_audited_transfer_the_ledger_lost(app, runner, customer, after_transfers):
    """Is a TRANSFER_CREATED row whose reference has no ledger rows reported (money the audit
    trail says moved, which the ledger doesn't show)?"""
    checking, savings, _ = after_transfers
    _log_transfer_created(app, checking, savings, "1.00", "TX-MISSING0000000001", customer.id)

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert "records transfer TX-MISSING0000000001, which the ledger does not hold" in result.output


def test_verify_ledger_fails_on_an_account_without_its_opening_row(app, runner, customer, after_transfers):
    """Is an account inserted behind the app (no ACCOUNT_CREATED row) reported, though it holds nothing?"""
    with app.app_context():
        account = Account(account_number="999999999999", owner_id=customer.id, type="checking")
        db.session.add(account)
        db.session.commit()
        forged = account.id

    result = runner.invoke(args=["verify-ledger"])

    assert _balance_problems(app) == []
    assert result.exit_code != 0
    assert f"account {forged}: no ACCOUNT_CREATED audit row records its opening" in result.output


def test_verify_ledger_fails_when_a_credit_is_moved_to_another_account(app, runner, after_transfers):
    """Is the credit half of a transfer moved into another account (the receiver's balance down,
    the other account's up by the same) reported, though reference and amount still pair?"""
    _, savings, theirs = after_transfers
    with app.app_context():
        drop_ledger_triggers(db.session)  # as someone holding the schema owner's rights would
        db.session.execute(text(
            "UPDATE \"transaction\" SET account_id = :savings, receiver_account_id = :savings "
            "WHERE type = 'credit' AND description = 'dinner'"), {"savings": savings.id})
        db.session.execute(text("UPDATE account SET balance = balance - 7950 WHERE id = :id"), {"id": theirs.id})
        db.session.execute(text("UPDATE account SET balance = balance + 7950 WHERE id = :id"), {"id": savings.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert "debit without a matching credit (same amount, sender, receiver, initiator, description and time)" in result.output


def test_verify_ledger_fails_when_a_transfer_is_given_another_initiator(app, runner, customer, other_customer,
                                                                       after_transfers):
    """Is a transfer rewritten to look made by another user (its ledger rows' initiator changed,
    the triggers dropped as the schema owner could) reported, naming the user its
    TRANSFER_CREATED row was logged under?"""
    with app.app_context():
        drop_ledger_triggers(db.session)
        db.session.execute(text("UPDATE \"transaction\" SET initiated_by_user_id = :other WHERE description = 'dinner'"),
                           {"other": other_customer.id})
        db.session.commit()
        reference = db.session.scalar(select(Transaction.reference).where(Transaction.description == "dinner").limit(1))

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert (f"transfer {reference}: the ledger's initiator is {other_customer.id}, its TRANSFER_CREATED audit row"
            in result.output)
    assert f"says {customer.id}" in result.output


@pytest.mark.parametrize(("column", "value"), [("description", "'refund from the bank'"),
                                               ("timestamp", "'2020-01-01 00:00:00'")])
@pytest.mark.parametrize("side", ["both", "credit"])
def test_verify_ledger_fails_when_a_transfers_description_or_time_is_rewritten(app, runner, after_transfers,
                                                                             column, value, side):
    """Is a transfer's description or date rewritten with SQL (what the customers read on their
    statements), on both rows or on the receiver's credit only, reported against the entry_mac
    its TRANSFER_CREATED row recorded, or against the debit it no longer matches?"""
    with app.app_context():
        reference = db.session.scalar(select(Transaction.reference).where(Transaction.description == "dinner").limit(1))
        drop_ledger_triggers(db.session)
        kinds = "('debit', 'credit')" if side == "both" else "('credit')"
        db.session.execute(text(f'UPDATE "transaction" SET {column} = {value} '
                                f"WHERE reference = :reference AND type IN {kinds}"), {"reference": reference})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    shown = (f"transfer {reference}: its description or time is not what its TRANSFER_CREATED audit row"
             if side == "both" else
             f"transfer {reference}: debit without a matching credit (same amount, sender, receiver, initiator, "
             "description and time)")
    assert shown in result.output


@pytest.mark.parametrize("row", ["credit", "deposit"])
def test_verify_ledger_fails_when_a_credit_or_deposit_is_given_another_initiator(app, runner, customer, admin,
                                                                              after_transfers, row):
    """Is the credit half of a transfer, or an opening deposit, rewritten to look made by an
    admin (which would show the customer a "made by the bank" mark) reported, though the debit
    and the audit rows are untouched?"""
    checking, _savings, _theirs = after_transfers
    where = ("type = 'credit' AND description = 'save'" if row == "credit"
             else "type = 'credit' AND sender_account_id IS NULL AND account_id = :checking")
    with app.app_context():
        drop_ledger_triggers(db.session)
        db.session.execute(text(f'UPDATE "transaction" SET initiated_by_user_id = :admin WHERE {where}'),
                           {"admin": admin.id, "checking": checking.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    shown = ("debit without a matching credit (same amount, sender, receiver, initiator, description and time)" if row == "credit"
             else f"account {checking.id}: its opening deposit names user {admin.id} as the initiator, "
                  f"its ACCOUNT_CREATED audit row")
    assert shown in result.output


def test_verify_ledger_fails_on_a_ledger_row_on_another_account_than_it_names(app, runner, backend_name,
                                                                            after_transfers):
    """Is a debit row moved to another account than the sender it names reported? The table's
    CHECK constraint refuses that; on PostgreSQL the schema owner can drop the constraint, and
    verify-ledger must not rely on it still being there."""
    if backend_name != "postgresql":
        pytest.skip("SQLite can't drop a CHECK constraint short of rebuilding the table")
    checking, savings, _ = after_transfers
    with app.app_context():
        drop_ledger_triggers(db.session)
        db.session.execute(text(
            'ALTER TABLE "transaction" DROP CONSTRAINT ck_transaction_entry_side_matches_account'))
        db.session.execute(text("UPDATE \"transaction\" SET account_id = :savings "
                                "WHERE type = 'debit' AND description = 'dinner'"), {"savings": savings.id})
        db.session.execute(text("UPDATE account SET balance = balance + 7950 WHERE id = :id"), {"id": checking.id})
        db.session.execute(text("UPDATE account SET balance = balance - 7950 WHERE id = :id"), {"id": savings.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert f"its debit is on account {savings.id}, but names account {checking.id} as the sender" in result.output


def test_verify_ledger_fails_when_an_account_is_handed_to_another_customer(app, runner, other_customer,
                                                                          after_transfers):
    """Is an account whose owner was changed with SQL (which needs no trigger dropped, and would
    let the new owner spend its money) reported against its ACCOUNT_CREATED row, though every
    balance check passes?"""
    checking, _, _ = after_transfers
    with app.app_context():
        db.session.execute(text("UPDATE account SET owner_id = :owner WHERE id = :id"),
                           {"owner": other_customer.id, "id": checking.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert _balance_problems(app) == []
    assert result.exit_code != 0
    assert f"account {checking.id}: its owner is {other_customer.id}, its ACCOUNT_CREATED audit row" in result.output


def test_verify_ledger_follows_freezes_and_reports_a_status_changed_behind_the_app(app, runner, admin,
                                                                                  after_transfers):
    """After an admin's freeze and unfreeze (recorded), does verify-ledger pass; and is an account
    unfrozen with SQL (free to send money again) reported against its last ACCOUNT_FROZEN row?"""
    checking, savings, _ = after_transfers
    with app.app_context():
        acting = db.session.get(User, admin.id)
        services.freeze_account(acting, checking.id)
        services.unfreeze_account(acting, checking.id)
        services.freeze_account(acting, savings.id)
        assert services.verify_ledger().ok, services.verify_ledger().problems
        db.session.execute(text("UPDATE account SET status = 'active' WHERE id = :id"), {"id": savings.id})
        db.session.commit()

    result = runner.invoke(args=["verify-ledger"])

    assert result.exit_code != 0
    assert f"account {savings.id}: status active, but its audit trail leaves it frozen (audit row" in result.output
    assert f"account {checking.id}: status" not in result.output


_RAW_ENTRY = (
    'INSERT INTO "transaction" (account_id, sender_account_id, receiver_account_id, amount, type, description, '
    "reference, timestamp, initiated_by_user_id) "
    "VALUES ({account}, {sender}, {receiver}, {cents}, '{type}', 'forged', '{reference}', CURRENT_TIMESTAMP, {user})")


def _write_unshaped_rows(app, backend_name: str, statements: list[str]) -> None:
    """Run `statements` with what shapes a ledger row (its CHECK constraints and foreign keys)
    switched off, as the file's owner can (SQLite: two PRAGMAs in the sqlite3 shell, no DDL) or
    the schema owner (PostgreSQL: DROP CONSTRAINT)."""
    with app.app_context():
        if backend_name == "postgresql":
            for name in ("ck_transaction_type_valid", "ck_transaction_amount_positive",
                         "ck_transaction_entry_side_matches_account", "fk_transaction_account_id_account",
                         "fk_transaction_receiver_account_id_account", "fk_transaction_sender_account_id_account"):
                db.session.execute(text(f'ALTER TABLE "transaction" DROP CONSTRAINT {name}'))
            for statement in statements:
                db.session.execute(text(statement))
            db.session.commit()
            return
        path = db.engine.url.database
        db.engine.dispose()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA foreign_keys = OFF")
        connection.execute("PRAGMA ignore_check_constraints = ON")
        for statement in statements:
            connection.execute(statement)
    finally:
        connection.close()


def test_verify_ledger_fails_on_a_row_of_another_type_or_a_negative_amount(app, backend_name, customer,
                                                                          after_transfers):
    """With the table's constraints switched off, is money printed by a row that is no debit or
    credit (a "fee" of -50,000.00 that raises a balance) and a deposit on an account that does
    not exist (which raises the deposits' total to match) reported, though the sums balance?"""
    checking, _, _ = after_transfers
    _write_unshaped_rows(app, backend_name, [
        _RAW_ENTRY.format(account=999999, sender="NULL", receiver=999999, cents=5_000_000, type="credit",
                          reference="TX-FAKE0000000003", user=customer.id),
        _RAW_ENTRY.format(account=checking.id, sender="NULL", receiver="NULL", cents=-5_000_000, type="fee",
                          reference="TX-FAKE0000000004", user=customer.id),
        f"UPDATE account SET balance = balance + 5000000 WHERE id = {checking.id}",
    ])
    with app.app_context():
        problems = services.verify_ledger().problems

    assert any("type 'fee', amount -5000000 cents" in problem for problem in problems), problems
    assert any("type 'credit', amount 5000000 cents, on account 999999" in problem for problem in problems), problems


def test_verify_ledger_fails_on_an_amount_that_is_not_whole_cents(app, backend_name, customer, after_transfers):
    """SQLite keeps whatever is written once the constraints are off: is an amount stored as the
    text '1000_0' (10 cents to SQLite's SUM, 10,000 to Python's int()) or as the real 0.5
    reported, rather than read one way by one check and another way by the next?"""
    if backend_name == "postgresql":
        pytest.skip("PostgreSQL's bigint column holds integers only")
    _, savings, _ = after_transfers
    _write_unshaped_rows(app, backend_name, [
        _RAW_ENTRY.format(account=savings.id, sender="NULL", receiver=savings.id, cents="'1000_0'", type="credit",
                          reference="DP-FAKE0000000005", user=customer.id),
        _RAW_ENTRY.format(account=savings.id, sender="NULL", receiver=savings.id, cents="0.5", type="credit",
                          reference="DP-FAKE0000000006", user=customer.id),
    ])
    with app.app_context():
        problems = services.verify_ledger().problems

    assert f"account {savings.id}: its opening deposit is stored as '1000_0', not a whole number of cents" in problems
    assert f"account {savings.id}: its opening deposit is stored as 0.5, not a whole number of cents" in problems


def test_verify_ledger_fails_on_two_credits_under_one_reference(app, backend_name, customer, after_transfers):
    """With the unique (reference, type) constraint dropped, is a second credit under a transfer's
    reference reported, though the real credit still pairs with the debit?"""
    if backend_name != "postgresql":
        pytest.skip("SQLite can't drop a UNIQUE constraint short of rebuilding the table")
    checking, savings, theirs = after_transfers
    with app.app_context():
        reference = db.session.scalar(select(Transaction.reference).where(Transaction.description == "dinner"))
        db.session.execute(text('ALTER TABLE "transaction" DROP CONSTRAINT uq_transaction_reference_type'))
        db.session.add(Transaction(account_id=savings.id, sender_account_id=checking.id, receiver_account_id=savings.id,
                                   amount=Decimal("79.50"), type="credit", description="dinner", reference=reference,
                                   initiated_by_user_id=customer.id))
        db.session.execute(text("UPDATE account SET balance = balance + 7950 WHERE id = :id"), {"id": savings.id})
        db.session.execute(text("UPDATE account SET balance = balance - 7950 WHERE id = :id"), {"id": checking.id})
        db.session.commit()
        problems = services.verify_ledger().problems

    assert f"transfer {reference}: more than one credit" in problems


def test_database_refuses_a_negative_balance(app, after_transfers):
    """Does the balance >= 0 CHECK constraint stop raw SQL from overdrawing an account?"""
    from sqlalchemy.exc import IntegrityError

    checking, _, _ = after_transfers
    with app.app_context():
        with pytest.raises(IntegrityError):
            db.session.execute(text("UPDATE account SET balance = -1 WHERE id = :id"), {"id": checking.id})
        db.session.rollback()
        assert services.verify_ledger().ok


# --- the ledger is append-only in the database (migrations/versions/0004_ledger_append_only.py) ---


def test_ledger_triggers_exist_after_flask_db_upgrade(make_database, backend_name):
    """Does `flask db upgrade` on an empty database create the triggers that refuse UPDATE and
    DELETE on the ledger (and TRUNCATE on PostgreSQL), as for the audit log?"""
    fresh = build_app(make_database(migrated=False))

    result = fresh.test_cli_runner().invoke(args=["db", "upgrade", "--directory", MIGRATIONS])

    assert result.exit_code == 0, result.output
    with fresh.app_context():
        triggers = table_triggers(db.session, "transaction")
        db.session.rollback()
    assert set(triggers) == set(LEDGER_TRIGGERS[backend_name])
    if backend_name == "sqlite":
        assert 'BEFORE UPDATE ON "transaction"' in triggers["transaction_no_update"]
        assert 'BEFORE DELETE ON "transaction"' in triggers["transaction_no_delete"]
        assert all("RAISE(ABORT" in sql for sql in triggers.values())
    else:
        assert ('BEFORE DELETE OR UPDATE ON public.transaction FOR EACH ROW'
                in triggers["transaction_no_update_delete"])
        assert 'BEFORE TRUNCATE ON public.transaction FOR EACH STATEMENT' in triggers["transaction_no_truncate"]
        assert all("EXECUTE FUNCTION ledger_refuse_change()" in sql for sql in triggers.values())


def test_ledger_triggers_go_with_a_downgrade_to_0003_and_come_back(make_database, backend_name):
    """Does `db downgrade` to 0003 drop the ledger's triggers (and its PostgreSQL function) while
    the audit log keeps its own, and does `db upgrade` bring them back?"""
    fresh = build_app(make_database(migrated=False))
    runner = fresh.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "--directory", MIGRATIONS]).exit_code == 0

    down = runner.invoke(args=["db", "downgrade", "0003_account_history_index", "--directory", MIGRATIONS])

    assert down.exit_code == 0, down.output
    with fresh.app_context():
        assert table_triggers(db.session, "transaction") == {}
        assert set(table_triggers(db.session, "audit_log")) == set(AUDIT_TRIGGERS[backend_name])
        if backend_name == "postgresql":
            assert db.session.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = 'ledger_refuse_change'")) == 0
        db.session.rollback()
    assert runner.invoke(args=["db", "upgrade", "--directory", MIGRATIONS]).exit_code == 0
    with fresh.app_context():
        assert set(table_triggers(db.session, "transaction")) == set(LEDGER_TRIGGERS[backend_name])
        db.session.rollback()


@pytest.mark.parametrize("statement", [
    "UPDATE \"transaction\" SET amount = amount + 100 WHERE type = 'credit'",
    "UPDATE \"transaction\" SET account_id = account_id",
    "DELETE FROM \"transaction\" WHERE description = 'dinner'",
    "DELETE FROM \"transaction\"",
    "TRUNCATE \"transaction\"",
    "TRUNCATE account CASCADE",
])
def test_database_refuses_to_rewrite_or_remove_ledger_rows(app, backend_name, after_transfers, statement):
    """Is every UPDATE, DELETE (and, on PostgreSQL, TRUNCATE, also as a CASCADE from the accounts
    it refers to) of ledger rows refused by the database itself, leaving every row as it was?
    (The tests connect as the schema owner: the triggers stand even where privileges don't.)"""
    if statement.startswith("TRUNCATE") and backend_name != "postgresql":
        pytest.skip("SQLite has no TRUNCATE; its DELETE FROM is covered by the row triggers")
    with app.app_context():
        before = db.session.execute(select(Transaction.id, Transaction.amount, Transaction.account_id)
                                    .order_by(Transaction.id)).all()
        db.session.rollback()
        with pytest.raises(DBAPIError, match=r"the ledger \(transaction\) is append-only"):
            db.session.execute(text(statement))
        db.session.rollback()
        after = db.session.execute(select(Transaction.id, Transaction.amount, Transaction.account_id)
                                   .order_by(Transaction.id)).all()
        assert after == before and len(after) == db.session.scalar(select(func.count(Transaction.id))) > 0
        assert services.verify_ledger().ok
