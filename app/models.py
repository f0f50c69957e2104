"""SQLAlchemy models: data and small invariant helpers only. Models never commit.

Each table is written only by the `services.py` of the package that owns it (DESIGN.md section 1).
Money columns hold integer cents behind the `Cents` type, which presents `Decimal` to Python.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple

from flask_login import UserMixin
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db
from .money import from_cents, to_cents

ROLES = ("customer", "support", "auditor", "admin")
STAFF_ROLES = ("support", "auditor", "admin")
ACCOUNT_TYPES = ("checking", "savings")
ACCOUNT_STATUSES = ("active", "frozen", "closed")
ENTRY_TYPES = ("debit", "credit")
TICKET_STATUSES = ("open", "in_progress", "resolved")


def utcnow() -> datetime:
    """Current time as a timezone-aware UTC datetime (the one clock the application reads)."""
    return datetime.now(timezone.utc)


def as_utc(moment: datetime | None) -> datetime | None:
    """Return `moment` as aware UTC; SQLite hands back naive datetimes that are UTC already."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def format_utc_minute(moment: datetime | None) -> str:
    """`moment` (aware, or naive meaning UTC) as "YYYY-MM-DD HH:MM" in UTC, the way the tables
    show times; None gives "". Written out field by field: an entry table formats one per row,
    and strftime on an aware datetime costs about three times as much."""
    if moment is None:
        return ""
    if moment.tzinfo is not None and moment.utcoffset():
        moment = moment.astimezone(timezone.utc)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {moment.hour:02d}:{moment.minute:02d}"


def start_of_utc_day(day: date) -> datetime:
    """Midnight UTC at the start of `day` (aware datetime)."""
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def after_utc_day(day: date) -> datetime | None:
    """Midnight UTC just after `day` (the exclusive upper bound of an inclusive `date_to`);
    None for the last representable day, which has no upper bound."""
    if day == date.max:
        return None
    return start_of_utc_day(day + timedelta(days=1))


def new_session_token() -> str:
    """A fresh per-user session token: 32 random bytes, URL-safe (OWASP ASVS 3.2.2)."""
    return secrets.token_urlsafe(32)


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL text for `column IN (...)` over fixed, trusted literals (for CHECK constraints)."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Cents(TypeDecorator):
    """Exact money column: integer minor units in the database, Decimal (2 places) in Python.

    SQLite has no decimal type (`Numeric` there is floating point), so every backend stores
    BigInteger cents (DESIGN.md section 2). Binding a value with more than two places raises
    ValueError instead of rounding.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> int | None:
        if value is None:
            return None
        return to_cents(value)

    def process_result_value(self, value: int | None, dialect: Any) -> Decimal | None:
        if value is None:
            return None
        return from_cents(value)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use app.models.utcnow()")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return as_utc(value)


class User(UserMixin, db.Model):
    """A person who signs in: a customer or a member of staff (support, auditor, admin)."""

    __tablename__ = "user"
    __table_args__ = (
        CheckConstraint(_in("role", ROLES), name="role_valid"),
        CheckConstraint("length(email) <= 254", name="email_length"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    full_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254), unique=True)
    phone: Mapped[str] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="customer", index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    session_token: Mapped[str] = mapped_column(String(64), default=new_session_token)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Multi-factor sign-in (app/auth/mfa.py): the TOTP key, encrypted; when it was enrolled; and
    # the last time step whose code was accepted, so each code works once (RFC 6238 section 5.2).
    mfa_secret: Mapped[str | None] = mapped_column(String(255))
    mfa_enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mfa_last_step: Mapped[int | None] = mapped_column(BigInteger)

    accounts: Mapped[list[Account]] = relationship(back_populates="owner", order_by="Account.id")

    def get_id(self) -> str:
        """Flask-Login's id: `"<user id>:<session token>"`, so rotating the token ends sessions."""
        return f"{self.id}:{self.session_token}"

    @property
    def mfa_enabled(self) -> bool:
        """True once the user has enrolled an authenticator."""
        return self.mfa_secret is not None

    @property
    def is_staff(self) -> bool:
        """True for support, auditor and admin."""
        return self.role in STAFF_ROLES


