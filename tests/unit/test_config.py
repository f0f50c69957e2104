"""app/config.py: environment parsing, and secrets that fail fast in production and are generated
once (mode 600) in development (DESIGN.md sections 5 and 5b)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.config import (
    ConfigurationError,
    DevelopmentConfig,
    ProductionConfig,
    TestingConfig,
    check_rate_limit_storage,
    config_class,
    env_bool,
    env_int,
    instance_secret,
)
from app.extensions import db

STRONG_SECRET = "s" * 32
OTHER_STRONG_SECRET = "h" * 32
MFA_KEY = "m" * 32
VARIABLE = "BANK_TEST_SWITCH"


@pytest.fixture
def instance_dir(tmp_path: Path, monkeypatch) -> Path:
    """Point every Flask app's instance folder at a temporary directory (never the repo's)."""
    folder = tmp_path / "instance"
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(folder))
    return folder


def build(tmp_path: Path, app_env: str, **overrides) -> Flask:
    """create_app for `app_env` on a temporary SQLite file; engine disposed at once (no connection kept)."""
    config = {"APP_ENV": app_env, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'config.db'}",
              "MFA_ENCRYPTION_KEY": MFA_KEY}
    config.update(overrides)
    app = create_app(config)
    with app.app_context():
        db.engine.dispose()
    return app


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- env_bool / env_int -------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["0", "false", "False", "FALSE", "no", "No", "off", "OFF", " off ", "false\n"])
def test_env_bool_reads_false_words_as_false(monkeypatch, raw):
    """Are 0/false/no/off (any case, surrounding space) false even when the default is True?"""
    monkeypatch.setenv(VARIABLE, raw)
    assert env_bool(VARIABLE, True) is False


@pytest.mark.parametrize("raw", ["1", "true", "True", "yes", "YES", "on", " on "])
def test_env_bool_reads_true_words_as_true(monkeypatch, raw):
    """Are 1/true/yes/on true even when the default is False?"""
    monkeypatch.setenv(VARIABLE, raw)
    assert env_bool(VARIABLE, False) is True


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_unset_gives_the_default(monkeypatch, default):
    """Does an unset variable give the default?"""
    monkeypatch.delenv(VARIABLE, raising=False)
    assert env_bool(VARIABLE, default) is default


@pytest.mark.parametrize("default", [True, False])
def test_env_bool_empty_gives_the_default(monkeypatch, default):
    """Does an empty value (`REQUIRE_STAFF_MFA=` left blank in .env) keep the default instead
    of silently switching a security setting off?"""
    monkeypatch.setenv(VARIABLE, "  ")
    assert env_bool(VARIABLE, default) is default


@pytest.mark.parametrize("raw", ["ture", "2", "-1", "enabled", "disable", "n", "y", "nope", "0ff", "tru e"])
def test_env_bool_refuses_other_words(monkeypatch, raw):
    """Is a word that is neither true nor false refused, rather than taken as a truthy string?"""
    monkeypatch.setenv(VARIABLE, raw)
    with pytest.raises(ConfigurationError, match=VARIABLE):
        env_bool(VARIABLE, True)


@pytest.mark.parametrize("raw", ["-1", "1.5", "ten", "1e3", "\u0661\u0662", "\uff11"])
def test_env_int_refuses_anything_but_a_whole_ascii_number(monkeypatch, raw):
    """Are negative, fractional, exponent and non-ASCII numbers refused?"""
    monkeypatch.setenv(VARIABLE, raw)
    with pytest.raises(ConfigurationError):
        env_int(VARIABLE, 5)


def test_env_int_reads_a_number_and_defaults_when_unset(monkeypatch):
    """Does a plain number parse, and does an unset variable give the default?"""
    monkeypatch.setenv(VARIABLE, " 42 ")
    assert env_int(VARIABLE, 5) == 42
    monkeypatch.delenv(VARIABLE)
    assert env_int(VARIABLE, 5) == 5


# --- choosing the configuration ----------------------------------------------------------


def test_config_class_follows_app_env():
    """Does APP_ENV pick the class, with development as the default?"""
    assert config_class(None) is DevelopmentConfig
    assert config_class("") is DevelopmentConfig
    assert config_class(" Production ") is ProductionConfig
    assert config_class("testing") is TestingConfig


def test_config_class_refuses_unknown_environment():
    """Is a misspelt APP_ENV refused rather than silently treated as development?"""
    with pytest.raises(ConfigurationError, match="APP_ENV"):
        config_class("prod")


def test_only_testing_uses_the_cheap_password_hash():
    """Is the cheapest Argon2 profile confined to the test configuration?"""
    assert TestingConfig.ARGON2_PROFILE == "CHEAPEST"
    assert DevelopmentConfig.ARGON2_PROFILE != "CHEAPEST"
    assert ProductionConfig.ARGON2_PROFILE != "CHEAPEST"


# --- production ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["SECRET_KEY", "AUDIT_HMAC_KEY", "MFA_ENCRYPTION_KEY"])
@pytest.mark.parametrize("value", [None, "", "x" * 31])
def test_production_refuses_to_start_without_a_strong_secret(tmp_path, instance_dir, key, value):
    """Does create_app refuse production when SECRET_KEY, AUDIT_HMAC_KEY or MFA_ENCRYPTION_KEY is
    missing or under 32 bytes, instead of generating or defaulting one?"""
    secrets = {"SECRET_KEY": STRONG_SECRET, "AUDIT_HMAC_KEY": OTHER_STRONG_SECRET, "MFA_ENCRYPTION_KEY": MFA_KEY,
               key: value}
    with pytest.raises(ConfigurationError, match=key):
        build(tmp_path, "production", **secrets)
    for filename in ("secret_key", "audit_hmac_key", "mfa_encryption_key"):
        assert not (instance_dir / filename).exists()


def test_production_refuses_to_start_without_a_database_url(tmp_path, instance_dir):
    """Does production refuse to fall back to a SQLite file in instance/?"""
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        build(tmp_path, "production", SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=OTHER_STRONG_SECRET,
              SQLALCHEMY_DATABASE_URI=None)


def test_production_finalize_checks_secrets_directly(tmp_path):
    """Does ProductionConfig.finalize itself refuse a short key and accept 32 bytes?"""
    good = {"SECRET_KEY": STRONG_SECRET, "AUDIT_HMAC_KEY": OTHER_STRONG_SECRET, "MFA_ENCRYPTION_KEY": MFA_KEY,
            "SQLALCHEMY_DATABASE_URI": "sqlite:///x.db"}
    ProductionConfig.finalize(dict(good), str(tmp_path))
    with pytest.raises(ConfigurationError):
        ProductionConfig.finalize({**good, "AUDIT_HMAC_KEY": "short"}, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_production_starts_with_strong_secrets_and_secure_cookies(tmp_path, instance_dir):
    """With both secrets set, does production start with Secure `__Host-` session cookies,
    MFA for staff, and the default admin password refused?"""
    app = build(tmp_path, "production", SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=OTHER_STRONG_SECRET)
    assert app.config["SECRET_KEY"] == STRONG_SECRET
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_NAME"].startswith("__Host-")
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert app.config["ALLOW_DEFAULT_ADMIN_PASSWORD"] is False
    assert not instance_dir.exists() or list(instance_dir.iterdir()) == []


# --- development --------------------------------------------------------------------------


def test_development_generates_secrets_once_into_instance_with_mode_600(tmp_path, instance_dir):
    """Without SECRET_KEY, AUDIT_HMAC_KEY and MFA_ENCRYPTION_KEY, does development write random
    ones into instance/ (mode 600, at least 32 bytes, different from each other) and use them?"""
    app = build(tmp_path, "development", SECRET_KEY=None, AUDIT_HMAC_KEY=None, MFA_ENCRYPTION_KEY=None)
    files = {"SECRET_KEY": "secret_key", "AUDIT_HMAC_KEY": "audit_hmac_key", "MFA_ENCRYPTION_KEY": "mfa_encryption_key"}
    for key, filename in files.items():
        assert mode_of(instance_dir / filename) == 0o600
        assert app.config[key] == (instance_dir / filename).read_text().strip()
        assert len(app.config[key].encode()) >= 32
    assert len({app.config[key] for key in files}) == 3


def test_development_reuses_the_generated_secrets(tmp_path, instance_dir):
    """Does a second start read the same secrets back (sessions and the audit chain survive a restart)?"""
    first = build(tmp_path, "development", SECRET_KEY=None, AUDIT_HMAC_KEY=None)
    second = build(tmp_path, "development", SECRET_KEY=None, AUDIT_HMAC_KEY=None)
    assert second.config["SECRET_KEY"] == first.config["SECRET_KEY"]
    assert second.config["AUDIT_HMAC_KEY"] == first.config["AUDIT_HMAC_KEY"]


def test_development_uses_a_secret_from_the_environment_without_writing_one(tmp_path, instance_dir):
    """When SECRET_KEY is given, is it used, and is no secret_key file written?"""
    app = build(tmp_path, "development", SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=OTHER_STRONG_SECRET)
    assert app.config["SECRET_KEY"] == STRONG_SECRET
    assert not (instance_dir / "secret_key").exists()


def test_development_generates_different_secrets_for_different_installs(tmp_path):
    """Are generated secrets random (no hard-coded fallback shared by every install)?"""
    one = instance_secret(str(tmp_path / "one"), "secret_key")
    two = instance_secret(str(tmp_path / "two"), "secret_key")
    assert one != two
    assert len(one) == 64 and int(one, 16) >= 0


def test_instance_secret_is_private_even_with_a_permissive_umask(tmp_path):
    """Is the secret file created 0600 even when the process umask would allow others to read?"""
    previous = os.umask(0)
    try:
        instance_secret(str(tmp_path), "secret_key")
    finally:
        os.umask(previous)
    assert mode_of(tmp_path / "secret_key") == 0o600


def test_instance_secret_reads_an_existing_file(tmp_path):
    """Does instance_secret return the stored value on the second call rather than overwrite it?"""
    first = instance_secret(str(tmp_path), "audit_hmac_key")
    assert instance_secret(str(tmp_path), "audit_hmac_key") == first


def test_development_finalize_defaults_the_database_to_instance(tmp_path):
    """Does development put its SQLite file in instance/ when DATABASE_URL is unset?"""
    config = {"SECRET_KEY": STRONG_SECRET, "AUDIT_HMAC_KEY": OTHER_STRONG_SECRET, "SQLALCHEMY_DATABASE_URI": None}
    DevelopmentConfig.finalize(config, str(tmp_path / "instance"))
    assert config["SQLALCHEMY_DATABASE_URI"] == "sqlite:///" + str(tmp_path / "instance" / "bank.db")


@pytest.mark.parametrize("content", ["", "\n", "abc123\n"])
def test_instance_secret_refuses_a_damaged_file(tmp_path, content):
    """Is an empty or truncated secret file refused rather than used as a weak key?"""
    (tmp_path / "secret_key").write_text(content, encoding="ascii")
    with pytest.raises(ConfigurationError, match="damaged"):
        instance_secret(str(tmp_path), "secret_key")


def test_instance_secret_leaves_no_temporary_file(tmp_path):
    """Does creating the secret leave only the secret file behind (no half-written temporaries)?"""
    instance_secret(str(tmp_path), "secret_key")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


@pytest.mark.parametrize("app_env", ["development", "testing", "production"])
def test_csrf_protection_is_on_in_every_configuration(tmp_path, instance_dir, monkeypatch, app_env):
    """Is Flask-WTF's CSRF protection on by default in every configuration (the test fixtures
    switch it off for most tests, so without this check a default of off would go unseen)?"""
    monkeypatch.delenv("WTF_CSRF_ENABLED", raising=False)
    app = build(tmp_path, app_env, SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=OTHER_STRONG_SECRET)
    assert app.config["WTF_CSRF_ENABLED"] is True


def test_production_requires_staff_mfa_by_default(tmp_path, instance_dir, monkeypatch):
    """With REQUIRE_STAFF_MFA unset, does production make staff enrol a second factor (ASVS 4.3.1)?"""
    monkeypatch.delenv("REQUIRE_STAFF_MFA", raising=False)
    app = build(tmp_path, "production", SECRET_KEY=STRONG_SECRET, AUDIT_HMAC_KEY=OTHER_STRONG_SECRET)
    assert app.config["REQUIRE_STAFF_MFA"] is True


# ---------------------------------------------------------------------------------------------
# Request rate limits behind several workers (OWASP ASVS 11.1.4)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", [{}, {"RATELIMIT_STORAGE_URI": "memory://"},
                                     {"RATELIMIT_STORAGE_URI": ""}])
def test_production_refuses_per_process_rate_limits_behind_several_workers(storage):
    """With the limits on and four workers, does production refuse memory:// (also when it is
    the default), naming the storage, the worker count and the fix?"""
    with pytest.raises(ConfigurationError) as refused:
        check_rate_limit_storage(4, {"APP_ENV": "production", **storage})

    message = str(refused.value)
    assert "'memory://'" in message and "4 worker processes" in message
    assert "RATELIMIT_STORAGE_URI=redis://" in message and "WEB_CONCURRENCY=1" in message


def test_development_warns_about_per_process_rate_limits_behind_several_workers():
    """Is the same configuration a warning, not a refusal, in development (and by default)?"""
    for environ in ({"APP_ENV": "development"}, {}):
        warning = check_rate_limit_storage(2, environ)
        assert warning is not None and "'memory://' with 2 worker processes" in warning


@pytest.mark.parametrize(("workers", "environ"), [
    (1, {"APP_ENV": "production"}),
    (4, {"APP_ENV": "production", "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379"}),
    (4, {"APP_ENV": "production", "RATELIMIT_ENABLED": "false"}),
    (4, {"APP_ENV": "development", "RATELIMIT_STORAGE_URI": "redis://redis:6379"}),
])
def test_rate_limit_storage_passes_when_the_limits_hold(workers, environ):
    """One worker, a shared (Redis) storage, or the limits switched off: nothing to report."""
    assert check_rate_limit_storage(workers, environ) is None


@pytest.mark.parametrize("environ", [{"APP_ENV": "staging"}, {"RATELIMIT_ENABLED": "maybe"}])
def test_rate_limit_storage_check_refuses_unreadable_settings(environ):
    """Are an unknown APP_ENV and an unreadable RATELIMIT_ENABLED refused, not guessed?"""
    with pytest.raises(ConfigurationError):
        check_rate_limit_storage(4, environ)
