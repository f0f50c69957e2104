"""Core banking service: accounts, transfers and the ledger.

The only writer of the `account` and `transaction` tables (DESIGN.md section 1). Every money
movement is one database transaction that touches the two account rows in ascending id order
with conditional updates that re-check status, ownership and balance at write time, writes a
debit and a credit sharing one reference, queues its audit rows, and commits once
(DESIGN.md section 3; OWASP ASVS 11.1.1-11.1.4). Values read before the updates are never trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Iterator, NamedTuple

from flask import current_app
from itsdangerous import Signer
from sqlalchemy import BigInteger, Row, Select, bindparam, func, or_, select, true, type_coerce, union_all, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from ..errors import (
    AccountNotActiveError,
    AccountNotFoundError,
    BusyError,
    DomainError,
    DuplicateTransferError,
    InsufficientFundsError,
    LimitExceededError,
    SameAccountError,
    TargetUnavailableError,
    ValidationRuleError,
)
from ..extensions import TryAgainError, atomic, db, insert_rows, retry_on_conflict
from ..models import (
    ACCOUNT_TYPES,
    ENTRY_TYPES,
    Account,
    EntrySides,
    Transaction,
    User,
    after_utc_day,
    as_utc,
    lock_account_holder,
    start_of_utc_day,
    utcnow,
)
from ..money import ZERO, format_amount, quantize
from ..pagination import PAGE_SIZE, KeysetPage, Page, fixed_limit, keyset_statements, numbered_page, run_keyset_page
from ..audit import services as audit_services
from ..security import log_event, log_standalone_event

RECENT_PER_ACCOUNT = 5
ACCOUNT_NUMBER_DIGITS = 12
# 20 random URL-safe characters, a dot, and a 43-character HMAC-SHA256 signature (64 in all).
IDEMPOTENCY_KEY_PATTERN = r"[A-Za-z0-9_-]{20}\.[A-Za-z0-9_-]{43}"


# ---------------------------------------------------------------------------------------------
# Look-ups
# ---------------------------------------------------------------------------------------------


def _key_signer(user_id: int) -> Signer:
    return Signer(current_app.config["SECRET_KEY"], salt=f"idempotency-key:{user_id}",
                  key_derivation="hmac", digest_method=hashlib.sha256)


def new_idempotency_key(user_id: int) -> str:
    """A fresh one-time key for a transfer form issued to user `user_id` (DESIGN.md section 3).

    Shape: 15 random bytes (20 URL-safe characters), a dot, and an HMAC-SHA256 signature
    (itsdangerous, keyed by SECRET_KEY, salted with the user id): 64 characters. Only keys this
    server issued to this user are accepted (`is_issued_idempotency_key`).
    """
    return _key_signer(user_id).sign(secrets.token_urlsafe(15)).decode("ascii")


def is_issued_idempotency_key(user_id: int, key: str | None) -> bool:
    """True when `key` is exactly the string this server issued to user `user_id`.

    The signature is recomputed and compared as text, not decoded: base64 ignores the low bits
    of the last character, so decoding would accept four spellings of one key, and uniqueness in
    the database is on the exact string.
    """
    if not key or not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        return False
    token = key.partition(".")[0]
    expected = _key_signer(user_id).sign(token).decode("ascii")
    return hmac.compare_digest(expected, key)


def new_reference(prefix: str) -> str:
    """A transfer or deposit reference such as `TX-9F2C4A7B1D3E5F60` (prefix + 16 hex digits)."""
    return f"{prefix}-{secrets.token_hex(8).upper()}"


class AccountSummary(NamedTuple):
    """An account as the dashboard and the transfer forms show it. balance: Decimal, two
    places, in the account's currency. Read-only: no write goes through it (the transfer
    services read and lock the rows they change themselves)."""

    id: int
    account_number: str
    owner_id: int
    type: str
    balance: Decimal
    status: str


_ACCOUNT = Account.__table__
_OWNER_ACCOUNTS = (select(_ACCOUNT.c.id, _ACCOUNT.c.account_number, _ACCOUNT.c.owner_id, _ACCOUNT.c.type,
                          _ACCOUNT.c.balance, _ACCOUNT.c.status)
                   .where(_ACCOUNT.c.owner_id == bindparam("owner_id")).order_by(_ACCOUNT.c.id))


def list_accounts(owner_id: int) -> list[AccountSummary]:
    """All accounts of user `owner_id`, oldest first, frozen and closed ones included: plain
    rows read on the session's connection (no ORM object is built for an account only shown)."""
    return [AccountSummary(*row) for row in db.session.connection().execute(_OWNER_ACCOUNTS, {"owner_id": owner_id}).all()]


def list_active_customers() -> list[User]:
    """Active users with the customer role, by name (for the admin's owner picker of a new account)."""
    return list_customers(active_only=True)


def list_customers(*, active_only: bool) -> list[User]:
    """Users with the customer role, by name, only the active ones when `active_only` (for the
    admin's owner pickers)."""
    query = select(User).where(User.role == "customer")
    if active_only:
        query = query.where(User.is_active.is_(True))
    return list(db.session.scalars(query.order_by(User.full_name, User.id)))


def find_customer(user_id: int | None, *, active_only: bool = True) -> User | None:
    """The customer with id `user_id`, or None (admins act only on customers' accounts).

    active_only: also None for a deactivated customer. Admins open accounts only for active
    customers; transfers pass False: an admin may move money from any customer's active account
    (DESIGN.md section 8), a deactivated customer's included, whose accounts can still receive
    money and would otherwise hold it with nobody able to move it.
    """
    if user_id is None:
        return None
    user = db.session.get(User, user_id)
    if user is None or user.role != "customer" or (active_only and not user.is_active):
        return None
    return user


def account_label(account: AccountSummary | Account) -> str:
    """Text of an account option: full number, type, balance and any non-active status."""
    label = f"{account.account_number} · {account.type} · {format_amount(account.balance)}"
    return label if account.status == "active" else f"{label} ({account.status})"


# ---------------------------------------------------------------------------------------------
# Ledger entries as the tables show them (templates/banking/_entries.html)
# ---------------------------------------------------------------------------------------------


class ShownOwner(NamedTuple):
    """The owner of an entry's account, as the staff tables show it: the name only."""

    full_name: str


class ShownAccount(NamedTuple):
    """The columns of an account that a table of entries shows: the 12-digit number, the owner's
    id (to mask another customer's number) and for staff views the owner's name (never a
    balance, a hash or an MFA key)."""

    account_number: str
    owner_id: int
    owner: ShownOwner | None = None


class _LedgerEntryColumns(NamedTuple):
    id: int
    account_id: int
    timestamp: datetime
    type: str
    amount: Decimal
    description: str
    reference: str
    initiated_by_user_id: int
    account: ShownAccount
    sender_account: ShownAccount | None
    receiver_account: ShownAccount | None


class LedgerEntry(_LedgerEntryColumns, EntrySides):
    """One ledger entry with its account and both sides' accounts, read as a plain row
    (`counterparty` and `signed_amount` as on the Transaction model).

    amount: Decimal, two places, positive (the cents type converts it); timestamp: aware UTC
    datetime; type: "debit" or "credit"; initiated_by_user_id: the user who made the transfer
    (or opened the account, for a deposit). Read-only (a named tuple, as are ShownAccount and
    ShownOwner, which cost a fraction of a frozen dataclass to build): the lists never write
    through it, and no ORM object is built for a row that is only shown.
    """

    __slots__ = ()


