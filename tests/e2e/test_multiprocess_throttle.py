"""Throttling across processes (issue 4, item 5; DESIGN.md sections 5 and 5b), under gunicorn
with four workers, so no limit can rely on one process's memory.

* The database login throttle: 5 failed sign-ins for one email, sent at once so that several
  workers answer them, and the 6th attempt — with the right password — is 429 (SQLite and
  PostgreSQL).
* The request rate limit on login POSTs, with Flask-Limiter's storage in Redis
  (RATELIMIT_STORAGE_URI=redis://127.0.0.1:6379, LOGIN_RATE_LIMIT="8 per minute"): 8 sign-ins
  spread over the workers pass, the 9th is 429. The run uses its own RATELIMIT_KEY_PREFIX and
  deletes its keys afterwards. Skipped with the reason when Redis is unreachable, failed instead
  when REQUIRE_REDIS=1.
* The default configuration keeps the limiter in `memory://`, and gunicorn will not serve that
  behind several workers in production (it warns in development): each worker would count alone.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, LoginAttempt
from tests import factories
from tests.e2e.multiprocess_support import (
    AUDIT_HMAC_KEY,
    REPO,
    SECRET_KEY,
    Client,
    base_env,
    WORKERS,
    csrf_token_from,
    env_flag,
    free_port,
    gunicorn_server,
    local_app,
    migrated_database,
    run_only_in_its_pass,
    stop_process_group,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REDIS_URI = "redis://127.0.0.1:6379"
THROTTLE_MESSAGE = "Too many failed sign-in attempts."
RATE_LIMIT_MESSAGE = "Too many attempts. Please wait a few minutes and try again."
# The server's own hashing profile (development), so each password check takes long enough
# that simultaneous sign-ins are answered by different workers.
SERVER_ARGON2_PROFILE = "RFC_9106_LOW_MEMORY"


def _logins_at_once(server, email: str, passwords: list[str]) -> list:
    """Open one login form per password, then POST them all at the same moment; returns the
    answers in order."""
    clients = [Client(server) for _ in passwords]
    tokens = [csrf_token_from(client.get("/auth/login").body) for client in clients]
    answers: list = [None] * len(passwords)
    start = threading.Barrier(len(passwords))

    def post(i: int) -> None:
        try:
            start.wait(timeout=30)
            answers[i] = clients[i].post("/auth/login", {"csrf_token": tokens[i], "email": email,
                                                         "password": passwords[i]})
        except Exception as exc:  # noqa: BLE001 - reported by the test
            answers[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(passwords))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    run_only_in_its_pass(request.config, request.param)
    return request.param


def test_login_throttle_holds_across_workers(backend, tmp_path):
    """With 4 workers, do 5 simultaneous failed sign-ins for one email (answered by several
    workers) make the 6th attempt 429 even with the right password?"""
    with migrated_database(backend, tmp_path) as database_url:
        app = local_app(database_url, ARGON2_PROFILE=SERVER_ARGON2_PROFILE)
        try:
            with app.app_context():
                customer = factories.make_user("customer")
            # One thread per worker (sync workers), so simultaneous sign-ins spread over processes;
            # gunicorn.conf.py's default threads would let one process take them all.
            with gunicorn_server(database_url, tmp_path, RATELIMIT_ENABLED="false", WEB_THREADS="1") as server:
                failures = _logins_at_once(server, customer.email, ["wrong password, surely"] * 5)
                sixth = Client(server).login(customer.email, factories.DEFAULT_PASSWORD)
                workers = server.worker_pids("POST", "/auth/login")
            with app.app_context():
                attempts = db.session.scalar(
                    select(func.count(LoginAttempt.id)).where(LoginAttempt.email == customer.email))
                throttled = db.session.scalar(
                    select(func.count(AuditLog.id)).where(AuditLog.action == "LOGIN_THROTTLED"))
                db.session.rollback()
        finally:
            with app.app_context():
                db.engine.dispose()

    assert [getattr(answer, "status", answer) for answer in failures] == [400] * 5
    assert len(workers) >= 2, f"the sign-ins were all answered by one worker: {workers}"
    assert attempts == 5
    assert sixth.status == 429 and THROTTLE_MESSAGE in sixth.body
    assert throttled == 1


def _redis_or_skip():
    """A client of the local Redis, or skip (fail when REQUIRE_REDIS=1) when it is unreachable."""
    import redis

    client = redis.Redis.from_url(REDIS_URI, socket_connect_timeout=2, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        reason = f"Redis at {REDIS_URI} is unreachable ({exc})"
        if env_flag("REQUIRE_REDIS"):
            pytest.fail(f"REQUIRE_REDIS=1 but {reason}")
        print(f"\n{reason}: request limits across workers not tested")
        pytest.skip(reason)
    return client


def test_request_rate_limit_holds_across_workers_with_redis(tmp_path, request):
    """With 4 workers and the limiter's storage in Redis, do 8 sign-in POSTs spread over the
    workers pass and the 9th get 429 from LOGIN_RATE_LIMIT ("8 per minute")?"""
    run_only_in_its_pass(request.config, "sqlite", "this check (the limit lives in Redis)")
    redis_client = _redis_or_skip()
    prefix = f"bank-e2e-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with migrated_database("sqlite", tmp_path) as database_url:
            app = local_app(database_url, ARGON2_PROFILE=SERVER_ARGON2_PROFILE)
            try:
                with app.app_context():
                    customer = factories.make_user("customer")
                # One thread per worker, so the sign-ins spread over processes (as above).
                with gunicorn_server(database_url, tmp_path, RATELIMIT_ENABLED="true", RATELIMIT_STORAGE_URI=REDIS_URI,
                                     LOGIN_RATE_LIMIT="8 per minute", RATELIMIT_KEY_PREFIX=prefix,
                                     WEB_THREADS="1") as server:
                    allowed = _logins_at_once(server, customer.email, [factories.DEFAULT_PASSWORD] * 8)
                    ninth = Client(server).login(customer.email, factories.DEFAULT_PASSWORD)
                    workers = server.worker_pids("POST", "/auth/login")
                    keys = [key.decode() for key in redis_client.scan_iter(match=f"*{prefix}*")]
                with app.app_context():
                    logged = db.session.scalars(
                        select(AuditLog.details).where(AuditLog.action == "LOGIN_THROTTLED")).all()
                    db.session.rollback()
            finally:
                with app.app_context():
                    db.engine.dispose()
    finally:
        for key in redis_client.scan_iter(match=f"*{prefix}*"):
            redis_client.delete(key)
        redis_client.close()

    assert [getattr(answer, "status", answer) for answer in allowed] == [302] * 8
    assert len(workers) >= 2, f"the sign-ins were all answered by one worker: {workers}"
    # The sign-in limit's counts, and the allowance of LOGIN_THROTTLED rows the 9th took: both in
    # Redis, shared by the workers.
    assert sorted("auth.login" in key for key in keys) == [False, True], keys
    assert any("/login-throttled/" in key for key in keys), keys
    assert ninth.status == 429 and RATE_LIMIT_MESSAGE in ninth.body and THROTTLE_MESSAGE not in ninth.body
    assert [json.loads(details) for details in logged] == [{"reason": "request_rate_limit", "email": customer.email}]


@pytest.mark.parametrize("app_env", ["development", "production"])
def test_default_configuration_keeps_memory_storage(app_env, tmp_path, request):
    """Without RATELIMIT_STORAGE_URI, is the limiter's storage `memory://` (one process's
    memory), and does setting it to Redis switch the storage to Redis?"""
    run_only_in_its_pass(request.config, "sqlite", "this configuration check")
    probe = ("from app import create_app; from app.extensions import limiter; app = create_app(); "
             "print(app.config['RATELIMIT_STORAGE_URI'], type(limiter.storage).__name__)")
    env = base_env(f"sqlite:///{tmp_path / 'bank.db'}", APP_ENV=app_env)
    env.pop("RATELIMIT_ENABLED")
    assert not any(key.startswith("RATELIMIT_") for key in env)
    assert env["SECRET_KEY"] == SECRET_KEY and env["AUDIT_HMAC_KEY"] == AUDIT_HMAC_KEY

    default = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=60, check=False)
    redis = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env={**env, "RATELIMIT_STORAGE_URI": REDIS_URI},
                           capture_output=True, text=True, timeout=60, check=False)

    assert default.returncode == 0, default.stderr
    assert default.stdout.split() == ["memory://", "MemoryStorage"]
    assert redis.returncode == 0, redis.stderr
    assert redis.stdout.split() == [REDIS_URI, "RedisStorage"]


def test_gunicorn_refuses_per_worker_rate_limits_in_production(tmp_path, request):
    """With the limits on, 4 workers and the default memory:// storage, does gunicorn under
    APP_ENV=production exit with status 1 and the reason before booting any worker, so a client
    can never get 4 times each limit?"""
    run_only_in_its_pass(request.config, "sqlite", "this start-up check")
    env = base_env(f"sqlite:///{tmp_path / 'bank.db'}", APP_ENV="production", RATELIMIT_ENABLED="true",
                   WEB_CONCURRENCY=str(WORKERS), BIND=f"127.0.0.1:{free_port()}")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        stop_process_group(process)

    assert process.returncode == 1, stderr
    assert "refusing to start: RATELIMIT_STORAGE_URI is 'memory://' with 4 worker processes" in stderr
    assert "Booting worker" not in stderr


def test_gunicorn_warns_about_per_worker_rate_limits_in_development(tmp_path, request):
    """The same settings in development: does gunicorn serve, with the warning in its log?"""
    run_only_in_its_pass(request.config, "sqlite", "this start-up check")
    with migrated_database("sqlite", tmp_path) as database_url:
        with gunicorn_server(database_url, tmp_path, RATELIMIT_ENABLED="true") as server:
            assert Client(server).get("/auth/login").status == 200
            log = server.stderr()

    assert "[WARNING] gunicorn.error: RATELIMIT_STORAGE_URI is 'memory://' with 4 worker processes" in log
