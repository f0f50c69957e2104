"""Identity service: users, passwords, sign-in throttling and session tokens.

The only writer of the `user` and `login_attempt` tables (DESIGN.md section 1). Functions take
plain values and the acting user, raise DomainError subclasses with messages safe to show, and
own their transaction through `atomic()`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import NoReturn

from argon2 import PasswordHasher, profiles
from email_validator import EmailNotValidError, validate_email
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app
from sqlalchemy import bindparam, delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from zxcvbn import zxcvbn

from ..errors import DomainError, ValidationRuleError
from ..extensions import atomic, db, take_allowance
from ..models import ROLES, LoginAttempt, User, as_utc, lock_account_holder, new_session_token, utcnow
from . import mfa
from ..pagination import Page, numbered_page
from ..audit import services as audit_services
from ..security import log_event, log_standalone_event

PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128
PASSWORD_MIN_SCORE = 3
GENERIC_LOGIN_ERROR = "Invalid email or password."


class InvalidCredentialsError(DomainError):
    """Unknown email, wrong password or deactivated user: one message for all (ASVS 2.2.1)."""

    default_message = GENERIC_LOGIN_ERROR


class LoginThrottledError(DomainError):
    """Too many recent failures for this email or IP address. `retry_after`: whole seconds (at
    least 1) until the throttle lets the next attempt be checked, for the 429's Retry-After."""

    default_message = "Too many failed sign-in attempts. Please wait a few minutes and try again."

    def __init__(self, message: str | None = None, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DuplicateEmailError(DomainError):
    """Another user already has this email address."""

    default_message = "An account with this email already exists."


class PasswordPolicyError(DomainError):
    """The proposed password breaks the policy; the message says which rule and why."""


class WrongPasswordError(DomainError):
    """The current password given to confirm a change is wrong."""

    default_message = "The current password is not correct."


class MfaCodeError(DomainError):
    """A one-time code that is wrong, expired or already used. A wrong or expired code gets the
    default message. A code already accepted, or older than the last one accepted, gets
    USED_CODE_MESSAGE: the code the app shows is then right and the user must wait for the next
    one (the code that confirmed enrolment counts as used, so a sign-in within the same 30
    seconds needs the next code). Saying so tells a guesser nothing useful: that code can never
    be accepted again (RFC 6238 section 5.2)."""

    default_message = "That code is not valid. Enter the 6-digit code your authenticator app shows now."


USED_CODE_MESSAGE = ("That code can't be used again: each code works once. Wait until your authenticator app "
                     "shows a new code (every 30 seconds), then enter that one.")


class MfaStateError(DomainError):
    """The multi-factor step can't happen now (already enrolled, not enrolled, required for staff)."""


def normalize_email(email: str | None) -> str:
    """The canonical form of an email address, as stored and compared (DESIGN.md section 8).

    Trimmed, normalized by email-validator (NFC local part, IDNA-normalized domain, so a
    full-width `ｅxample.com` is `example.com`), then lower-cased: two spellings of one mailbox
    can never belong to two users. Text that is not a valid address is only trimmed and
    lower-cased (a sign-in with it simply finds nobody).
    """
    text = (email or "").strip()
    try:
        text = validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError:
        pass
    return text.lower()


def normalize_password(password: str | None) -> str:
    """NFKC-normalize a password before counting, checking or hashing it (NIST SP 800-63B 5.1.1.2)."""
    return unicodedata.normalize("NFKC", password or "")


_NOT_LETTER_OR_DIGIT = re.compile(r"[\W_]+")
_DIGITS = re.compile(r"\d+")


def _made_of_context_words(password: str, sources: tuple[str, ...]) -> bool:
    """Whether `password`, lower-cased and without spaces or punctuation, is nothing but words
    of `sources` (the email's parts, the name's, the bank's), each any number of times and in any
    order: "race@example.com Race Person" for Race Person at race@example.com. zxcvbn scores such
    a string by its length and separators, and can let it through (NIST SP 800-63B 5.1.1.2:
    context-specific words, the username and derivatives). Words of one character are ignored."""
    words = {word for source in sources for word in _NOT_LETTER_OR_DIGIT.split((source or "").casefold())
             if len(word) > 1}
    text = _NOT_LETTER_OR_DIGIT.sub("", password.casefold())
    if not text or not words:
        return False
    reachable = [True] + [False] * len(text)  # reachable[i]: text[:i] is made of words
    for end in range(1, len(text) + 1):
        reachable[end] = any(reachable[end - len(word)] and text.endswith(word, 0, end)
                             for word in words if len(word) <= end)
    return reachable[-1]


def _added_to_context_words(password: str, sources: tuple[str, ...]) -> str | None:
    """The digits and symbols of `password` when its letters are nothing but words of `sources`
    (as _made_of_context_words; "12345" for "BobTester12345" by Bob Tester), else None: a
    derivative of the user's name or email whose only guesswork is what was added to it."""
    letters = "".join(ch for ch in password if ch.isalpha())
    added = "".join(ch for ch in password if not ch.isalpha() and not ch.isspace())
    # The sources' words with their digits dropped as well, so "bob7@example.com" yields "bob".
    sources = sources + tuple(_DIGITS.sub(" ", source or "") for source in sources)
    if not added or not letters or not _made_of_context_words(letters, sources):
        return None
    return added


def password_problem(password: str | None, *, email: str = "", full_name: str = "") -> str | None:
    """Return why `password` is refused, or None when it meets the policy.

    Policy (NIST SP 800-63B 5.1.1.2, OWASP ASVS 2.1.1, 2.1.2, 2.1.7, 2.1.9): 12 to 128 characters
    after NFKC normalization, no composition rules, no truncation, and a zxcvbn score of at
    least 3 given the user's email, name and the bank's name as context (which also covers
    lists of common and breached passwords). Refused as well, whatever zxcvbn scores them, the
    derivatives of those words NIST names: a password made of nothing but them, and one whose
    letters are nothing but them and whose digits and symbols, taken alone, score below 3
    ("BobTester12345"; "Bob 8302 9174 6651" passes).
    """
    normalized = normalize_password(password)
    if len(normalized) < PASSWORD_MIN_LENGTH:
        return f"Use at least {PASSWORD_MIN_LENGTH} characters; a few unrelated words make a good password."
    if len(normalized) > PASSWORD_MAX_LENGTH:
        return f"Use at most {PASSWORD_MAX_LENGTH} characters."
    if any(unicodedata.category(ch) == "Cc" for ch in normalized):
        return "Use printable characters only (no tabs, line breaks or other control characters)."
    bank_name = current_app.config["BANK_NAME"]
    sources = (email, full_name, bank_name, "bank")
    if _made_of_context_words(normalized, sources):
        return ("This password is too easy to guess. It is made only of words from your name, your email "
                "address or the bank's name; add words of your own.")
    added = _added_to_context_words(normalized, sources)
    if added is not None and zxcvbn(added, max_length=PASSWORD_MAX_LENGTH)["score"] < PASSWORD_MIN_SCORE:
        return ("This password is too easy to guess. It is words from your name, your email address or the "
                "bank's name with a few digits or symbols added; add words of your own.")
    context = [part for part in (email, *(full_name or "").split(), bank_name, *bank_name.split(), "bank") if part]
    if email and "@" in email:
        context.append(email.split("@", 1)[0])
    result = zxcvbn(normalized, user_inputs=context, max_length=PASSWORD_MAX_LENGTH)
    if result["score"] < PASSWORD_MIN_SCORE:
        feedback = result.get("feedback") or {}
        reason = feedback.get("warning") or "It would be easy to guess."
        hints = " ".join(feedback.get("suggestions") or [])
        return f"This password is too easy to guess. {reason} {hints}".strip()
    return None


@lru_cache(maxsize=4)
def _hasher_for(profile_name: str) -> PasswordHasher:
    return PasswordHasher.from_parameters(getattr(profiles, profile_name))


def password_hasher() -> PasswordHasher:
    """The Argon2id hasher for the configured profile (ARGON2_PROFILE; OWASP ASVS 2.4.1)."""
    return _hasher_for(current_app.config["ARGON2_PROFILE"])


@lru_cache(maxsize=4)
def _dummy_hash(profile_name: str) -> str:
    return _hasher_for(profile_name).hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """Argon2id hash (PHC string) of the NFKC-normalized password."""
    return password_hasher().hash(normalize_password(password))


def credential_mac(user_id: int, password_hash: str) -> str:
    """audit_services.record_mac of a user's stored password hash (the Argon2id PHC string), as
    64 hex characters: the `credential_mac` of every audit row that writes one (REGISTER_SUCCESS,
    PASSWORD_CHANGED), so a hash swapped with SQL to take an account over with a password the
    intruder knows is reported. (Audit details never name a key after a password or a hash:
    FORBIDDEN_DETAIL_KEYS in app/audit/services.py.)"""
    return audit_services.record_mac("password-hash", user_id, password_hash)


def contact_mac(user_id: int, full_name: str, phone: str) -> str:
    """audit_services.record_mac of a user's name and phone as stored, as 64 hex characters: the
    `contact_mac` of every audit row that writes them (REGISTER_SUCCESS, PROFILE_UPDATED,
    USER_UPDATED), so a phone number rewritten with SQL (the number `flask reset-mfa`'s
    call-back trusts) is reported."""
    return audit_services.record_mac("contact", user_id, full_name, phone)


def verify_password(stored_hash: str, password: str) -> bool:
    """True when `password` matches `stored_hash`; False on mismatch or a malformed hash."""
    try:
        return password_hasher().verify(stored_hash, normalize_password(password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def find_user_by_email(email: str) -> User | None:
    """The user with this email (normalized), or None."""
    return db.session.scalar(select(User).where(User.email == normalize_email(email)))


def get_user(user_id: int) -> User | None:
    """The user with this id, or None (callers turn None into 404)."""
    return db.session.get(User, user_id)


# The user loader's SELECT, built once: every signed-in request runs it, and a statement built
# per call (as Session.get does) also pays for its construction and its cache key each time.
_USER_BY_ID = select(User).where(User.id == bindparam("user_id"))


def load_user(session_id: str) -> User | None:
    """Flask-Login user loader for ids of the form `"<user id>:<session token>"`.

    Returns None (anonymous) when the id is malformed, the user is gone or deactivated, or the
    token no longer matches: logout, password change, role change and deactivation rotate it,
    so a copied cookie stops working (OWASP ASVS 3.3.1, 3.3.3).
    """
    user_part, _, token = (session_id or "").partition(":")
    if not user_part.isascii() or not user_part.isdigit() or not token:
        return None
    user = db.session.execute(_USER_BY_ID, {"user_id": int(user_part)}).scalar_one_or_none()
    if user is None or not user.is_active:
        return None
    if not secrets.compare_digest(user.session_token.encode(), token.encode()):
        return None
    return user


def register_customer(full_name: str, email: str, phone: str, password: str) -> User:
    """Create a customer (role is always `customer`) and log REGISTER_SUCCESS; commits.

    Raises DuplicateEmailError when the email is taken (also when a concurrent registration
    wins the race), PasswordPolicyError when the password breaks the policy.
    """
    email = normalize_email(email)
    problem = password_problem(password, email=email, full_name=full_name)
    if problem:
        raise PasswordPolicyError(problem)
    try:
        with atomic():
            if find_user_by_email(email) is not None:
                raise DuplicateEmailError()
            user = User(
                full_name=full_name.strip(), email=email, phone=phone.strip(),
                password_hash=hash_password(password), role="customer",
            )
            db.session.add(user)
            db.session.flush()
            log_event("REGISTER_SUCCESS", {"email": email, "role": "customer",
                                           "credential_mac": credential_mac(user.id, user.password_hash),
                                           "contact_mac": contact_mac(user.id, user.full_name, user.phone)},
                      user_id=user.id)
    except IntegrityError as exc:
        raise DuplicateEmailError() from exc
    return user


def _recent_failures(column, value: str) -> int:
    window = timedelta(seconds=current_app.config["LOGIN_THROTTLE_WINDOW_SECONDS"])
    return db.session.scalar(
        select(func.count(LoginAttempt.id)).where(column == value, LoginAttempt.attempted_at >= utcnow() - window)
    ) or 0


def _claim_attempt(email: str, ip_address: str) -> int | None:
    """Take one of the throttle's failure slots for an attempt at a secret (password or code)
    before the secret is checked: 5 failures for one email or 20 from one IP in the window
    (DESIGN.md section 5; LOGIN_MAX_FAILURES_PER_EMAIL, LOGIN_MAX_FAILURES_PER_IP and
    LOGIN_THROTTLE_WINDOW_SECONDS; OWASP ASVS 4.0.3 2.2.1). Commits.

    The counts and the attempt's login_attempt row are one transaction, serialized with every
    other claim on the same email or IP (_lock_throttle_keys): counted before the check and
    recorded after it, simultaneous attempts would all find the counts under the limits and all
    be checked, so a password could be guessed twenty times instead of five.

    email: normalized (attempted_email). ip_address: the client's address, or "unknown".
    Returns the id of the row, which stands as the attempt's failure until the secret proves
    right (_release_attempt); None when a limit is reached, and then nothing is written: a
    refused attempt is not counted as a further failure (DESIGN.md section 8).
    """
    config = current_app.config
    with atomic():
        _lock_throttle_keys(email, ip_address)
        if (_recent_failures(LoginAttempt.email, email) >= config["LOGIN_MAX_FAILURES_PER_EMAIL"]
                or _recent_failures(LoginAttempt.ip_address, ip_address) >= config["LOGIN_MAX_FAILURES_PER_IP"]):
            return None
        row = LoginAttempt(email=email, ip_address=ip_address)
        db.session.add(row)
        db.session.flush()
        return row.id


def _lock_throttle_keys(email: str, ip_address: str) -> None:
    """Serialize the throttle's claims on this email and on this IP until the transaction ends.

    PostgreSQL: a transaction-level advisory lock on each (64-bit keys from SHA-256), taken in
    ascending key order, so two claims never wait on each other in a cycle. SQLite: nothing to
    do, atomic() already began the transaction IMMEDIATE, which lets one writer in at a time.
    """
    if db.session.get_bind().dialect.name != "postgresql":
        return
    names = (f"login-throttle:email:{email}", f"login-throttle:ip:{ip_address}")
    keys = sorted({int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True) for name in names})
    for key in keys:
        db.session.execute(_ADVISORY_LOCK, {"key": key})


_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


def log_refused_sign_in(details: dict, user_id: int | None) -> None:
    """Log LOGIN_THROTTLED (committed on its own) for a sign-in attempt refused by the login
    throttle or the request rate limit, unless this client (its IP; the user when signed in) has
    already had LOGIN_THROTTLED_RATE_LIMIT such rows (default 30 a minute).

    details: the row's details (reason, email tried, ...); user_id: the user it concerns, or None.
    A refused attempt costs the client almost nothing, so without the cap anyone could append
    rows to the hash-chained, durably committed audit log as fast as they can send requests,
    slowing every audited action and burying real events (CWE-779; OWASP ASVS 7.1, 11.1.4). Past
    the cap the refusal is answered exactly the same and writes no row, as ACCESS_DENIED does
    past ACCESS_DENIED_RATE_LIMIT (app/security.py roles_required). Always logs when request
    limits are off (RATELIMIT_ENABLED=false, load tests only).
    """
    if take_allowance("LOGIN_THROTTLED_RATE_LIMIT", "login-throttled"):
        log_standalone_event("LOGIN_THROTTLED", details, user_id=user_id)


def _refuse_attempt(email: str, ip_address: str, details: dict, user_id: int | None) -> NoReturn:
    """Log LOGIN_THROTTLED with `details` (log_refused_sign_in) for an attempt on `email` from
    `ip_address` refused by the throttle, then raise LoginThrottledError with the seconds until
    the throttle lifts (_throttle_lifts_in)."""
    retry_after = _throttle_lifts_in(email, ip_address)
    log_refused_sign_in(details, user_id)
    raise LoginThrottledError(retry_after=retry_after)


def _throttle_lifts_in(email: str, ip_address: str) -> int:
    """Whole seconds (at least 1) until the login throttle would check an attempt on `email`
    from `ip_address` again: for each of the two keys at its limit, the moment its limit-th
    newest failure leaves the window (fewer than the limit then remain), the later of the two.
    For the 429's Retry-After (RFC 6585 4, RFC 9110 10.2.3); further failures from anyone on the
    same key would move it later. Reads two indexed rows; writes nothing."""
    config = current_app.config
    window = timedelta(seconds=config["LOGIN_THROTTLE_WINDOW_SECONDS"])
    now = utcnow()
    lifts = now
    for column, value, limit in ((LoginAttempt.email, email, config["LOGIN_MAX_FAILURES_PER_EMAIL"]),
                                 (LoginAttempt.ip_address, ip_address, config["LOGIN_MAX_FAILURES_PER_IP"])):
        limit_th_newest = db.session.scalar(
            select(LoginAttempt.attempted_at).where(column == value, LoginAttempt.attempted_at >= now - window)
            .order_by(LoginAttempt.attempted_at.desc()).offset(limit - 1).limit(1))
        if limit_th_newest is not None:
            lifts = max(lifts, as_utc(limit_th_newest) + window)
    return max(1, math.ceil((lifts - now).total_seconds()))


def _release_attempt(attempt_id: int) -> None:
    """Remove the row of an attempt whose secret proved right (it was no failure), in the
    caller's transaction; the failures counted before it stay."""
    db.session.execute(delete(LoginAttempt).where(LoginAttempt.id == attempt_id))


def _log_failure(email: str, user: User | None, reason: str) -> None:
    """LOGIN_FAILURE for an attempt whose secret was wrong; its claimed row is the failure counted."""
    log_standalone_event("LOGIN_FAILURE", {"email": email, "reason": reason}, user_id=user.id if user else None)


NOT_AN_ADDRESS = "not an email address #"


def attempted_email(typed: str | None) -> str:
    """The email of a sign-in attempt as the throttle counts it and the audit rows record it
    (DESIGN.md section 8): a valid address normalized (normalize_email), at most 254 characters.

    Text that is no valid address is recorded as NOT_AN_ADDRESS and a keyed fingerprint, never
    as typed: it is often the password typed into the wrong field, which must not sit in the
    audit trail for good (OWASP ASVS 4.0.3 7.1.1). The fingerprint (HMAC-SHA-256 under a key
    derived from SECRET_KEY, 16 hex digits) is the same for the same text, so the throttle still
    counts repeated tries of it and an auditor can still see them repeat; it holds a space, so
    no user's address is ever equal to it. Needs an application context.
    """
    text = (typed or "").strip()
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()[:254]
    except EmailNotValidError:
        secret = current_app.config["SECRET_KEY"]
        secret = secret.encode() if isinstance(secret, str) else secret
        key = hmac.new(secret, b"bank.login-identifier", hashlib.sha256).digest()
        return NOT_AN_ADDRESS + hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


def authenticate(email: str, password: str, ip_address: str) -> User:
    """Check a sign-in and return the user; commits the audit row and throttle bookkeeping.

    email: as typed (normalized here, at most 254 characters kept). ip_address: client IP.
    Raises LoginThrottledError (logged LOGIN_THROTTLED, not counted) when 5 failures for the
    email or 20 for the IP fall within 10 minutes, even for the right password;
    InvalidCredentialsError for an unknown email, a wrong password or a deactivated user, with
    the same work done in each case (a dummy Argon2 verification; OWASP ASVS 2.2.1, 2.5.4).
    On success the hash is upgraded if the parameters changed (logged PASSWORD_CHANGED with
    reason "rehash" and the new hash's credential_mac); then, for a user without a
    second factor, the email's failures are cleared and LOGIN_SUCCESS logged. A user with one
    has only passed the first step: failures stay counted (so a correct password can't reset
    the throttle on code guesses) until complete_mfa_sign_in accepts a code.
    """
    email = attempted_email(email)
    attempt = _claim_attempt(email, ip_address or "unknown")
    user = find_user_by_email(email)
    if attempt is None:
        _refuse_attempt(email, ip_address or "unknown", {"email": email}, user.id if user else None)
    if user is None:
        verify_password(_dummy_hash(current_app.config["ARGON2_PROFILE"]), password)
        _log_failure(email, None, "unknown_email")
        raise InvalidCredentialsError()
    if not verify_password(user.password_hash, password):
        _log_failure(email, user, "wrong_password")
        raise InvalidCredentialsError()
    if not user.is_active:
        _log_failure(email, user, "inactive")
        raise InvalidCredentialsError()
    with atomic():
        if password_hasher().check_needs_rehash(user.password_hash):
            # The stored hash changes, so an audit row records its MAC (verify_user_records).
            user.password_hash = hash_password(password)
            log_event("PASSWORD_CHANGED", {"user_id": user.id, "reason": "rehash",
                                           "credential_mac": credential_mac(user.id, user.password_hash)},
                      user_id=user.id)
        if user.mfa_enabled:
            _release_attempt(attempt)
        else:
            db.session.execute(delete(LoginAttempt).where(LoginAttempt.email == email))
            log_event("LOGIN_SUCCESS", {"email": email}, user_id=user.id)
    return user


def change_password(user: User, current_password: str, new_password: str, ip_address: str) -> None:
    """Replace `user`'s password and rotate their session token; logs PASSWORD_CHANGED; commits.

    Every other session of the user ends; the caller re-issues the current one with the new
    token (OWASP ASVS 2.1.5, 3.3.3). A wrong current password counts as a sign-in failure for
    the throttle. Raises LoginThrottledError, WrongPasswordError or PasswordPolicyError.
    """
    attempt = _claim_attempt(user.email, ip_address or "unknown")
    if attempt is None:
        _refuse_attempt(user.email, ip_address or "unknown", {"email": user.email, "during": "change_password"},
                        user.id)
    if not verify_password(user.password_hash, current_password):
        _log_failure(user.email, user, "wrong_current_password")
        raise WrongPasswordError()
    with atomic():
        _release_attempt(attempt)
    problem = password_problem(new_password, email=user.email, full_name=user.full_name)
    if problem:
        raise PasswordPolicyError(problem)
    if verify_password(user.password_hash, new_password):
        raise PasswordPolicyError("Choose a password different from the current one.")
    with atomic():
        user.password_hash = hash_password(new_password)
        user.must_change_password = False
        user.session_token = new_session_token()
        log_event("PASSWORD_CHANGED", {"user_id": user.id,
                                       "credential_mac": credential_mac(user.id, user.password_hash)},
                  user_id=user.id)


def update_profile(user: User, full_name: str, phone: str) -> list[str]:
    """Set `user`'s name and phone; returns the changed field names (logged PROFILE_UPDATED with
    the stored pair's contact_mac); commits only when something changed.

    The row is re-read under a row lock first (SELECT ... FOR UPDATE on PostgreSQL; SQLite's
    write transaction already excludes other writers), so an admin's edit of the same user
    committed meanwhile is neither undone nor left out of the recorded MAC.
    """
    changes = {"full_name": full_name.strip(), "phone": phone.strip()}
    with atomic():
        db.session.refresh(user, with_for_update=True)
        changed = [name for name, value in changes.items() if getattr(user, name) != value]
        if not changed:
            return []
        for name in changed:
            setattr(user, name, changes[name])
        log_event("PROFILE_UPDATED", {"user_id": user.id, "fields": changed,
                                      "contact_mac": contact_mac(user.id, user.full_name, user.phone)},
                  user_id=user.id)
    return changed


def logout(user: User) -> None:
    """End every session of `user` by rotating the session token; logs LOGOUT; commits."""
    with atomic():
        user.session_token = new_session_token()
        log_event("LOGOUT", {"user_id": user.id}, user_id=user.id)


@dataclass(frozen=True)
class SeedResult:
    """What `seed_admin` did: `created` is False when the admin existed; `password` is set only
    when the command generated one that must be shown once."""

    created: bool
    email: str
    generated_password: str | None


def seed_admin(password_from_env: str | None) -> SeedResult:
    """Create the default administrator if no user has its email (idempotent); commits.

    Development uses the documented default password and forces a change at first sign-in.
    Where ALLOW_DEFAULT_ADMIN_PASSWORD is off (production) the default is refused:
    `password_from_env` (ADMIN_PASSWORD) must meet the policy, or a random one is generated and
    returned for printing once. Raises PasswordPolicyError for a weak or default password.
    """
    config = current_app.config
    email = config["DEFAULT_ADMIN_EMAIL"]
    if find_user_by_email(email) is not None:
        return SeedResult(False, email, None)
    generated = None
    if config["ALLOW_DEFAULT_ADMIN_PASSWORD"] and not password_from_env:
        password = config["DEFAULT_ADMIN_PASSWORD"]
    elif password_from_env:
        if password_from_env == config["DEFAULT_ADMIN_PASSWORD"]:
            raise PasswordPolicyError("The default administrator password is refused here; choose another.")
        problem = password_problem(password_from_env, email=email, full_name="Administrator")
        if problem:
            raise PasswordPolicyError(problem)
        password = password_from_env
    else:
        password = generated = secrets.token_urlsafe(18)
    with atomic():
        admin = User(
            full_name="Administrator", email=email, phone="+0000000000",
            password_hash=hash_password(password), role="admin", must_change_password=True,
        )
        db.session.add(admin)
        db.session.flush()
        log_event("REGISTER_SUCCESS", {"email": email, "role": "admin", "via": "seed-admin",
                                       "forced_change": True,
                                       "credential_mac": credential_mac(admin.id, admin.password_hash),
                                       "contact_mac": contact_mac(admin.id, admin.full_name, admin.phone)},
                  user_id=admin.id)
    return SeedResult(True, email, generated)


# ---------------------------------------------------------------------------------------------
# Administration of users (the pages live under /banking/admin, the rules here; DESIGN.md §1)
# ---------------------------------------------------------------------------------------------


class UserNotFoundError(DomainError):
    """No user has this id (shown as 404)."""

    default_message = "User not found."


class UserUpdateRefusedError(DomainError):
    """The change would lock administrators out (own role, own deactivation, last admin)."""


def list_users(page: int) -> Page:
    """Every user, newest first, 25 per page (page from 1; out of range gives an empty page)."""
    return numbered_page(select(User).order_by(User.id.desc()), page)


def get_user_for_admin(user_id: int) -> User:
    """The user with this id; raises UserNotFoundError (404) when there is none."""
    user = db.session.get(User, user_id)
    if user is None:
        raise UserNotFoundError()
    return user


def _active_admin_ids_locked() -> list[int]:
    """Ids of active admins, their rows locked (FOR UPDATE on PostgreSQL) until commit, so two
    concurrent demotions cannot both see another admin left."""
    return list(db.session.scalars(
        select(User.id).where(User.role == "admin", User.is_active.is_(True)).order_by(User.id).with_for_update()
    ))


HOLDS_ACCOUNTS_MESSAGE = ("This customer holds accounts, so they stay a customer: "
                          "give the staff role to a separate user without accounts.")


def update_user(actor: User, user_id: int, *, full_name: str, email: str, phone: str, role: str,
                is_active: bool) -> list[str]:
    """Change a user's details, role and active state as an administrator; commits once.

    Returns the names of the fields that changed (empty: nothing to do). A role change logs
    ROLE_CHANGED with the old and new role; other changes log USER_UPDATED with the field names
    and, for the email and the active state, the old and new values (never values of secrets).
    A role change or a deactivation rotates the user's session token, so their open sessions
    end at their next request (OWASP ASVS 3.3.1, 4.1.3).
    A customer who holds accounts keeps the customer role: staff (support, auditor, admin) hold
    no accounts, so no one audits or administers money of their own and no account is left
    that neither its owner (who has lost the customer pages) nor an admin (who acts only for
    customers) can move money out of (segregation of duties; PCI DSS 7.2).
    Raises UserNotFoundError (404), DuplicateEmailError, ValidationRuleError (unknown role),
    UserUpdateRefusedError when an admin would change their own role or deactivate themself,
    when no active admin would be left, or when a customer holding accounts would become staff.
    Each of these refusals but the 404 is on record too, committed on its own: USER_UPDATED
    with the outcome "refused", the reason (the error's name), its message (which rule), and
    the role and active state asked for (PCI DSS 10.2.1.2: every action of an administrator;
    10.2.2: its outcome). Should that row fail to be written, its database error is raised
    instead of the refusal (the 503 page, as for every write that fails).
    """
    actor_id = actor.id
    try:
        return _update_user(actor, user_id, full_name=full_name, email=email, phone=phone, role=role,
                            is_active=is_active)
    except UserNotFoundError:
        raise
    except DomainError as exc:
        log_standalone_event("USER_UPDATED", {
            "user_id": user_id, "outcome": "refused", "reason": type(exc).__name__, "message": str(exc),
            "requested": {"role": str(role)[:16], "is_active": bool(is_active)},
        }, user_id=actor_id)
        raise


def _update_user(actor: User, user_id: int, *, full_name: str, email: str, phone: str, role: str,
                 is_active: bool) -> list[str]:
    if actor.role != "admin":
        raise UserUpdateRefusedError("Only administrators manage users.")
    if role not in ROLES:
        raise ValidationRuleError("Choose one of the roles.")
    email = normalize_email(email)
    actor_id = actor.id
    try:
        with atomic():
            user = db.session.get(User, user_id, populate_existing=True)
            if user is None:
                raise UserNotFoundError()
            if user.id == actor_id and (role != user.role or not is_active):
                raise UserUpdateRefusedError("You cannot change your own role or deactivate yourself.")
            removes_admin = user.role == "admin" and user.is_active and (role != "admin" or not is_active)
            if removes_admin and [i for i in _active_admin_ids_locked() if i != user.id] == []:
                raise UserUpdateRefusedError("The last active administrator cannot be demoted or deactivated.")
            if user.role == "customer" and role != "customer" and lock_account_holder(user.id).accounts_held:
                raise UserUpdateRefusedError(HOLDS_ACCOUNTS_MESSAGE)
            if email != user.email and find_user_by_email(email) is not None:
                raise DuplicateEmailError()
            # Re-read the row under a lock (taken last, after any admin rows above, so two edits
            # never wait on each other in a cycle): a concurrent edit of the user, committed
            # meanwhile, is then what `changed` and the recorded contact_mac start from.
            db.session.refresh(user, with_for_update=True)
            wanted = {"full_name": full_name.strip(), "email": email, "phone": phone.strip(),
                      "role": role, "is_active": bool(is_active)}
            changed = [name for name, value in wanted.items() if getattr(user, name) != value]
            old_role, old_email = user.role, user.email
            for name in changed:
                setattr(user, name, wanted[name])
            if "role" in changed or ("is_active" in changed and not user.is_active):
                user.session_token = new_session_token()
            if "role" in changed:
                log_event("ROLE_CHANGED", {"user_id": user.id, "from": old_role, "to": role}, user_id=actor_id)
            other = [name for name in changed if name != "role"]
            if other:
                details = {"user_id": user.id, "fields": other}
                if "email" in other:
                    details["email"] = {"from": old_email, "to": email}
                if "is_active" in other:
                    # The outcome, as ROLE_CHANGED records it: a deactivation and a reactivation
                    # must not read alike (PCI DSS 10.2.2).
                    details["is_active"] = {"from": not user.is_active, "to": user.is_active}
                if {"full_name", "phone"} & set(other):
                    details["contact_mac"] = contact_mac(user.id, user.full_name, user.phone)
                log_event("USER_UPDATED", details, user_id=actor_id)
    except IntegrityError as exc:
        raise DuplicateEmailError() from exc
    return changed


# --- multi-factor sign-in (TOTP; DESIGN.md section 5; OWASP ASVS 4.0.3 2.7, 2.8; PCI DSS 8.4) ---


def _mfa_context(user_id: int) -> str:
    """Associated data binding a stored key to its user's row (a copied ciphertext won't decrypt)."""
    return f"user:{user_id}"


def enrolment_context(user: User) -> str:
    """Associated data for a key offered at enrolment but not yet confirmed (kept in the session,
    sealed to this user and their current session token)."""
    return f"enrol:{user.id}:{user.session_token}"


def _accept_step(user_id: int, step: int) -> bool:
    """Record `step` as the user's last accepted time step unless it, or a later one, was
    already accepted; True when recorded. One conditional UPDATE, so two requests racing with
    the same code can't both succeed, across processes (RFC 6238 section 5.2; ASVS 2.8.4)."""
    result = db.session.execute(
        update(User)
        .where(User.id == user_id, or_(User.mfa_last_step.is_(None), User.mfa_last_step < step))
        .values(mfa_last_step=step)
    )
    return result.rowcount == 1


def enrol_mfa(user: User, secret: str, code: str) -> None:
    """Turn on multi-factor sign-in for `user` with the offered `secret` (base32 text), once
    `code` (6 ASCII digits) proves their authenticator has it; logs MFA_ENROLLED; commits.

    The key is stored encrypted (app/auth/mfa.py) and never shown again. The session token
    rotates, so sessions opened with the password alone end; the caller re-issues this one.
    :raises MfaStateError: already enrolled. :raises MfaCodeError: the code doesn't match
        (logged MFA_FAILURE).
    """
    if user.mfa_enabled:
        raise MfaStateError("Two-step sign-in is already on for your account.")
    step = mfa.matching_step(secret, code)
    if step is None:
        log_standalone_event("MFA_FAILURE", {"user_id": user.id, "stage": "enrolment"}, user_id=user.id)
        raise MfaCodeError()
    with atomic():
        user.mfa_secret = mfa.encrypt_secret(secret, _mfa_context(user.id))
        user.mfa_enrolled_at = utcnow()
        user.mfa_last_step = step
        user.session_token = new_session_token()
        log_event("MFA_ENROLLED", {"user_id": user.id, "time_step": step}, user_id=user.id)


def complete_mfa_sign_in(user_id: int, session_token: str, code: str, ip_address: str) -> User:
    """The second sign-in step: accept `code` for the user who just gave a correct password.

    user_id and session_token: remembered from the password step (a password change or logout
    since then voids it). ip_address: client IP. Wrong, replayed and expired codes count as
    sign-in failures for the throttle of DESIGN.md section 5 (5 per email, 20 per IP in the
    window) and are logged MFA_FAILURE; once throttled, even a right code is refused
    (LOGIN_THROTTLED). A code is accepted once: its time step is recorded atomically. On success
    the email's failures are cleared, and MFA_SUCCESS (with the accepted time_step, which
    verify_user_records compares with the stored one) and LOGIN_SUCCESS are logged; commits.
    :raises LoginThrottledError, MfaCodeError: as above. :raises InvalidCredentialsError: the
        user is gone, deactivated, signed out since, or no longer enrolled.
    """
    ip_address = ip_address or "unknown"
    user = db.session.get(User, user_id)
    if user is None or not user.is_active or not user.mfa_enabled or user.session_token != session_token:
        raise InvalidCredentialsError()
    attempt = _claim_attempt(user.email, ip_address)
    if attempt is None:
        _refuse_attempt(user.email, ip_address, {"email": user.email, "during": "mfa"}, user.id)
    secret = mfa.decrypt_secret(user.mfa_secret, _mfa_context(user.id))
    step = mfa.matching_step(secret, code)
    with atomic():
        accepted = step is not None and _accept_step(user.id, step)
        if accepted:
            db.session.execute(delete(LoginAttempt).where(LoginAttempt.email == user.email))
            log_event("MFA_SUCCESS", {"user_id": user.id, "time_step": step}, user_id=user.id)
            log_event("LOGIN_SUCCESS", {"email": user.email, "mfa": True}, user_id=user.id)
        else:
            # The attempt's claimed row stays: it is the failure the throttle counts.
            reason = "wrong_code" if step is None else "code_already_used"
            log_event("MFA_FAILURE", {"user_id": user.id, "stage": "sign_in", "reason": reason}, user_id=user.id)
    if not accepted:
        raise MfaCodeError(USED_CODE_MESSAGE if step is not None else None)
    return user


# Longest reason the reset-mfa command records.
MFA_RESET_REASON_MAX = 200


def reset_mfa(email: str, reason: str, operator: str) -> User:
    """Operator recovery of a sign-in (the `reset-mfa` command): turn off two-step sign-in for
    the user with this email, who lost their authenticator, or whose stolen session was used to
    enrol a key they never held. Rotates their session token, so every open session ends, and
    logs MFA_DISABLED with `by: "operator"`, the operator and the reason, under no user id (the
    operator acts from the server's shell, not from an account); commits. Their next sign-in
    takes the password alone; staff are sent to enrol again while REQUIRE_STAFF_MFA is on.

    Without it, a key enrolled by someone else locks the owner out for good, since the web
    offers no way around the code step. OWASP ASVS 4.0.3 2.5.7: a lost factor is replaced only
    after the person's identity is proven as firmly as at enrolment, so whoever runs this must
    first check, outside the bank, that the request comes from the user (for instance in person
    with an identity document, or a call back to the phone number on file), and name that check
    in the reason.
    email: the address as typed (normalized here). reason: why, and how the identity was
    checked, for the audit row; 1 to MFA_RESET_REASON_MAX printable characters after trimming.
    operator: who ran it (the command passes the operating system's account), at most 64
    characters kept, control characters replaced.
    :raises ValidationRuleError: the reason is empty, too long or holds control characters.
    :raises UserNotFoundError: no user has this email. :raises MfaStateError: not enrolled (also
        when the user turned it off themself a moment before: the change is one conditional
        UPDATE, so two removals never both succeed).
    """
    reason = (reason or "").strip()
    if not reason or len(reason) > MFA_RESET_REASON_MAX or not reason.isprintable():
        raise ValidationRuleError(
            f"Give the reason in 1 to {MFA_RESET_REASON_MAX} characters, without control characters.")
    operator = "".join(ch if ch.isprintable() else "\ufffd" for ch in (operator or "unknown"))[:64]
    user = find_user_by_email(normalize_email(email))
    if user is None:
        raise UserNotFoundError(f"No user has the email {normalize_email(email)!r}.")
    not_enrolled = MfaStateError("Two-step sign-in is not on for this user; nothing to reset.")
    if not user.mfa_enabled:
        raise not_enrolled
    with atomic():
        removed = db.session.execute(
            update(User).where(User.id == user.id, User.mfa_secret.is_not(None))
            .values(mfa_secret=None, mfa_enrolled_at=None, mfa_last_step=None, session_token=new_session_token())
        )
        if removed.rowcount != 1:
            raise not_enrolled
        log_event("MFA_DISABLED", {"user_id": user.id, "email": user.email, "by": "operator", "operator": operator,
                                   "reason": reason}, user_id=None)
    return user


def disable_mfa(user: User, password: str, ip_address: str) -> None:
    """Turn off multi-factor sign-in after re-checking `user`'s password; logs MFA_DISABLED and
    rotates the session token (the caller re-issues this session); commits.

    A wrong password counts as a sign-in failure for the throttle. Re-authentication before an
    account change of this weight: OWASP ASVS 4.0.3 3.7.1.
    :raises LoginThrottledError, WrongPasswordError: as for change_password.
    :raises MfaStateError: not enrolled, or staff while REQUIRE_STAFF_MFA is on.
    """
    if not user.mfa_enabled:
        raise MfaStateError("Two-step sign-in is not on for your account.")
    if user.is_staff and current_app.config["REQUIRE_STAFF_MFA"]:
        raise MfaStateError("Staff accounts must keep two-step sign-in on.")
    attempt = _claim_attempt(user.email, ip_address or "unknown")
    if attempt is None:
        _refuse_attempt(user.email, ip_address or "unknown", {"email": user.email, "during": "mfa_disable"}, user.id)
    if not verify_password(user.password_hash, password):
        _log_failure(user.email, user, "wrong_password_mfa_disable")
        raise WrongPasswordError("The password is not correct.")
    with atomic():
        _release_attempt(attempt)
        user.mfa_secret = None
        user.mfa_enrolled_at = None
        user.mfa_last_step = None
        user.session_token = new_session_token()
        log_event("MFA_DISABLED", {"user_id": user.id}, user_id=user.id)


# ---------------------------------------------------------------------------------------------
# The users table against the audit trail
# ---------------------------------------------------------------------------------------------

_USER_EVENTS = ("REGISTER_SUCCESS", "ROLE_CHANGED", "USER_UPDATED", "MFA_ENROLLED", "MFA_DISABLED",
                "PASSWORD_CHANGED", "PROFILE_UPDATED", "MFA_SUCCESS")
_CONTACT_FIELDS = frozenset({"full_name", "phone"})
# A value an audit row written before it was recorded does not hold (checked from the next row on).
_UNRECORDED = object()


def verify_user_records() -> list[str]:
    """Each user's email, role, active flag, two-step sign-in (and its last accepted code),
    password hash, forced password change, name and phone against what the audit trail says
    they are (read-only). Each of these changes only in the same commit as its audit row
    (DESIGN.md section 4), which the replay below follows:

    - REGISTER_SUCCESS (registration, seed-admin) creates the user, under the new user's id:
      email, role, credential_mac and contact_mac; active, no two-step sign-in; a forced
      password change for seed-admin's (`forced_change`);
    - the admin's edit: ROLE_CHANGED `to`, USER_UPDATED `email.to`, `is_active.to` and, with
      name or phone, contact_mac (refusals change nothing); PROFILE_UPDATED: contact_mac;
    - PASSWORD_CHANGED (a change, or a rehash at sign-in): credential_mac; a change, not a
      rehash, ends the forced change;
    - MFA_ENROLLED and MFA_DISABLED (the user's own, or reset-mfa's) turn two-step sign-in on
      and off; MFA_ENROLLED and MFA_SUCCESS record the accepted code's `time_step`, which keeps
      each code single-use (MFA_DISABLED clears it).

    So a role raised to admin; an email swapped, a password hash replaced or an authenticator
    key removed to take an account over; a used sign-in code made usable again; a deactivated
    user switched back on; the seeded administrator's forced change of a known first password
    skipped; or the phone number reset-mfa's call-back trusts rewritten with SQL is reported
    here, as is a user no REGISTER_SUCCESS row records (PCI DSS 10.2.1, 10.3.4; OWASP ASVS 2.8).
    A MAC or time step is checked only when the last row that wrote it holds one (rows written
    before they were recorded hold none; the next change records it). The rows themselves are
    protected by the HMAC chain (verify_chain). An MFA key replaced by another is not for this
    check: keys are encrypted under MFA_ENCRYPTION_KEY and bound to their user's id
    (app/auth/mfa.py), so a swapped one fails to decrypt at sign-in.

    Returns the problems found as sentences, in user id order; an empty list when all agree.
    """
    recorded: dict[int, dict] = {}
    problems: list[str] = []
    for row_id, action, actor_id, details in audit_services.recorded_events(_USER_EVENTS):
        if details is None:
            problems.append(f"audit row {row_id} ({action}): its details are not a JSON object")
            continue
        if action == "REGISTER_SUCCESS":
            recorded[actor_id] = {"email": details.get("email"), "role": details.get("role"), "is_active": True,
                                  "mfa_enabled": False, "password": (row_id, details.get("credential_mac")),
                                  "contact": (row_id, details.get("contact_mac")),
                                  "mfa_last_step": (row_id, None),
                                  "must_change_password": details.get("forced_change",
                                                                      details.get("via") == "seed-admin")}
            continue
        if details.get("outcome") == "refused":
            continue
        state = recorded.get(details.get("user_id"))
        if state is None:
            problems.append(f"audit row {row_id} ({action}) changes user {details.get('user_id')}, "
                            "whom no earlier REGISTER_SUCCESS row records")
            continue
        if action == "PASSWORD_CHANGED":
            state["password"] = (row_id, details.get("credential_mac"))
            if details.get("reason") != "rehash":
                state["must_change_password"] = False
        fields = details.get("fields")
        if action in ("PROFILE_UPDATED", "USER_UPDATED") and isinstance(fields, list) and _CONTACT_FIELDS & set(
                map(str, fields)):
            state["contact"] = (row_id, details.get("contact_mac"))
        if action in ("MFA_ENROLLED", "MFA_DISABLED"):
            state["mfa_enabled"] = action == "MFA_ENROLLED"
        if action in ("MFA_ENROLLED", "MFA_SUCCESS"):
            # The last accepted code's time step: a code works once only while it stays put.
            state["mfa_last_step"] = (row_id, details.get("time_step", _UNRECORDED))
        elif action == "MFA_DISABLED":
            state["mfa_last_step"] = (row_id, None)
        if action == "ROLE_CHANGED":
            state["role"] = details.get("to")
        for name in ("email", "is_active"):
            change = details.get(name) if action == "USER_UPDATED" else None
            if isinstance(change, dict):
                state[name] = change.get("to")
    for (user_id, email, role, is_active, mfa_secret, password_hash, full_name, phone,
         must_change_password, mfa_last_step) in db.session.execute(
            select(User.id, User.email, User.role, User.is_active, User.mfa_secret, User.password_hash,
                   User.full_name, User.phone, User.must_change_password, User.mfa_last_step).order_by(User.id)):
        state = recorded.pop(user_id, None)
        if state is None:
            problems.append(f"user {user_id}: no REGISTER_SUCCESS audit row records its creation")
            continue
        for (row_id, mac), stored, what in (
                (state["password"], credential_mac(user_id, str(password_hash)), "the password hash"),
                (state["contact"], contact_mac(user_id, str(full_name), str(phone)), "the name or phone")):
            if mac is not None and not hmac.compare_digest(str(mac), stored):
                problems.append(f"user {user_id}: {what} is not what its last change (audit row {row_id}) recorded")
        row_id, step = state["mfa_last_step"]
        if step is not _UNRECORDED and step != mfa_last_step:
            problems.append(f"user {user_id}: the last accepted sign-in code's time step is {mfa_last_step}, "
                            f"but audit row {row_id} recorded {step}")
        for name, value in (("email", email), ("role", role), ("is_active", bool(is_active)),
                            ("mfa_enabled", mfa_secret is not None),
                            ("must_change_password", bool(must_change_password))):
            if state[name] != value:
                problems.append(f"user {user_id}: {name} is {value!r}, but the audit trail says {state[name]!r}")
    for user_id in sorted(recorded, key=lambda key: (key is None, key or 0)):
        problems.append(f"a REGISTER_SUCCESS audit row records user {user_id}, who does not exist")
    return problems