class LoginAttempt(db.Model):
    """One failed sign-in, kept for the sliding-window throttle (DESIGN.md section 5)."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_email_attempted_at", "email", "attempted_at"),
        Index("ix_login_attempt_ip_address_attempted_at", "ip_address", "attempted_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    ip_address: Mapped[str] = mapped_column(String(45))
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Account(db.Model):
    """A customer's checking or savings account; `balance` is Decimal, never negative."""

    __tablename__ = "account"
    __table_args__ = (
        CheckConstraint("balance >= 0", name="balance_non_negative"),
        CheckConstraint(_in("type", ACCOUNT_TYPES), name="type_valid"),
        CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status_valid"),
        CheckConstraint("length(account_number) = 12", name="account_number_length"),
        Index("ix_account_owner_id_id", "owner_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_number: Mapped[str] = mapped_column(String(12), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    type: Mapped[str] = mapped_column(String(16))
    balance: Mapped[Decimal] = mapped_column(Cents, default=Decimal("0.00"))
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User] = relationship(back_populates="accounts")

    @property
    def is_active(self) -> bool:
        """True when the account may send and receive money."""
        return self.status == "active"


class AccountHolder(NamedTuple):
    """A user as the rules on holding accounts read them: role, is_active, and `accounts_held`
    (accounts not closed, the ones the per-customer limit counts)."""

    role: str
    is_active: bool
    accounts_held: int


def lock_account_holder(user_id: int) -> AccountHolder | None:
    """Lock user `user_id`'s row (FOR UPDATE on PostgreSQL; SQLite's write transaction
    serializes anyway) until the transaction ends, and read their role, active state and how
    many accounts they hold; None when there is no such user. Opening an account and an admin's
    change of role both go through this lock, so neither decides on a state the other is
    changing (a customer holding accounts stays a customer: auth.services.update_user)."""
    state = db.session.execute(
        select(User.role, User.is_active).where(User.id == user_id).with_for_update()
    ).one_or_none()
    if state is None:
        return None
    held = db.session.scalar(
        select(func.count(Account.id)).where(Account.owner_id == user_id, Account.status != "closed")
    )
    return AccountHolder(state.role, state.is_active, held)


class EntrySides:
    """How a ledger entry reads from its account's side; shared by the Transaction model and the
    plain rows the entry tables show (banking.services.LedgerEntry). Needs `type` ("debit" or
    "credit"), `amount` (Decimal, positive), `account`, `sender_account`, `receiver_account`
    (each with `owner_id`) and `initiated_by_user_id`."""

    __slots__ = ()

    @property
    def counterparty(self):
        """The other side of the entry: the receiver of a debit, the sender of a credit."""
        return self.receiver_account if self.type == "debit" else self.sender_account

    @property
    def signed_amount(self) -> Decimal:
        """The amount as it affects this account: negative for a debit."""
        return -self.amount if self.type == "debit" else self.amount

    @property
    def made_by_bank(self) -> bool:
        """True when someone other than the paying account's owner initiated the entry (an
        admin's transfer, or an account an admin opened): the tables mark it "made by the bank",
        so a customer can tell it from their own. The payer is the sender's account, or for an
        opening deposit (no sender) the account itself."""
        return self.initiated_by_user_id != (self.sender_account or self.account).owner_id


class Transaction(db.Model, EntrySides):
    """One ledger entry: a debit or a credit of `amount` (Decimal > 0) on `account_id`.

    A transfer writes a debit on the sender and a credit on the receiver sharing one
    `reference`; an opening deposit is a credit with no sender. The debit of a transfer carries
    the initiating user's `idempotency_key`, unique per user (DESIGN.md section 3).
    """

    __tablename__ = "transaction"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_in("type", ENTRY_TYPES), name="type_valid"),
        CheckConstraint(
            "(type = 'debit' AND account_id = sender_account_id AND receiver_account_id IS NOT NULL)"
            " OR (type = 'credit' AND account_id = receiver_account_id)",
            name="entry_side_matches_account",
        ),
        UniqueConstraint("reference", "type", name="uq_transaction_reference_type"),
        UniqueConstraint(
            "initiated_by_user_id", "idempotency_key", name="uq_transaction_initiator_idempotency_key"
        ),
        # An account's entries newest first, with what the filters test: the list and its
        # filters walk it without visiting the table (migrations 0003).
        Index("ix_transaction_account_id_id_timestamp_type_amount", "account_id", "id", "timestamp", "type", "amount"),
        Index("ix_transaction_timestamp", "timestamp"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("account.id"))
    sender_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    receiver_account_id: Mapped[int | None] = mapped_column(ForeignKey("account.id"), index=True)
    amount: Mapped[Decimal] = mapped_column(Cents)
    type: Mapped[str] = mapped_column(String(6))
    description: Mapped[str] = mapped_column(String(140), default="")
    reference: Mapped[str] = mapped_column(String(24))
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    initiated_by_user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)

    account: Mapped[Account] = relationship(foreign_keys=[account_id])
    sender_account: Mapped[Account | None] = relationship(foreign_keys=[sender_account_id])
    receiver_account: Mapped[Account | None] = relationship(foreign_keys=[receiver_account_id])


class SupportTicket(db.Model):
    """A customer's request to the support desk."""

    __tablename__ = "support_ticket"
    __table_args__ = (
        CheckConstraint(_in("status", TICKET_STATUSES), name="status_valid"),
        Index("ix_support_ticket_customer_id_id", "customer_id", "id"),
        Index("ix_support_ticket_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    subject: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(String(5000))
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    last_updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))

    customer: Mapped[User] = relationship(foreign_keys=[customer_id])
    notes: Mapped[list[TicketNote]] = relationship(back_populates="ticket", order_by="TicketNote.id")


class TicketNote(db.Model):
    """A reply on a ticket by support staff; the ticket's customer can read it."""

    __tablename__ = "ticket_note"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("support_ticket.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    body: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    ticket: Mapped[SupportTicket] = relationship(back_populates="notes")
    author: Mapped[User] = relationship()


class AuditLog(db.Model):
    """One append-only audit record, chained to the previous one by `hash` (DESIGN.md section 4).

    `id` is assigned by the audit service (previous id + 1) so it can be part of the hashed
    content; database triggers refuse UPDATE and DELETE.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_action_id", "action", "id"),
        Index("ix_audit_log_user_id_id", "user_id", "id"),
        Index("ix_audit_log_timestamp", "timestamp"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    action: Mapped[str] = mapped_column(String(32))
    details: Mapped[str] = mapped_column(Text, default="{}")
    ip_address: Mapped[str | None] = mapped_column(String(45))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(db.Model):
    """The single row holding the last audit id and hash; locked to serialize appends."""

    __tablename__ = "audit_chain_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))
