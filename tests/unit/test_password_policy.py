"""The password policy of DESIGN.md section 5 (NIST SP 800-63B, OWASP ASVS 2.1): 12 to 128
characters after NFKC, no composition rules, and a zxcvbn score of at least 3 given the user's
email, name and the bank's name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from app.auth.services import hash_password, password_problem, verify_password

BANK_NAME = "Quokkaridge Savings"
EMAIL = "margaret.thistlewood@example.com"
FULL_NAME = "Margaret Thistlewood"
STRONG_12 = "vK9#qT2!mZ7p"
PASSPHRASE = "correct horse battery staple 42"
# 128 characters of unrelated words: strong, and longer than zxcvbn's default limit of 72.
LONG_PASSPHRASE = ("amber fjord quartz ripple kelp orchid tundra basin lantern nickel pebble saffron "
                   "cobalt indigo meadow gravel juniper drift 7 owl")
COMPOSED = "caf\u00e9 lumi\u00e8re na\u00efve pi\u00f1ata"
DECOMPOSED = "cafe\u0301 lumie\u0300re nai\u0308ve pin\u0303ata"


@pytest.fixture
def policy_app() -> Iterator[Flask]:
    """A bare Flask app with the settings the policy reads, and its context pushed (no database)."""
    app = Flask(__name__)
    app.config.update(BANK_NAME=BANK_NAME, ARGON2_PROFILE="CHEAPEST")
    with app.app_context():
        yield app


def problem(password: str, *, email: str = EMAIL, full_name: str = FULL_NAME) -> str | None:
    return password_problem(password, email=email, full_name=full_name)


def test_long_passphrase_fixture_is_exactly_128_characters():
    """Is the boundary fixture really 128 characters (so the next tests test the boundary)?"""
    assert len(LONG_PASSPHRASE) == 128


def test_policy_accepts_a_strong_password_of_exactly_12_characters(policy_app):
    """Is 12 characters enough when the password is hard to guess?"""
    assert problem(STRONG_12) is None


def test_policy_refuses_11_characters_with_a_message_naming_the_minimum(policy_app):
    """Is an 11-character password refused, and does the message say 12?"""
    message = problem(STRONG_12[:11])
    assert message is not None
    assert "12" in message


def test_policy_refuses_empty_and_missing_passwords(policy_app):
    """Are an empty and a missing password refused rather than crashing?"""
    assert problem("") is not None
    assert password_problem(None) is not None


def test_policy_accepts_exactly_128_characters_without_raising(policy_app):
    """Is a 128-character passphrase accepted (zxcvbn is called with max_length=128, not its
    default of 72, which would raise)?"""
    assert problem(LONG_PASSPHRASE) is None


def test_policy_refuses_129_characters_with_a_message_naming_the_maximum(policy_app):
    """Is one character over 128 refused, and does the message say 128?"""
    message = problem(LONG_PASSPHRASE + "x")
    assert message is not None
    assert "128" in message


@pytest.mark.parametrize("length", [129, 500, 10_000])
def test_policy_refuses_very_long_passwords_without_raising(policy_app, length):
    """Does a password far beyond 128 characters get a message instead of an exception?"""
    message = problem("k" * length)
    assert message is not None and "128" in message


def test_policy_counts_length_after_nfkc_so_combining_marks_do_not_pad(policy_app):
    """Is a password of 14 code points that NFKC folds into 7 characters refused as too short?"""
    password = "e\u0301" * 7
    assert len(password) == 14
    message = problem(password)
    assert message is not None and "12" in message


def test_policy_counts_length_after_nfkc_so_ligatures_expand(policy_app):
    """Is a password of 65 ligatures (128 code points or fewer, 130 after NFKC) refused as too long?"""
    password = "\ufb01" * 65
    assert len(password) <= 128
    message = problem(password)
    assert message is not None and "128" in message


def test_policy_has_no_composition_rules(policy_app):
    """Is an all-lower-case passphrase without symbols accepted (NIST: no composition rules)?"""
    assert problem(PASSPHRASE) is None


@pytest.mark.parametrize("password", ["password1234", "123456789012", "qwertyuiopas", "aaaaaaaaaaaa",
                                      "Password123!", "iloveyou2024"])
def test_policy_refuses_common_and_patterned_passwords(policy_app, password):
    """Are 12-character passwords from common lists and keyboard patterns refused as guessable?"""
    message = problem(password)
    assert message is not None
    assert "too easy to guess" in message


def test_policy_refuses_a_password_made_of_the_users_name(policy_app):
    """Is the user's own name refused, although the same string passes for someone else?"""
    password = "MargaretThistlewood"
    assert problem(password, email="someone@example.com", full_name="Other Person") is None
    message = problem(password)
    assert message is not None and "too easy to guess" in message