_ENTRY = Transaction.__table__
_ENTRY_ACCOUNT = Account.__table__.alias("entry_account")
_SENDER = Account.__table__.alias("sender_account")
_RECEIVER = Account.__table__.alias("receiver_account")
_ENTRY_OWNER = User.__table__.alias("entry_owner")


def _entry_select(staff_view: bool) -> Select:
    """SELECT of every column a table of entries shows, and only those, with both sides'
    accounts joined (one statement for a page, no N+1); `staff_view` adds the owner's name.
    Built once at import: each request only adds its WHERE, ORDER BY and LIMIT, and the
    compiled form is cached. Each column read costs its decoding on every row of every page."""
    columns = [_ENTRY.c.id, _ENTRY.c.account_id, _ENTRY.c.timestamp, _ENTRY.c.type, _ENTRY.c.amount,
               _ENTRY.c.description, _ENTRY.c.reference, _ENTRY.c.initiated_by_user_id]
    for side in (_ENTRY_ACCOUNT, _SENDER, _RECEIVER):
        columns += [side.c.account_number, side.c.owner_id]
    joined = (_ENTRY.join(_ENTRY_ACCOUNT, _ENTRY_ACCOUNT.c.id == _ENTRY.c.account_id)
              .outerjoin(_SENDER, _SENDER.c.id == _ENTRY.c.sender_account_id)
              .outerjoin(_RECEIVER, _RECEIVER.c.id == _ENTRY.c.receiver_account_id))
    if staff_view:
        columns.append(_ENTRY_OWNER.c.full_name)
        joined = joined.join(_ENTRY_OWNER, _ENTRY_OWNER.c.id == _ENTRY_ACCOUNT.c.owner_id)
    return select(*columns).select_from(joined)


_CUSTOMER_ENTRIES = _entry_select(staff_view=False)
_STAFF_ENTRIES = _entry_select(staff_view=True)


def _shown_account(number: str | None, owner_id: int | None, owner: ShownOwner | None = None) -> ShownAccount | None:
    """The side's ShownAccount, or None for a side the outer join found no account for (a
    deposit's sender): account numbers are NOT NULL, so a NULL number means no row."""
    return None if number is None else ShownAccount(number, owner_id, owner)


def _ledger_entry(row) -> LedgerEntry:
    """A LedgerEntry from a row of _entry_select (positional: see the column order there)."""
    values = tuple(row)
    owner = ShownOwner(values[14]) if len(values) > 14 else None
    return LedgerEntry(*values[:8], ShownAccount(values[8], values[9], owner), _shown_account(values[10], values[11]),
                       _shown_account(values[12], values[13]))


@lru_cache(maxsize=64)
def _recent_entries_statement(dialect: str, per_account: int, account_count: int) -> Select:
    """The dashboard's statement, built once per shape: the last `per_account` entries of each
    account (bound parameters: `account_ids` on PostgreSQL, an expanding IN list;
    `account_0` ... `account_<account_count - 1>` on SQLite), with both sides' accounts.

    Each account's ids come from one `ORDER BY id DESC LIMIT n` (an index-only scan of
    ix_transaction_account_id_id_timestamp_type_amount, so the cost does not grow with the
    account's history): a LATERAL join on PostgreSQL — the account id is a parameter of each scan, so the planner
    always takes that index instead of betting on finding a busy account's entries early in a
    backward walk of the whole table — and a UNION ALL on SQLite.
    """
    def newest(account_id) -> Select:
        return (select(Transaction.id).where(Transaction.account_id == account_id)
                .order_by(Transaction.id.desc()).limit(fixed_limit(per_account)))

    if dialect == "postgresql":
        per = newest(Account.id).lateral("newest")
        ids = (select(per.c.id).select_from(Account).join(per, true())
               .where(Account.id.in_(bindparam("account_ids", expanding=True))))
    else:
        ids = union_all(*(select(newest(bindparam(f"account_{n}", type_=Account.id.type)).subquery().c.id)
                          for n in range(account_count)))
    return _CUSTOMER_ENTRIES.where(_ENTRY.c.id.in_(ids)).order_by(_ENTRY.c.id.desc())


def recent_transactions(accounts: list[AccountSummary], per_account: int = RECENT_PER_ACCOUNT) -> dict[int, list[LedgerEntry]]:
    """The last `per_account` ledger entries of each account (LedgerEntry rows), newest first,
    keyed by account id. accounts: the customer's accounts (list_accounts).

    One statement whatever the number of accounts (_recent_entries_statement), and the rows with
    their counterparties' accounts are read by the ids it finds.
    """
    recent: dict[int, list[LedgerEntry]] = {account.id: [] for account in accounts}
    if not accounts:
        return recent
    dialect = db.session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt, params = _recent_entries_statement(dialect, per_account, 0), {"account_ids": list(recent)}
    else:
        stmt = _recent_entries_statement(dialect, per_account, len(recent))
        params = {f"account_{n}": account_id for n, account_id in enumerate(recent)}
    # Core rows, read on the session's connection: no ORM execution layer for a plain SELECT.
    for row in db.session.connection().execute(stmt, params).all():
        entry = _ledger_entry(row)
        recent[entry.account_id].append(entry)
    return recent


# ---------------------------------------------------------------------------------------------
# Opening accounts
# ---------------------------------------------------------------------------------------------


def _new_account_number() -> str:
    """12 random digits from `secrets`, first digit non-zero, not yet used by any account."""
    for _ in range(20):
        number = str(secrets.randbelow(9 * 10 ** (ACCOUNT_NUMBER_DIGITS - 1)) + 10 ** (ACCOUNT_NUMBER_DIGITS - 1))
        if db.session.scalar(select(Account.id).where(Account.account_number == number)) is None:
            return number
    raise BusyError()


def open_account(actor: User, account_type: str, opening_deposit: Decimal, owner_user_id: int | None = None) -> Account:
    """Open a checking or savings account with an opening deposit; commits once.

    actor: the signed-in user. A customer always opens for themself (`owner_user_id` is
    ignored); an admin must name an active customer in `owner_user_id` — decided by role, never
    by whether the field was sent (spec section 10). opening_deposit: Decimal, two places,
    0.00 to MAX_OPENING_DEPOSIT; above zero it is recorded as a ledger credit with no sender.
    Logs ACCOUNT_CREATED. Raises AccountNotFoundError (no such active customer, or the owner
    stopped being one meanwhile), LimitExceededError (MAX_ACCOUNTS_PER_CUSTOMER or
    MAX_OPENING_DEPOSIT), ValidationRuleError (bad type or role).
    """
    config = current_app.config
    if account_type not in ACCOUNT_TYPES:
        raise ValidationRuleError("Choose checking or savings.")
    opening_deposit = quantize(opening_deposit)
    if opening_deposit < ZERO or opening_deposit > config["MAX_OPENING_DEPOSIT"]:
        raise LimitExceededError(f"The opening deposit must be between 0.00 and {format_amount(config['MAX_OPENING_DEPOSIT'])}.")
    actor_role = actor.role
    if actor_role == "customer":
        owner_id = actor.id
    elif actor_role == "admin":
        owner = find_customer(owner_user_id)
        if owner is None:
            raise AccountNotFoundError("Choose an active customer to own the account.")
        owner_id = owner.id
    else:
        raise ValidationRuleError("Only customers and administrators open accounts.")

    def attempt() -> Account:
        with atomic():
            # The owner's row locked, so two concurrent openings can't both pass the count, and
            # their role re-read under the lock an admin's change of role also takes: no account
            # is opened for a user who has just stopped being an active customer.
            owner_now = lock_account_holder(owner_id)
            if owner_now is None or owner_now.role != "customer" or not owner_now.is_active:
                # A customer whose role or state changed since the request began is told so in
                # their own terms: the owner picker's message is for admins.
                raise AccountNotFoundError("Choose an active customer to own the account." if actor_role == "admin"
                                           else "Only active customers can open accounts.")
            if owner_now.accounts_held >= config["MAX_ACCOUNTS_PER_CUSTOMER"]:
                raise LimitExceededError(
                    f"A customer may hold at most {config['MAX_ACCOUNTS_PER_CUSTOMER']} accounts."
                )
            account = Account(
                account_number=_new_account_number(), owner_id=owner_id, type=account_type,
                balance=opening_deposit, status="active",
            )
            db.session.add(account)
            db.session.flush()
            if opening_deposit > ZERO:
                db.session.add(
                    Transaction(
                        account_id=account.id, sender_account_id=None, receiver_account_id=account.id,
                        amount=opening_deposit, type="credit", description="Opening deposit",
                        reference=new_reference("DP"), initiated_by_user_id=actor.id,
                    )
                )
            log_event(
                "ACCOUNT_CREATED",
                {"account_id": account.id, "account_number": account.account_number, "owner_id": owner_id,
                 "type": account_type, "opening_deposit": str(opening_deposit)},
                user_id=actor.id,
            )
            return account

    try:
        return retry_on_conflict(attempt)
    except TryAgainError as exc:
        raise BusyError() from exc


