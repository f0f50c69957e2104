"""run.py, the entry point of `flask --app run.py` and gunicorn: a refused configuration is one
line naming the setting and exit status 3, never a traceback, and gunicorn stops on it instead
of starting its workers again and again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.multiprocess_support import REPO, SCRUBBED_PREFIXES, free_port

SECONDS = 60
REFUSED = "Refusing to start: SECRET_KEY must be set to at least 32 bytes in production"


def production_env_without_secret_key(tmp_path: Path, **settings: str) -> dict[str, str]:
    """The caller's environment minus every app setting, plus APP_ENV=production with a database
    but no SECRET_KEY (the first thing production checks)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SCRUBBED_PREFIXES)}
    env.update(APP_ENV="production", DATABASE_URL=f"sqlite:///{tmp_path / 'bank.db'}", PYTHONUNBUFFERED="1")
    env.update(settings)
    return env


def test_a_flask_command_refused_by_the_configuration_says_why_in_one_line(tmp_path):
    """Does `flask --app run.py verify-ledger` in production without SECRET_KEY exit with status 3
    and one line naming the setting, with no traceback?"""
    finished = subprocess.run([sys.executable, "-m", "flask", "--app", "run.py", "verify-ledger"], cwd=REPO,
                              env=production_env_without_secret_key(tmp_path), capture_output=True, text=True,
                              timeout=SECONDS, check=False)
    assert finished.returncode == 3
    assert finished.stderr.strip() == REFUSED
    assert "Traceback" not in finished.stderr + finished.stdout


def test_gunicorn_stops_when_the_configuration_is_refused(tmp_path):
    """Does `gunicorn -c gunicorn.conf.py` in production without SECRET_KEY stop by itself, as a
    worker that failed to boot (status 3), with the one line and no traceback, rather than start
    its worker again and again?"""
    env = production_env_without_secret_key(tmp_path, WEB_CONCURRENCY="1", BIND=f"127.0.0.1:{free_port()}")
    finished = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=SECONDS, check=False)
    assert finished.returncode == 3
    assert REFUSED in finished.stderr
    assert "Worker failed to boot" in finished.stderr
    assert finished.stderr.count("Booting worker") == 1
    assert "Traceback" not in finished.stderr