def test_policy_refuses_a_password_made_of_the_users_email(policy_app):
    """Is the user's own email address refused as a password?"""
    assert problem(EMAIL, email="someone@example.com", full_name="Other Person") is None
    assert problem(EMAIL) is not None


def test_policy_refuses_a_password_made_of_the_bank_name(policy_app):
    """Is the configured bank's name (here written without its space) refused as guessable?"""
    password = "QuokkaridgeSavings"
    assert problem(password) is not None
    policy_app.config["BANK_NAME"] = "Online Bank"
    assert problem(password) is None


@pytest.mark.parametrize("password", [
    "margaret.thistlewood@example.com Margaret Thistlewood",
    "Thistlewood Margaret Thistlewood Margaret",
    "example.com margaret thistlewood!",
    "Quokkaridge Savings quokkaridge savings bank",
    "Savings-Bank-Margaret-Savings",
])
def test_policy_refuses_a_password_made_only_of_the_users_and_the_banks_words(policy_app, password):
    """Is a password made of nothing but the words of the user's email, name and the bank's
    name, repeated, reordered or separated by spaces and punctuation, refused with a message
    that says so, even where zxcvbn alone would score it as strong?"""
    message = problem(password)

    assert message is not None and "made only of words from your name" in message


def test_the_users_words_with_words_of_ones_own_are_judged_by_zxcvbn_alone(policy_app):
    """Does a passphrase that mixes the user's words with words of its own pass when strong (the
    rule above refuses only a password made of nothing else)?"""
    assert problem("Margaret prefers violet harbour lanterns") is None
    assert problem("margaret thistlewood", email="someone@example.com", full_name="Other Person") is None


def test_policy_message_for_guessable_password_says_why(policy_app):
    """Does the refusal for a guessable password say it is too easy to guess, in a sentence?"""
    message = problem("password1234")
    assert message.startswith("This password is too easy to guess.")


def test_hashing_normalizes_so_equivalent_unicode_spellings_match(policy_app):
    """Does a password typed with decomposed accents verify against the hash of the composed one
    (NFKC before hashing, so the same password typed on another keyboard still works)?"""
    assert COMPOSED != DECOMPOSED
    stored = hash_password(COMPOSED)
    assert verify_password(stored, DECOMPOSED)
    assert not verify_password(stored, "cafe lumiere naive pinata")


def test_hash_is_argon2id_and_never_the_password(policy_app):
    """Is the stored hash an Argon2id PHC string that does not contain the password?"""
    stored = hash_password(PASSPHRASE)
    assert stored.startswith("$argon2id$")
    assert PASSPHRASE not in stored


@pytest.mark.parametrize("control", ["\x00", "\t", "\n", "\x1b", "\x7f"])
def test_policy_refuses_control_characters(policy_app, control):
    """Is a password with NUL, tab, a line break or another control character refused with a
    message saying so (NIST SP 800-63B accepts printing characters and spaces)?"""
    message = problem(f"zebra quantum{control}harbor lantern")

    assert message is not None and "control characters" in message


@pytest.mark.parametrize("password", [
    "MargaretThistlewood1234",
    "MargaretThistlewood1987!",
    "thistlewood.margaret!2024",
])
def test_policy_refuses_the_users_words_with_a_few_digits_or_symbols_added(policy_app, password):
    """Is a derivative of the user's and the bank's words (NIST SP 800-63B 5.1.1.2) refused,
    a password whose letters are nothing but those words and whose digits and symbols alone
    would be easy to guess, although zxcvbn scores each of these 3 or more?"""
    message = problem(password)

    assert message is not None and "with a few digits or symbols added" in message
    assert problem(password, email="someone@example.com", full_name="Other Person") is None
    assert "with a few digits or symbols added" in problem("QuokkaridgeSavings2026!!",
                                                           email="someone@example.com", full_name="Other Person")


def test_the_users_words_with_hard_to_guess_digits_pass(policy_app):
    """Does a password whose letters are the user's words pass when what was added to them is
    itself hard to guess (the rule judges the addition, not the presence of the name)?"""
    assert problem("Margaret 8302 9174 6651") is None


def test_a_derivative_of_an_email_with_digits_in_it_is_refused(policy_app):
    """Are the email's words found with their digits dropped ("bob7" gives "bob")?"""
    assert problem("BobTester12345", email="bob7.tester@example.com", full_name="Someone Else") is not None
    assert problem("BobTester12345", email="someone@example.com", full_name="Someone Else") is None