# ---------------------------------------------------------------------------------------------
# Transfers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferRequest:
    """A transfer as the form gave it; `amount` is Decimal (two places), the rest plain values.

    `actor_id` and `acting_role` are the actor's id and role as the request loaded (and
    authorized) them, taken when the request is made: inside the transaction they are only
    written (ledger rows, audit rows), and on SQLite reading them from `actor` there would
    reload the user, expired by the commit that ends the read transaction, inside the write
    lock (one more statement per transfer, and no rule re-checked by it).
    """

    actor: User
    owner_id: int
    source_id: int
    amount: Decimal
    description: str
    idempotency_key: str
    kind: str  # "internal" or "external"
    target_id: int | None = None
    target_account_number: str | None = None
    details: dict = field(default_factory=dict)
    actor_id: int = field(init=False)
    acting_role: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "actor_id", self.actor.id)
        object.__setattr__(self, "acting_role", self.actor.role)


def _find_by_idempotency_key(actor_id: int, key: str) -> Transaction | None:
    return db.session.scalar(
        select(Transaction).where(Transaction.initiated_by_user_id == actor_id, Transaction.idempotency_key == key)
    )


def _check_actor(actor: User, owner_id: int, description: str) -> None:
    if actor.role == "customer":
        if owner_id != actor.id:
            raise AccountNotFoundError()
    elif actor.role == "admin":
        if find_customer(owner_id, active_only=False) is None:
            raise AccountNotFoundError("Choose a customer.")
        if not description:
            raise ValidationRuleError("Give the reason for this transfer in the description.")
    else:
        raise ValidationRuleError("Only customers and administrators make transfers.")


# The transfer's statements are built once, with bound parameters: building a statement costs
# more CPU than running it from SQLAlchemy's compiled cache. Amounts bind through Account.balance,
# so the cents type converts them (DESIGN.md section 3).
_READ_COLUMNS = (Account.id, Account.account_number, Account.owner_id, Account.status, Account.balance)
_READ_SOURCE = select(*_READ_COLUMNS).where(Account.id == bindparam("source_id"))
_READ_SOURCE_AND_TARGET = select(*_READ_COLUMNS).where(
    or_(Account.id == bindparam("source_id"), Account.account_number == bindparam("target_number"))
)
_DEBIT = (
    update(Account)
    .where(Account.id == bindparam("debited_id"), Account.owner_id == bindparam("debited_owner_id"),
           Account.status == "active", Account.balance >= bindparam("covered_amount"))
    .values(balance=Account.balance - bindparam("debited_amount"))
)
_CREDIT = (
    update(Account)
    .where(Account.id == bindparam("credited_id"), Account.status == "active")
    .values(balance=Account.balance + bindparam("credited_amount"))
)


def _load_source(req: TransferRequest) -> tuple[Row | None, list[Row]]:
    """Read the source account afresh, and for an external transfer the target named by its
    number in the same statement (one round trip less). Returns (source or None, every row
    read), rows of id, account_number, owner_id, status and balance (Decimal)."""
    number = (req.target_account_number or "").strip()
    if req.kind == "external" and number:
        found = db.session.connection().execute(_READ_SOURCE_AND_TARGET,
                                                {"source_id": req.source_id, "target_number": number})
    else:
        found = db.session.connection().execute(_READ_SOURCE, {"source_id": req.source_id})
    rows = found.all()
    return next((row for row in rows if row.id == req.source_id), None), rows


def _resolve_target(req: TransferRequest, read: list[Row]) -> Account | Row:
    if req.kind == "internal":
        target = db.session.get(Account, req.target_id) if req.target_id is not None else None
        if target is None or target.owner_id != req.owner_id:
            raise AccountNotFoundError("Choose one of the listed target accounts.")
        if target.status != "active":
            raise AccountNotActiveError("The target account is frozen or closed and cannot receive money.")
        return target
    number = (req.target_account_number or "").strip()
    target = next((row for row in read if row.account_number == number), None)
    if target is None or target.status != "active":
        raise TargetUnavailableError()
    return target


def _debit(source: Account | Row, owner_id: int, amount: Decimal) -> None:
    """Conditional debit: succeeds only if the source is still active, owned, and covers `amount`
    (Decimal, two places). Raises AccountNotFoundError, AccountNotActiveError,
    InsufficientFundsError; the caller's transaction then rolls back."""
    result = db.session.connection().execute(
        _DEBIT, {"debited_id": source.id, "debited_owner_id": owner_id, "covered_amount": amount, "debited_amount": amount}
    )
    if result.rowcount != 1:
        current = db.session.execute(
            select(Account.status, Account.owner_id).where(Account.id == source.id)
        ).one_or_none()
        if current is None or current.owner_id != owner_id:
            raise AccountNotFoundError()
        if current.status != "active":
            raise AccountNotActiveError("The source account is frozen or closed and cannot send money.")
        raise InsufficientFundsError()


def _credit(target: Account | Row, amount: Decimal, kind: str) -> None:
    """Conditional credit: succeeds only if the target is still active. Raises
    TargetUnavailableError (external) or AccountNotActiveError (internal)."""
    result = db.session.connection().execute(_CREDIT, {"credited_id": target.id, "credited_amount": amount})
    if result.rowcount != 1:
        if kind == "external":
            raise TargetUnavailableError()
        raise AccountNotActiveError("The target account is frozen or closed and cannot receive money.")


