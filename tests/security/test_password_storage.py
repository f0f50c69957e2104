"""Password storage (OWASP ASVS 4.0.3 2.4.1 and 2.4.4, NIST SP 800-63B 5.1.1.2): Argon2id with
parameters at or above OWASP's Password Storage Cheat Sheet minimum outside tests, and a stored
hash upgraded at the next sign-in when the configured parameters change."""

from __future__ import annotations

import pytest
from argon2 import Type, extract_parameters, profiles
from sqlalchemy import select

from app.config import BaseConfig, DevelopmentConfig, ProductionConfig, TestingConfig
from app.extensions import db
from app.models import User

# OWASP Password Storage Cheat Sheet, Argon2id: equivalent minimum (memory KiB, iterations) pairs,
# each with parallelism 1.
OWASP_ARGON2ID_MINIMUMS = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))


def meets_owasp_minimum(parameters) -> bool:
    """True when Argon2id `parameters` use at least the memory and iterations of one OWASP row."""
    return parameters.type is Type.ID and parameters.parallelism >= 1 and any(
        parameters.memory_cost >= memory and parameters.time_cost >= iterations
        for memory, iterations in OWASP_ARGON2ID_MINIMUMS)


@pytest.mark.parametrize("config", [BaseConfig, DevelopmentConfig, ProductionConfig])
def test_weak_password_hash_parameters_are_at_or_above_owasps_minimum(config):
    """Use of a weak hash (CWE-916): is every configuration that real users meet set to an Argon2id
    profile at or above OWASP's minimum (the cheapest profile is for tests alone)?"""
    assert meets_owasp_minimum(getattr(profiles, config.ARGON2_PROFILE))
    assert not meets_owasp_minimum(getattr(profiles, TestingConfig.ARGON2_PROFILE)), "the checker can fail"


def test_weak_password_hash_is_upgraded_when_the_parameters_change(app, client, auth, customer):
    """Use of a weak hash (CWE-916): after the configured Argon2 parameters are raised, does the
    customer's next sign-in replace the stored hash with one made with the new parameters, and does
    the password still work afterwards?"""
    def stored_parameters():
        with app.app_context():
            return extract_parameters(db.session.scalar(select(User.password_hash).where(User.id == customer.id)))

    before = stored_parameters()
    assert before == profiles.CHEAPEST

    app.config["ARGON2_PROFILE"] = "RFC_9106_LOW_MEMORY"
    assert auth.login(customer.email).status_code == 302
    after = stored_parameters()
    assert after == profiles.RFC_9106_LOW_MEMORY and meets_owasp_minimum(after)

    auth.logout()
    assert auth.login(customer.email).status_code == 302
    assert stored_parameters() == after, "an up-to-date hash is not rewritten at every sign-in"
