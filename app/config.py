"""Configuration classes, selected by the `APP_ENV` environment variable.

Every setting can be overridden from the environment (or a `.env` file read by python-dotenv).
Secrets are never hard-coded: production refuses to start without them, development generates
them once into the instance folder (DESIGN.md section 5).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

MIN_SECRET_BYTES = 32
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class ConfigurationError(RuntimeError):
    """Raised at start-up when a required setting is missing or unsafe."""


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Read environment variable `name` (of `environ`, default os.environ) as a boolean.

    `1/true/yes/on` are true and `0/false/no/off` are false, case-insensitively; unset or
    empty (`REQUIRE_STAFF_MFA=` in a copied .env) gives `default`, as for env_int. Raises
    ConfigurationError for any other word, so a typo never silently turns a security switch
    on or off (DESIGN.md section 5b).
    """
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {raw!r}")


def env_int(name: str, default: int) -> int:
    """Read environment variable `name` as a non-negative integer; unset gives `default`.

    Raises ConfigurationError when the value is not a whole number >= 0.
    """
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    if not raw.strip().isascii() or not raw.strip().isdigit():
        raise ConfigurationError(f"{name} must be a whole number >= 0; got {raw!r}")
    return int(raw.strip())


def env_decimal(name: str, default: str) -> Decimal:
    """Read environment variable `name` as a money amount (Decimal, two places).

    Raises ConfigurationError when the value is not plain decimal notation.
    """
    from .money import InvalidAmountError, parse_amount

    raw = os.environ.get(name, default)
    try:
        return parse_amount(raw, maximum=Decimal("999999999999.99"))
    except InvalidAmountError as exc:
        raise ConfigurationError(f"{name}: {exc}") from exc