def _execute_transfer(req: TransferRequest) -> str:
    # No look-up of the idempotency key on the way in: a replay can't get past the debit row's
    # INSERT (the unique index on initiator and key refuses it, also against a concurrent twin),
    # and every refusal, by the index or by a rule, is checked against the key before it is
    # reported (_run_transfer), so a replay always says "already made". One statement fewer for
    # every transfer that goes through.
    with atomic():
        source, read = _load_source(req)
        if source is None or source.owner_id != req.owner_id:
            raise AccountNotFoundError("Choose one of the listed source accounts.")
        if source.status != "active":
            raise AccountNotActiveError("The source account is frozen or closed and cannot send money.")
        # Every refusal that depends on the source alone comes before the target is looked at:
        # were the funds checked after it, an amount over the balance would answer "insufficient
        # funds" for a number that exists and "cannot receive" for one that doesn't, and the
        # form would tell which account numbers exist (DESIGN.md section 3).
        if source.balance < req.amount:
            raise InsufficientFundsError()
        target = _resolve_target(req, read)
        if target.id == source.id:
            raise SameAccountError()
        req.details.update(source_account=source.account_number, target_account=target.account_number,
                           target_owner_id=target.owner_id)
        # Touch both rows in ascending id order so A->B and B->A can't deadlock.
        for account_id in sorted((source.id, target.id)):
            if account_id == source.id:
                _debit(source, req.owner_id, req.amount)
            else:
                _credit(target, req.amount, req.kind)
        reference = new_reference("TX")
        common = dict(sender_account_id=source.id, receiver_account_id=target.id, amount=req.amount,
                      description=req.description, reference=reference, initiated_by_user_id=req.actor_id,
                      timestamp=utcnow())
        # Both rows in one cached INSERT, straight to the table: nothing reads them back as
        # objects. (One statement, not executemany, whose PostgreSQL pipeline would log a
        # warning each time the unique index refuses a replay.)
        db.session.connection().execute(*insert_rows(Transaction.__table__, [
            dict(account_id=source.id, type="debit", idempotency_key=req.idempotency_key, **common),
            dict(account_id=target.id, type="credit", idempotency_key=None, **common),
        ]))
        details = _audit_details(req) | {
            "reference": reference, "entry_mac": transfer_entry_mac(reference, req.description, common["timestamp"])}
        log_event("TRANSFER_CREATED", details, user_id=req.actor_id)
        if req.amount > current_app.config["SUSPICIOUS_TRANSFER_THRESHOLD"]:
            log_event("SUSPICIOUS_TRANSFER", details | {"threshold": str(current_app.config["SUSPICIOUS_TRANSFER_THRESHOLD"])},
                      user_id=req.actor_id)
        return reference


def transfer_entry_mac(reference: str, description: str | None, timestamp: datetime) -> str:
    """audit_services.record_mac of what a transfer's two ledger rows show besides the money
    (64 hex characters): its description and its time (aware UTC, ISO 8601 with microseconds
    as stored). The `entry_mac` of its TRANSFER_CREATED row, which verify-ledger checks both rows
    against, so a description or date rewritten with SQL (what the customer reads on their
    statement) is reported without the audit log holding a customer's free text."""
    return audit_services.record_mac("transfer-entry", reference, description or "", as_utc(timestamp).isoformat())


def _audit_details(req: TransferRequest) -> dict:
    """Who moved what from where to where, and why (PCI DSS 10.2.2); admins' reasons included."""
    target = {"target_account_id": req.target_id} if req.kind == "internal" else {
        "target_account_number": (req.target_account_number or "")[:32]}
    reason = {"reason_given": req.description} if req.acting_role == "admin" else {}
    return {
        "kind": req.kind,
        "amount": str(req.amount),
        "source_account_id": req.source_id,
        "source_owner_id": req.owner_id,
        "acting_role": req.acting_role,
        **target,
        **reason,
        **req.details,
    }


def _run_transfer(req: TransferRequest) -> str:
    """Validate limits, run the transfer with retries, and audit a refusal. Returns the reference."""
    config = current_app.config
    try:
        amount = quantize(req.amount)
        if amount <= ZERO:
            raise ValidationRuleError("The amount must be at least 0.01.")
        if amount > config["MAX_TRANSFER_AMOUNT"]:
            raise LimitExceededError(f"The amount must not exceed {format_amount(config['MAX_TRANSFER_AMOUNT'])}.")
        if len(req.description) > 140:
            raise ValidationRuleError("The description may be at most 140 characters.")
        if not is_issued_idempotency_key(req.actor_id, req.idempotency_key):
            raise ValidationRuleError("The form is invalid or was issued to someone else; reload the page and try again.")
        _check_actor(req.actor, req.owner_id, req.description)
        try:
            return retry_on_conflict(lambda: _execute_transfer(req))
        except IntegrityError:
            # A concurrent request with the same idempotency key committed first.
            existing = _find_by_idempotency_key(req.actor_id, req.idempotency_key)
            if existing is None:
                raise
            raise DuplicateTransferError(existing.reference) from None
        except TryAgainError as exc:
            raise BusyError() from exc
    except DuplicateTransferError:
        raise
    except DomainError as exc:
        # A replay of a transfer that went through is refused by the rules when the money has
        # since moved (an emptied or frozen account): it is still a replay, not a failure. Only a
        # key can make a replay: without one (None would match every row without a key) it isn't.
        existing = _find_by_idempotency_key(req.actor_id, req.idempotency_key) if req.idempotency_key else None
        if existing is not None:
            raise DuplicateTransferError(existing.reference) from None
        log_standalone_event(
            "TRANSFER_FAILED", _audit_details(req) | {"reason": type(exc).__name__}, user_id=req.actor_id
        )
        raise


def record_refused_transfer_form(actor: User, owner_id: int, kind: str, fields: list[str],
                                 submitted: dict[str, str], description: str = "") -> None:
    """Log TRANSFER_FAILED for a transfer form refused by validation; commits that row only.

    A refused form (an account id that is not one of the owner's, a malformed amount, a missing
    idempotency key) moves nothing but is still an attempt on record, like a refusal by the
    rules (DESIGN.md sections 3 and 4; PCI DSS 10.2.1). kind: "internal" or "external".
    fields: names of the fields in error. submitted: the raw account and amount values as
    posted, each cut to 32 characters (no secrets: the idempotency key is never included).
    description: the description as posted; an admin's is recorded as `reason_given`, cut to
    140 characters, as on the rows of transfers the rules refuse (PCI DSS 10.2.2).
    """
    details = {"kind": kind, "reason": "InvalidForm", "fields": sorted(fields), "source_owner_id": owner_id,
               "acting_role": actor.role, "submitted": {name: str(value)[:32] for name, value in submitted.items()}}
    if actor.role == "admin" and description.strip():
        details["reason_given"] = description.strip()[:140]
    log_standalone_event("TRANSFER_FAILED", details, user_id=actor.id)


def transfer_internal(actor: User, owner_id: int, source_id: int, target_id: int, amount: Decimal,
                      description: str, idempotency_key: str) -> str:
    """Move `amount` (Decimal, two places) between two accounts of customer `owner_id`; commits once.

    actor: the signed-in customer (then `owner_id` must be their own id) or an admin acting on
    a customer's accounts (description required as the reason; spec section 7).
    Returns the reference shared by the debit and credit rows. A repeated `idempotency_key`
    raises DuplicateTransferError carrying the first transfer's reference and moves nothing.
    Raises AccountNotFoundError, AccountNotActiveError, InsufficientFundsError,
    SameAccountError, LimitExceededError, ValidationRuleError, BusyError; on any refusal
    nothing is written but a TRANSFER_FAILED audit row (DESIGN.md section 3).
    """
    return _run_transfer(TransferRequest(
        actor=actor, owner_id=owner_id, source_id=source_id, target_id=target_id, amount=amount,
        description=(description or "").strip(), idempotency_key=idempotency_key, kind="internal",
    ))


