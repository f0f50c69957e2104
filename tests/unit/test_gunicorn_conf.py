"""gunicorn.conf.py's worker hook: what each worker does once its app is built."""

from __future__ import annotations

import gc
from pathlib import Path

GUNICORN_CONF = Path(__file__).resolve().parents[2] / "gunicorn.conf.py"


def _settings() -> dict:
    """The module's names as gunicorn reads them (the file is executed, not imported)."""
    namespace: dict = {}
    exec(compile(GUNICORN_CONF.read_text(), str(GUNICORN_CONF), "exec"), namespace)  # nosec B102
    return namespace


def test_a_worker_freezes_the_objects_it_built_at_start_up():
    """Does post_worker_init move the objects alive after the app was built out of the cyclic
    collector's generations (gc.freeze), so a full collection no longer walks them?"""
    hook = _settings()["post_worker_init"]
    gc.unfreeze()
    try:
        assert gc.get_freeze_count() == 0
        hook(worker=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