def instance_secret(instance_path: str, filename: str) -> str:
    """Return the development secret stored in `instance_path/filename`, creating it once.

    The file holds 64 hex characters (32 random bytes from `secrets`) and is created with mode
    0600, fully written before it appears under its name (a hard link from a temporary file),
    so `make run` needs no set-up and no secret is ever committed or hard-coded. Raises
    ConfigurationError when an existing file holds less than 32 bytes of secret.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    if not path.exists():
        temporary = folder / f".{filename}.{secrets.token_hex(8)}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(MIN_SECRET_BYTES) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created it first; use theirs
        finally:
            temporary.unlink()
    value = path.read_text(encoding="ascii").strip()
    if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"{path} holds a damaged secret; delete it and a new one is generated")
    return value


def database_engine_options(config: dict) -> None:
    """Normalize DATABASE_URL and set the engine options of its backend (in place).

    PostgreSQL: the psycopg 3 driver, a pre-pinged pool (a connection the server dropped is
    replaced instead of failing a request), a 5-second connect timeout, and lock and statement
    timeouts so a stuck lock becomes a retry or a "try again" page instead of a hung worker.
    SQLite: pre-ping too; its pragmas are set per connection in extensions.configure_sqlite.
    """
    url = config.get("SQLALCHEMY_DATABASE_URI") or ""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
    config["SQLALCHEMY_DATABASE_URI"] = url or None
    options = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        options.update(
            pool_size=config.get("DATABASE_POOL_SIZE", 5),
            max_overflow=config.get("DATABASE_MAX_OVERFLOW", 10),
            pool_recycle=1800,
            connect_args={"connect_timeout": 5, "options": "-c lock_timeout=10s -c statement_timeout=30s"},
        )
    config["SQLALCHEMY_ENGINE_OPTIONS"] = options | dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})


# Keys production refuses to start without (at least MIN_SECRET_BYTES each); development
# generates them into instance/.
PRODUCTION_SECRETS = ("SECRET_KEY", "AUDIT_HMAC_KEY", "MFA_ENCRYPTION_KEY")


class BaseConfig:
    """Settings shared by every environment."""

    APP_ENV = "base"
    BANK_NAME = "Online Bank"
    SECRET_KEY: str | None = os.environ.get("SECRET_KEY")
    AUDIT_HMAC_KEY: str | None = os.environ.get("AUDIT_HMAC_KEY")
    # Encrypts the TOTP authenticator keys at rest (app/auth/mfa.py); outside the database.
    MFA_ENCRYPTION_KEY: str | None = os.environ.get("MFA_ENCRYPTION_KEY")
    SQLALCHEMY_DATABASE_URI: str | None = os.environ.get("DATABASE_URL")
    SQLALCHEMY_TRACK_MODIFICATIONS = False
    SQLITE_BUSY_TIMEOUT_MS = env_int("SQLITE_BUSY_TIMEOUT_MS", 15000)
    DATABASE_POOL_SIZE = env_int("DATABASE_POOL_SIZE", 5)
    DATABASE_MAX_OVERFLOW = env_int("DATABASE_MAX_OVERFLOW", 10)

    # Sessions (DESIGN.md section 5; PCI DSS 8.2.8 idle timeout).
    PERMANENT_SESSION_LIFETIME = timedelta(minutes=15)
    SESSION_ABSOLUTE_LIFETIME = timedelta(hours=12)
    SESSION_REFRESH_EACH_REQUEST = True
    # An unchanged session's cookie is re-signed (its idle clock restarted) at most this often,
    # in seconds: the idle timeout then falls between 14 and 15 minutes after the last request,
    # never later (app/sessions.py).
    SESSION_RESIGN_INTERVAL = 60
    SESSION_COOKIE_NAME = "session"
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = False
    REMEMBER_COOKIE_DURATION = timedelta(seconds=0)

    # CSRF (Flask-WTF): every POST needs a token tied to the session.
    WTF_CSRF_ENABLED = True
    WTF_CSRF_TIME_LIMIT = 3600

    # Request size limits (DESIGN.md section 5b).
    MAX_CONTENT_LENGTH = 64 * 1024
    MAX_FORM_MEMORY_SIZE = 64 * 1024
    MAX_FORM_PARTS = 100

    # Bootstrap from the installed package, so the CSP can stay 'self'.
    BOOTSTRAP_SERVE_LOCAL = True

    # Money limits (DESIGN.md section 2).
    MAX_TRANSFER_AMOUNT = env_decimal("MAX_TRANSFER_AMOUNT", "1000000.00")
    MAX_OPENING_DEPOSIT = env_decimal("MAX_OPENING_DEPOSIT", "10000.00")
    MAX_ACCOUNTS_PER_CUSTOMER = env_int("MAX_ACCOUNTS_PER_CUSTOMER", 5)
    SUSPICIOUS_TRANSFER_THRESHOLD = env_decimal("SUSPICIOUS_TRANSFER_THRESHOLD", "10000.00")

    # Database-backed login throttling (DESIGN.md section 5); it cannot be switched off.
    LOGIN_MAX_FAILURES_PER_EMAIL = env_int("LOGIN_MAX_FAILURES_PER_EMAIL", 5) or 5
    LOGIN_MAX_FAILURES_PER_IP = env_int("LOGIN_MAX_FAILURES_PER_IP", 20) or 20
    LOGIN_THROTTLE_WINDOW_SECONDS = env_int("LOGIN_THROTTLE_WINDOW_SECONDS", 600) or 600

    # Request rate limits (Flask-Limiter) on top of the login throttle.
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    # Prepended to the limiter's keys, so several deployments (or test runs) can share one Redis.
    RATELIMIT_KEY_PREFIX = os.environ.get("RATELIMIT_KEY_PREFIX", "")
    RATELIMIT_HEADERS_ENABLED = False
    # A rolling window: each limit counts the requests of the last period, wherever it falls. A
    # fixed window restarts its count on the hour (or minute), so around the restart a client
    # gets up to twice its limit within one period.
    RATELIMIT_STRATEGY = "moving-window"
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "30 per minute")
    REGISTER_RATE_LIMIT = os.environ.get("REGISTER_RATE_LIMIT", "10 per hour")
    TRANSFER_RATE_LIMIT = os.environ.get("TRANSFER_RATE_LIMIT", "60 per minute")
    TICKET_RATE_LIMIT = os.environ.get("TICKET_RATE_LIMIT", "10 per hour")
    # Pages refused to a signed-in user for their role, each an ACCESS_DENIED audit row: past
    # this, the refusal is a 429 without a row, so a script can't fill the audit log.
    ACCESS_DENIED_RATE_LIMIT = os.environ.get("ACCESS_DENIED_RATE_LIMIT", "30 per minute")
    # Refused sign-in attempts (the login throttle's and LOGIN_RATE_LIMIT's), each a
    # LOGIN_THROTTLED audit row, per client IP: past this, the refusal is the same 429 without a
    # row, so nobody can fill the audit log without even signing in.
    LOGIN_THROTTLED_RATE_LIMIT = os.environ.get("LOGIN_THROTTLED_RATE_LIMIT", "30 per minute")

    # Password hashing: argon2-cffi's RFC 9106 low-memory profile (above OWASP's minimum).
    ARGON2_PROFILE = "RFC_9106_LOW_MEMORY"

    # Proxies: X-Forwarded-For is trusted only for this many hops (0: ignored).
    TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

    # Multi-factor sign-in (DESIGN.md section 5): staff must enrol before any other page.
    REQUIRE_STAFF_MFA = env_bool("REQUIRE_STAFF_MFA", False)
    # Seconds between a correct password and the code that completes the sign-in.
    MFA_PENDING_SECONDS = 300

    # Seeded administrator (DESIGN.md section 5).
    DEFAULT_ADMIN_EMAIL = "admin@example.com"
    DEFAULT_ADMIN_PASSWORD = "Admin123!"
    ALLOW_DEFAULT_ADMIN_PASSWORD = True

    # Transfer retries on deadlock / serialization failure before "please try again".
    TRANSFER_MAX_RETRIES = 3

    @classmethod
    def finalize(cls, config: dict, instance_path: str) -> None:
        """Fill in settings that depend on the instance folder; raise ConfigurationError when unsafe."""
        database_engine_options(config)
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            Path(instance_path).mkdir(parents=True, exist_ok=True)
            config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + str(Path(instance_path) / "bank.db")
        for key, filename in (("SECRET_KEY", "secret_key"), ("AUDIT_HMAC_KEY", "audit_hmac_key"),
                              ("MFA_ENCRYPTION_KEY", "mfa_encryption_key")):
            if not config.get(key):
                config[key] = instance_secret(instance_path, filename)


class DevelopmentConfig(BaseConfig):
    """Local use with `make run`: SQLite in instance/, plain HTTP, generated secrets."""

    APP_ENV = "development"


class TestingConfig(BaseConfig):
    """The test suite: cheap password hashing, request rate limits off unless a test enables them."""

    APP_ENV = "testing"
    TESTING = True
    ARGON2_PROFILE = "CHEAPEST"
    RATELIMIT_ENABLED = False
    SECRET_KEY = "testing-secret-key-0123456789abcdef0123456789"
    AUDIT_HMAC_KEY = "testing-audit-hmac-key-0123456789abcdef012345"
    MFA_ENCRYPTION_KEY = "testing-mfa-encryption-key-0123456789abcdef"


class ProductionConfig(BaseConfig):
    """Deployment behind HTTPS: secrets from the environment, Secure `__Host-` cookies, HSTS."""

    APP_ENV = "production"
    SESSION_COOKIE_SECURE = True
    SESSION_COOKIE_NAME = "__Host-session"
    REQUIRE_STAFF_MFA = env_bool("REQUIRE_STAFF_MFA", True)
    ALLOW_DEFAULT_ADMIN_PASSWORD = False

    @classmethod
    def finalize(cls, config: dict, instance_path: str) -> None:
        """Refuse to start without strong secrets and an explicit database (OWASP ASVS 2.10.4)."""
        for key in PRODUCTION_SECRETS:
            value = config.get(key) or ""
            if len(value.encode("utf-8")) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"{key} must be set to at least {MIN_SECRET_BYTES} bytes in production"
                )
        if not config.get("SQLALCHEMY_DATABASE_URI"):
            raise ConfigurationError("DATABASE_URL must be set in production")
        database_engine_options(config)


def check_rate_limit_storage(workers: int, environ: Mapping[str, str]) -> str | None:
    """Check that the request rate limits hold across `workers` server processes.

    workers: int, the number of processes serving the app (gunicorn's `workers`).
    environ: the environment the app will read (APP_ENV, RATELIMIT_ENABLED, RATELIMIT_STORAGE_URI).
    Flask-Limiter's `memory://` storage counts in one process only: behind N workers a client
    whose requests spread over them gets up to N times every limit (sign-in, registration,
    transfers, tickets). Anti-automation must hold for the whole service (OWASP ASVS 11.1.4),
    so with more than one worker and the limits on, the storage must be shared (`redis://`).

    Returns None when the limits hold, else the warning to print (development). Raises
    ConfigurationError instead of returning it when APP_ENV is `production`, and for an unknown
    APP_ENV or an unreadable RATELIMIT_ENABLED (env_bool).
    """
    production = config_class(environ.get("APP_ENV")).APP_ENV == "production"
    enabled = env_bool("RATELIMIT_ENABLED", True, environ)
    storage = (environ.get("RATELIMIT_STORAGE_URI") or "memory://").strip()
    if workers <= 1 or not enabled or not storage.startswith("memory://"):
        return None
    problem = (f"RATELIMIT_STORAGE_URI is {storage!r} with {workers} worker processes: each process "
               f"counts requests alone, so a client gets up to {workers} times every request rate "
               f"limit. Set RATELIMIT_STORAGE_URI=redis://HOST:6379, or WEB_CONCURRENCY=1.")
    if production:
        raise ConfigurationError(problem)
    return problem


CONFIGS: dict[str, type[BaseConfig]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_class(app_env: str | None) -> type[BaseConfig]:
    """Return the configuration class for `app_env` (default `development`).

    Raises ConfigurationError for an unknown name rather than guessing.
    """
    name = (app_env or "development").strip().lower()
    try:
        return CONFIGS[name]
    except KeyError:
        raise ConfigurationError(f"APP_ENV must be one of {sorted(CONFIGS)}; got {app_env!r}") from None