def transfer_external(actor: User, owner_id: int, source_id: int, target_account_number: str, amount: Decimal,
                      description: str, idempotency_key: str) -> str:
    """Move `amount` (Decimal, two places) from customer `owner_id`'s account to any active account
    named by its 12-digit number; commits once.

    Same rules, return value and errors as transfer_internal, except that an unknown, frozen or
    closed target all raise TargetUnavailableError with one message, so the form can't be used
    to learn which numbers exist (DESIGN.md section 3).
    """
    return _run_transfer(TransferRequest(
        actor=actor, owner_id=owner_id, source_id=source_id, target_account_number=target_account_number,
        amount=amount, description=(description or "").strip(), idempotency_key=idempotency_key, kind="external",
    ))


# ---------------------------------------------------------------------------------------------
# Transactions list and the ledger check
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransactionFilters:
    """Filters of the transactions lists; dates are UTC days, both bounds inclusive."""

    date_from: date | None = None
    date_to: date | None = None
    type: str | None = None
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    account_number: str | None = None


# The filters' WHERE clauses, each on a named bound parameter, so a statement built once per
# combination of filters serves every request with those filters (transaction_filter_values
# gives the values). Dates bound as aware UTC datetimes; amounts as Decimal, which the column's
# type turns into cents.
_FILTER_CLAUSES = {
    "from_time": Transaction.timestamp >= bindparam("from_time"),
    "until_time": Transaction.timestamp < bindparam("until_time"),
    "entry_type": Transaction.type == bindparam("entry_type"),
    "min_amount": Transaction.amount >= bindparam("min_amount"),
    "max_amount": Transaction.amount <= bindparam("max_amount"),
}


def transaction_filter_values(filters: TransactionFilters) -> dict[str, object]:
    """The bound values of the filters that apply, keyed by the parameter names of
    _FILTER_CLAUSES, always in that order: `from_time` (midnight UTC starting date_from),
    `until_time` (midnight UTC after date_to; absent for the last representable day),
    `entry_type`, `min_amount`, `max_amount` (Decimal, two places)."""
    values: dict[str, object] = {}
    if filters.date_from is not None:
        values["from_time"] = start_of_utc_day(filters.date_from)
    if filters.date_to is not None and after_utc_day(filters.date_to) is not None:
        values["until_time"] = after_utc_day(filters.date_to)
    if filters.type in ENTRY_TYPES:
        values["entry_type"] = filters.type
    if filters.min_amount is not None:
        values["min_amount"] = filters.min_amount
    if filters.max_amount is not None:
        values["max_amount"] = filters.max_amount
    return values


def _where_filters(stmt: Select, names) -> Select:
    """`stmt` with the WHERE clauses of the filters `names` (keys of _FILTER_CLAUSES), unbound."""
    return stmt.where(*(_FILTER_CLAUSES[name] for name in names)) if names else stmt


def apply_transaction_filters(stmt: Select, filters: TransactionFilters) -> Select:
    """Add the WHERE clauses of `filters`, with their values bound, to a statement selecting
    Transaction rows."""
    values = transaction_filter_values(filters)
    return _where_filters(stmt, values).params(values) if values else stmt


# On PostgreSQL, a customer's transactions list merges one walk per account for their first
# MERGED_ACCOUNT_SCANS accounts by id (a customer holds at most MAX_ACCOUNTS_PER_CUSTOMER open
# accounts, 5 by default); any account past those (closed accounts count, and the limit is a
# setting) is read by one further walk over those, empty for nearly every customer.
MERGED_ACCOUNT_SCANS = 5

_OWNER_ACCOUNT_IDS = select(Account.id).where(Account.owner_id == bindparam("owner_id")).order_by(Account.id)


def _owner_account_id(position: int):
    """The id of the `owner_id` customer's account at `position` (from 0) in id order, NULL when
    they hold fewer: a scalar subquery on ix_account_owner_id_id."""
    return _OWNER_ACCOUNT_IDS.offset(fixed_limit(position)).limit(fixed_limit(1)).scalar_subquery()


@lru_cache(maxsize=256)
def _customer_page_statement(dialect: str, filter_names: tuple[str, ...], account_count: int) -> Select:
    """The statement of a page of a customer's entries for one combination of filters, built
    once (and its SQLAlchemy cache key computed once). Bound parameters: the filters' values
    (transaction_filter_values), `skip` and `take` (the page's rows in the merged list), and on
    PostgreSQL `owner_id` and `wanted` (entries read per account at most: the rows before the
    page plus the page), on SQLite `account_0` ... `account_<account_count - 1>`.

    The page's ids come from each account's entries read newest first through
    ix_transaction_account_id_id_timestamp_type_amount (the filters are tested inside that
    index, without visiting the table), one walk per account, and the walks, each already in id
    order, are merged under the page's ORDER BY: the rows before the page are stepped over,
    never sorted, and the merge stops at the page's last row. Page 1 reads about 26 index
    entries per account however long the history, where one ORDER BY over all the customer's
    entries would read and sort every one of them (and, with stale statistics, PostgreSQL may
    instead walk the whole table backwards by id).

    On PostgreSQL (a Merge Append) each walk finds its account's id with a scalar subquery
    (_owner_account_id), so the statement is the same for every customer. On SQLite (the merge
    of a compound SELECT's ORDER BY, which SQLite pushes into each part, where the index serves
    it) the caller reads the account ids first. Against sorting every account's newest entries
    up to the page first, finding page 200's ids takes about half the time on either database
    (PostgreSQL's server CPU 2.3 -> 1.6 ms for a customer with 8,700 entries; SQLite 2.4 -> 1.1
    ms for 5,000), and page 1's a tenth on SQLite (0.24 -> 0.02 ms). Then the page's rows are
    read with their account and counterparties joined.
    """
    def entries_of(account_id) -> Select:
        return _where_filters(select(Transaction.id).where(Transaction.account_id == account_id), filter_names)

    skip, take = bindparam("skip", type_=BigInteger), bindparam("take", type_=BigInteger)
    if dialect == "postgresql":
        def bounded(scan: Select) -> Select:
            return scan.order_by(Transaction.id.desc()).limit(bindparam("wanted", type_=BigInteger))

        further = bounded(entries_of(Account.id)).lateral("further")
        scans = [select(bounded(entries_of(_owner_account_id(position))).subquery().c.id)
                 for position in range(MERGED_ACCOUNT_SCANS)]
        scans.append(select(further.c.id).select_from(Account).join(further, true())
                     .where(Account.owner_id == bindparam("owner_id"),
                            Account.id > _owner_account_id(MERGED_ACCOUNT_SCANS - 1)))
        merged = union_all(*scans).subquery()
        page_ids = select(merged.c.id).order_by(merged.c.id.desc()).offset(skip).limit(take).subquery()
    else:
        merged = union_all(*(entries_of(bindparam(f"account_{n}", type_=Account.id.type)) for n in range(account_count)))
        page_ids = merged.order_by(merged.selected_columns.id.desc()).offset(skip).limit(take).subquery()
    return _CUSTOMER_ENTRIES.join(page_ids, _ENTRY.c.id == page_ids.c.id).order_by(_ENTRY.c.id.desc())


