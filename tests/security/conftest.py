"""Fixtures shared by the attack suites that need nothing but the populated world with CSRF on.

A module that needs another world (CSRF off, its own users and data) defines its own `world`
(and, where it uses one, `sessions`), which pytest prefers to these.
"""

from __future__ import annotations

import pytest

from tests.security.attack_support import Sessions, populated_app


@pytest.fixture(scope="module")
def world(test_backend):
    """attack_support's populated world with CSRF on, as in production: one per test module."""
    with populated_app(test_backend, WTF_CSRF_ENABLED=True) as populated:
        yield populated


@pytest.fixture(scope="module")
def sessions(world):
    """One signed-in client and CSRF token per principal of the module's world."""
    return Sessions(world)