def list_customer_transactions(owner_id: int, filters: TransactionFilters, page: int) -> Page:
    """Page `page` (from 1; 25 rows, newest first) of the ledger entries of `owner_id`'s accounts.

    A page number below 1 or past the end gives an empty page, never an error (DESIGN.md §8).
    One statement on PostgreSQL, two on SQLite (_customer_page_statement); the cost grows with
    the page number, not with the length of the history.
    """
    if page < 1:
        return Page([], page, False)
    dialect = db.session.get_bind().dialect.name
    values = transaction_filter_values(filters)
    params: dict[str, object] = values | {"skip": (page - 1) * PAGE_SIZE, "take": PAGE_SIZE + 1}
    if dialect == "postgresql":
        params |= {"owner_id": owner_id, "wanted": page * PAGE_SIZE + 1}
        account_count = 0
    else:
        account_ids = db.session.connection().scalars(_OWNER_ACCOUNT_IDS, {"owner_id": owner_id}).all()
        if not account_ids:
            return Page([], page, False)
        params |= {f"account_{n}": account_id for n, account_id in enumerate(account_ids)}
        account_count = len(account_ids)
    stmt = _customer_page_statement(dialect, tuple(values), account_count)
    rows = [_ledger_entry(row) for row in db.session.connection().execute(stmt, params).all()]
    return Page(rows[:PAGE_SIZE], page, len(rows) > PAGE_SIZE)


ALL_TRANSACTIONS_PAGE_SIZE = 25


# The id of the account with this number (NULL, so no entry, when there is none).
_ACCOUNT_ID_BY_NUMBER = (select(Account.__table__.c.id)
                         .where(Account.__table__.c.account_number == bindparam("account_number"))
                         .scalar_subquery())


@lru_cache(maxsize=128)
def _staff_page_statements(filter_names: tuple[str, ...], with_cursor: bool) -> tuple[Select, Select | None]:
    """The staff list's statements for one combination of filters (keys of _FILTER_CLAUSES,
    plus `account_number`), built once: their values are bound by name.

    The keyset (keyset_statements) runs on the ledger alone, and the page's 26 ids are then
    joined to the accounts and owners. Joining first and limiting last made PostgreSQL's
    generic plan expect a third of the ledger at each join and build Memoize hash tables sized
    for it: on 1,000,000 rows that cost 2.2 ms of the server's CPU per page (0.2 ms now).
    """
    keys = _where_filters(select(_ENTRY.c.id), [name for name in filter_names if name != "account_number"])
    if "account_number" in filter_names:
        keys = keys.where(_ENTRY.c.account_id == _ACCOUNT_ID_BY_NUMBER)
    def entries(page_keys: Select) -> Select:
        page_ids = page_keys.subquery("page_ids")
        return _STAFF_ENTRIES.join(page_ids, page_ids.c.id == _ENTRY.c.id).order_by(_ENTRY.c.id.desc())

    return keyset_statements(keys, _ENTRY.c.id, ALL_TRANSACTIONS_PAGE_SIZE, with_cursor, around=entries)


def list_all_transactions(filters: TransactionFilters, before: int | None) -> KeysetPage:
    """Every ledger entry (for auditors and admins), newest first, 25 per page, keyset-paginated.

    filters: as for customers plus `account_number` (exact, 12 digits). before: the cursor, an
    entry id (exclusive), None for the newest page, 0 for an empty page (malformed cursor).
    The owner's name only is read: an auditor's list never reads password hashes or MFA keys.
    """
    values = transaction_filter_values(filters)
    if filters.account_number:
        values["account_number"] = filters.account_number
    statements = _staff_page_statements(tuple(values), before is not None)
    return run_keyset_page(statements, before, ALL_TRANSACTIONS_PAGE_SIZE, row=_ledger_entry, params=values)


# ---------------------------------------------------------------------------------------------
# Administration: all accounts, freezes
# ---------------------------------------------------------------------------------------------


def list_all_accounts(page: int, account_number: str | None = None) -> Page:
    """Every account with its owner, newest first, 25 per page; `account_number` filters by a
    run of digits anywhere in the number (anything but digits is ignored)."""
    stmt = select(Account).options(joinedload(Account.owner)).order_by(Account.id.desc())
    digits = "".join(ch for ch in (account_number or "") if ch.isascii() and ch.isdigit())[:ACCOUNT_NUMBER_DIGITS]
    if digits:
        stmt = stmt.where(Account.account_number.contains(digits, autoescape=True))
    return numbered_page(stmt, page)


def get_account(account_id: int) -> Account:
    """The account with this id; raises AccountNotFoundError (shown as 404) when there is none."""
    account = db.session.get(Account, account_id)
    if account is None:
        raise AccountNotFoundError()
    return account


def _set_status(actor: User, account_id: int, new_status: str, from_status: str, action: str) -> bool:
    """Conditional status change `from_status` → `new_status`; True if it happened, False if the
    account already had `new_status`. Raises AccountNotFoundError, ValidationRuleError; the
    refusal by rule is on record too: `action` with the outcome "refused", the reason (the
    message, naming the account's status) and the status asked for (`to`), committed on its
    own (PCI DSS 10.2.1.2, 10.2.2)."""
    actor_id = actor.id
    try:
        return _change_status(actor, account_id, new_status, from_status, action)
    except ValidationRuleError as exc:
        log_standalone_event(action, {"account_id": account_id, "outcome": "refused", "reason": str(exc),
                                      "to": new_status}, user_id=actor_id)
        raise


def _change_status(actor: User, account_id: int, new_status: str, from_status: str, action: str) -> bool:
    if actor.role != "admin":
        raise ValidationRuleError("Only administrators freeze and unfreeze accounts.")
    with atomic():
        account = db.session.get(Account, account_id, populate_existing=True)
        if account is None:
            raise AccountNotFoundError()
        result = db.session.execute(
            update(Account).where(Account.id == account_id, Account.status == from_status)
            .values(status=new_status).execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            current = db.session.scalar(select(Account.status).where(Account.id == account_id))
            if current == new_status:
                return False
            raise ValidationRuleError(f"A {current} account cannot be changed to {new_status}.")
        log_event(action, {"account_id": account.id, "account_number": account.account_number,
                           "owner_id": account.owner_id, "from": from_status, "to": new_status},
                  user_id=actor.id)
        return True


def freeze_account(actor: User, account_id: int) -> bool:
    """Freeze an active account (admins only); logs ACCOUNT_FROZEN; commits.

    Returns False, changing nothing, when the account is frozen already. A frozen account can
    neither send nor receive money (the transfer's conditional updates check the status).
    Raises AccountNotFoundError (404), ValidationRuleError (closed account, or not an admin),
    the latter logged as a refused ACCOUNT_FROZEN (_set_status).
    """
    return _set_status(actor, account_id, "frozen", "active", "ACCOUNT_FROZEN")


def unfreeze_account(actor: User, account_id: int) -> bool:
    """Make a frozen account active again (admins only); logs ACCOUNT_UNFROZEN; commits.

    Returns False, changing nothing, when the account is active already. Raises
    AccountNotFoundError (404), ValidationRuleError (closed account, or not an admin), the
    latter logged as a refused ACCOUNT_UNFROZEN (_set_status).
    """
    return _set_status(actor, account_id, "active", "frozen", "ACCOUNT_UNFROZEN")


@dataclass(frozen=True)
class LedgerReport:
    """Result of `verify_ledger`: `ok`, the problems found, totals in cents, and how many
    transfers were matched with their audit rows."""

    ok: bool
    problems: list[str]
    accounts_checked: int
    total_balance_cents: int
    total_deposits_cents: int
    transfers_checked: int


def verify_ledger() -> LedgerReport:
    """Check the invariants of DESIGN.md section 2 over the whole database (read-only), and that
    the ledger and the audit trail tell the same story.

    No balance is negative; each account's balance equals its credits minus its debits; every
    debit, on its sender's account, has one matching credit on its receiver's (same reference,
    amount, sender, receiver, initiator, description and time); the sum of all balances equals
    the sum of external money in (opening deposits). Then every transfer in the ledger has exactly one TRANSFER_CREATED audit
    row with its reference, amount, source account and target account, logged under the user
    the ledger names as its initiator and holding the entry_mac of its description and time,
    and every such row a transfer; every account has exactly one ACCOUNT_CREATED row, whose
    opening deposit is what the ledger holds as the account's deposit and whose number, owner
    and type are the account's; each account's status is where its freezes and unfreezes left it
    (_audit_cross_check, _status_cross_check). First of all, the ledger's append-only triggers
    must all be there, enabled and as their migration made them
    (audit_services.append_only_trigger_problems).
    Sums are taken in integer cents. Returns a LedgerReport; raises nothing on a violation.
    """
    cents = lambda column: type_coerce(column, BigInteger)  # noqa: E731
    problems: list[str] = audit_services.append_only_trigger_problems(db.session, "transaction")
    balances = dict(db.session.execute(select(Account.id, cents(Account.balance))).all())
    for account_id, balance in balances.items():
        problems += _not_cents(f"account {account_id}: its balance", balance)
        if type(balance) is int and balance < 0:
            problems.append(f"account {account_id} has a negative balance ({balance} cents)")
    movements = db.session.execute(
        select(Transaction.account_id, Transaction.type, func.sum(cents(Transaction.amount)))
        .group_by(Transaction.account_id, Transaction.type)
    ).all()
    net: dict[int, int] = {}
    for account_id, entry_type, total in movements:
        sign = {"credit": 1, "debit": -1}.get(entry_type, 0)  # any other type is reported below
        net[account_id] = net.get(account_id, 0) + sign * int(total)
    # Every row as the table's constraints shape it: a known type, a positive amount, accounts
    # that exist. The constraints can be switched off (SQLite's PRAGMA ignore_check_constraints
    # and foreign_keys, PostgreSQL's DROP CONSTRAINT), and a row of another type, a negative
    # amount or on no account would slip past every sum below.
    existing = select(Account.id)
    for row_id, entry_type, amount, account_id, sender_id, receiver_id in db.session.execute(
        select(Transaction.id, Transaction.type, cents(Transaction.amount), Transaction.account_id,
               Transaction.sender_account_id, Transaction.receiver_account_id)
        .where(or_(Transaction.type.is_(None), Transaction.type.not_in(ENTRY_TYPES), cents(Transaction.amount) <= 0,
                   Transaction.account_id.is_(None), Transaction.account_id.not_in(existing),
                   Transaction.sender_account_id.not_in(existing), Transaction.receiver_account_id.not_in(existing)))
        .order_by(Transaction.id)
    ):
        problems.append(f"ledger row {row_id}: type {entry_type!r}, amount {amount} cents, on account {account_id} "
                        f"from {sender_id} to {receiver_id}: not a debit or credit of a positive amount "
                        "between accounts that exist")
    for account_id, balance in balances.items():
        if net.get(account_id, 0) != balance:
            problems.append(
                f"account {account_id}: balance {balance} cents but ledger says {net.get(account_id, 0)} cents"
            )
    # A transfer's debit sits on its sender's account, its credit on its receiver's, and the two
    # rows agree on reference, amount, sender and receiver: a credit moved to another account
    # (or a debit to another sender) no longer pairs up.
    debit_side = db.session.execute(
        select(Transaction.reference, cents(Transaction.amount), Transaction.account_id,
               Transaction.receiver_account_id, Transaction.sender_account_id, Transaction.initiated_by_user_id,
               Transaction.description, Transaction.timestamp)
        .where(Transaction.type == "debit")
    ).all()
    credit_side: dict[str, tuple] = {}
    for reference, amount, account_id, sender_id, receiver_id, initiator_id, description, moment in db.session.execute(
        select(Transaction.reference, cents(Transaction.amount), Transaction.account_id,
               Transaction.sender_account_id, Transaction.receiver_account_id, Transaction.initiated_by_user_id,
               Transaction.description, Transaction.timestamp)
        .where(Transaction.type == "credit", Transaction.sender_account_id.is_not(None))
    ):
        if account_id != receiver_id:
            problems.append(f"transfer {reference}: its credit is on account {account_id}, "
                            f"but names account {receiver_id} as the receiver")
        if reference in credit_side:
            problems.append(f"transfer {reference}: more than one credit")
        credit_side[reference] = (amount, sender_id, receiver_id, initiator_id, description, moment)
        problems += _not_cents(f"transfer {reference}: its credit", amount)
    for reference, amount, account_id, receiver_id, sender_id, initiator_id, description, moment in debit_side:
        problems += _not_cents(f"transfer {reference}: its debit", amount)
        if account_id != sender_id:
            problems.append(f"transfer {reference}: its debit is on account {account_id}, "
                            f"but names account {sender_id} as the sender")
        if credit_side.pop(reference, None) != (amount, sender_id, receiver_id, initiator_id, description, moment):
            problems.append(f"transfer {reference}: debit without a matching credit "
                            "(same amount, sender, receiver, initiator, description and time)")
    for reference in credit_side:
        problems.append(f"transfer {reference}: credit without a matching debit")
    deposit_rows = db.session.execute(
        select(Transaction.account_id, cents(Transaction.amount), Transaction.receiver_account_id,
               Transaction.initiated_by_user_id)
        .where(Transaction.type == "credit", Transaction.sender_account_id.is_(None))
    ).all()
    for account_id, amount, receiver_id, _initiator_id in deposit_rows:
        if account_id != receiver_id:
            problems.append(f"account {account_id}: an opening deposit on it names account {receiver_id}")
        problems += _not_cents(f"account {account_id}: its opening deposit", amount)
    total_balance = sum(balance for balance in balances.values() if type(balance) is int)
    deposits = sum(amount for _, amount, _, _ in deposit_rows if type(amount) is int)
    if total_balance != deposits:
        problems.append(f"sum of balances {total_balance} cents differs from deposits {deposits} cents")
    # The debits as _audit_cross_check takes them: without the sender id (index 4), checked above.
    problems += _audit_cross_check([row[:4] + row[5:] for row in debit_side], deposit_rows)
    return LedgerReport(not problems, problems, len(balances), total_balance, deposits, len(debit_side))


def _not_cents(what: str, value: object) -> list[str]:
    """[a problem] when `value`, a money column as the database returned it, is not an integer
    number of cents: SQLite stores whatever is written with the constraints off (the text
    '5000_0', the real 100000.99), and its SUM and Python's int() read such a value differently,
    so every sum above would be in doubt. [] for an int."""
    if type(value) is int:
        return []
    return [f"{what} is stored as {value!r}, not a whole number of cents"]


def _audit_cents(value: object) -> int | None:
    """An amount as the audit details hold it ("120.50") in integer cents; None if it isn't one."""
    try:
        amount = Decimal(str(value))
    except ArithmeticError:
        return None
    if not amount.is_finite() or amount != amount.quantize(Decimal("0.01")):
        return None
    return int(amount * 100)


def _audit_details_of(action: str) -> Iterator[tuple[int, int | None, dict]]:
    """(audit row id, its user_id, details as a dict) of every row of `action`, in chain order;
    details that are not a JSON object read as {} (the checks below then report the row)."""
    for event in audit_services.recorded_events((action,)):
        yield event.id, event.user_id, event.details if event.details is not None else {}


def _audit_cross_check(debits: list[Row], deposits: list[Row]) -> list[str]:
    """The ledger against the audit trail: each ledger row is written with its audit row in one
    transaction (DESIGN.md sections 3 and 4), so a row on one side only, or the two disagreeing,
    means money was written behind the app's back (PCI DSS 10.2.1, 10.3.4). A deposit and its
    matching balance inserted with SQL pass the balance checks above; they can't pass this one
    without an audit row, which only the holder of AUDIT_HMAC_KEY can chain (`flask verify-audit`).

    An account's number, owner and type never change after it is opened: each must still be
    what its ACCOUNT_CREATED row says (an account handed to another customer with SQL is caught).

    A transfer's initiator (the ledger's initiated_by_user_id) must be the user its
    TRANSFER_CREATED row is logged under: a transfer made to look like another user's (or like
    an admin's) with SQL is caught.

    A transfer's description and time must be what its TRANSFER_CREATED row's entry_mac
    recorded (transfer_entry_mac; rows written before it was recorded hold none).

    debits: ledger debit rows (reference, amount in cents, source account id, target account id,
    initiator's user id, description, timestamp).
    deposits: opening-deposit credits (account id, amount in cents, receiver account id,
    initiator's user id); each deposit's initiator must be the user its ACCOUNT_CREATED row is
    logged under (the customer, or the admin who opened the account for them).
    Returns the problems found, as sentences; an empty list when both sides agree.
    """
    problems: list[str] = []
    accounts: dict[int, tuple] = {}
    statuses: dict[int, str] = {}
    for account_id, number, owner_id, kind, status in db.session.execute(
            select(Account.id, Account.account_number, Account.owner_id, Account.type, Account.status)):
        accounts[account_id] = (number, owner_id, kind)
        statuses[account_id] = status
    numbers = {account_id: facts[0] for account_id, facts in accounts.items()}
    # reference -> (audit row id, (amount in cents, source account id, target account number,
    # initiator), entry_mac): only what is compared is kept, so a ledger of millions of transfers
    # fits in memory.
    recorded: dict[str, tuple[int, tuple]] = {}
    for row_id, actor_id, details in _audit_details_of("TRANSFER_CREATED"):
        reference = str(details.get("reference", ""))
        if reference in recorded:
            problems.append(f"transfer {reference}: recorded by audit rows {recorded[reference][0]} and {row_id}")
            continue
        recorded[reference] = (row_id, (_audit_cents(details.get("amount")), details.get("source_account_id"),
                                        details.get("target_account"), actor_id), details.get("entry_mac"))
    names = ("amount", "source account", "target account", "initiator")
    for reference, amount, source_id, target_id, initiator_id, description, moment in debits:
        row_id, audited, entry_mac = recorded.pop(reference, (None, None, None))
        if audited is None:
            problems.append(f"transfer {reference}: no TRANSFER_CREATED audit row records it")
            continue
        ledger = (amount, source_id, numbers.get(target_id), initiator_id)
        for name, value, said in zip(names, ledger, audited):
            if said != value:
                problems.append(f"transfer {reference}: the ledger's {name} is {value}, "
                                f"its TRANSFER_CREATED audit row {row_id} says {said}")
        if entry_mac is not None and not hmac.compare_digest(
                str(entry_mac), transfer_entry_mac(reference, description, moment)):
            problems.append(f"transfer {reference}: its description or time is not what its TRANSFER_CREATED "
                            f"audit row {row_id} recorded")
    for reference, (row_id, _audited, _entry_mac) in recorded.items():
        problems.append(f"audit row {row_id} (TRANSFER_CREATED) records transfer {reference or '(none)'}, "
                        "which the ledger does not hold")

    deposited: dict[int, list[int]] = {}
    depositors: dict[int, set[int]] = {}
    for account_id, amount, _receiver_id, initiator_id in deposits:
        deposited.setdefault(account_id, []).append(int(amount))
        depositors.setdefault(account_id, set()).add(initiator_id)
    # account id -> (audit row id, opening deposit in cents, (number, owner id, type) as recorded,
    # the user who opened it)
    opened: dict[int, tuple[int, int | None, tuple, int | None]] = {}
    for row_id, actor_id, details in _audit_details_of("ACCOUNT_CREATED"):
        account_id = details.get("account_id")
        if account_id not in accounts:
            problems.append(f"audit row {row_id} (ACCOUNT_CREATED) records account {account_id}, which does not exist")
        elif account_id in opened:
            problems.append(f"account {account_id}: opened by audit rows {opened[account_id][0]} and {row_id}")
        else:
            opened[account_id] = (row_id, _audit_cents(details.get("opening_deposit")),
                                  (details.get("account_number"), details.get("owner_id"), details.get("type")),
                                  actor_id)
    for account_id in sorted(accounts):
        in_ledger = deposited.get(account_id, [])
        if len(in_ledger) > 1:
            problems.append(f"account {account_id}: {len(in_ledger)} opening deposits in the ledger, one at most")
        if account_id not in opened:
            problems.append(f"account {account_id}: no ACCOUNT_CREATED audit row records its opening")
            continue
        row_id, audited, recorded_facts, opener_id = opened[account_id]
        if audited != sum(in_ledger):
            problems.append(f"account {account_id}: opening deposit {sum(in_ledger)} cents in the ledger, "
                            f"its ACCOUNT_CREATED audit row {row_id} says {audited} cents")
        for initiator_id in sorted(depositors.get(account_id, set()) - {opener_id}, key=str):
            problems.append(f"account {account_id}: its opening deposit names user {initiator_id} as the "
                            f"initiator, its ACCOUNT_CREATED audit row {row_id} user {opener_id}")
        for name, value, said in zip(("number", "owner", "type"), accounts[account_id], recorded_facts):
            if said != value:
                problems.append(f"account {account_id}: its {name} is {value}, "
                                f"its ACCOUNT_CREATED audit row {row_id} says {said}")
    problems += _status_cross_check(statuses)
    return problems


def _status_cross_check(statuses: dict[int, str]) -> list[str]:
    """Each account's status against its audit trail: an account opens active, and only an
    ACCOUNT_FROZEN or ACCOUNT_UNFROZEN row that carries the change ("to", not a refusal) moves
    it. A frozen account unfrozen with SQL can send money again; an active one frozen with SQL
    locks its owner out: either is reported. statuses: {account id: status as stored}."""
    audited = {account_id: "active" for account_id in statuses}
    last_row: dict[int, int] = {}
    for action in ("ACCOUNT_FROZEN", "ACCOUNT_UNFROZEN"):
        for row_id, _actor_id, details in _audit_details_of(action):
            account_id = details.get("account_id")
            if details.get("outcome") == "refused" or account_id not in audited:
                continue
            if row_id > last_row.get(account_id, 0):
                audited[account_id], last_row[account_id] = details.get("to"), row_id
    return [f"account {account_id}: status {status}, but its audit trail leaves it {audited[account_id]}"
            + (f" (audit row {last_row[account_id]})" if account_id in last_row else " (never frozen)")
            for account_id, status in sorted(statuses.items()) if status != audited[account_id]]
