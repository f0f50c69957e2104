"""TOTP second factor primitives (RFC 6238 with RFC 4226's HOTP; OWASP ASVS 4.0.3 2.8).

The authenticator key is 160 random bits (RFC 4226 section 4), shown once as text and as a QR
code rendered here (no outside service sees it), and stored only encrypted: AES-256-GCM under a
key derived with HKDF-SHA256 from MFA_ENCRYPTION_KEY, which lives outside the database, with the
user id as associated data so a ciphertext copied to another user's row does not decrypt
(ASVS 2.8.3 and 6.2.2: approved algorithms; 6.4.2: key material outside the database).

Codes: 6 digits, 30-second steps, one step of clock drift either way (RFC 6238 section 5.2).
This module only computes; single use, throttling and audit belong to auth/services.py.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import time

import pyotp
import segno
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
CODE_PATTERN = re.compile(r"[0-9]{6}")
_VERSION = "v1"
_NONCE_BYTES = 12


class MfaKeyError(Exception):
    """A stored authenticator key could not be decrypted (wrong MFA_ENCRYPTION_KEY, or tampered)."""


def new_secret() -> str:
    """A new authenticator key: 32 base32 characters (160 random bits from the OS CSPRNG)."""
    return pyotp.random_base32(length=32)


def _cipher() -> AESGCM:
    material = current_app.config["MFA_ENCRYPTION_KEY"].encode("utf-8")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"online-bank totp key encryption v1").derive(material)
    return AESGCM(key)


def encrypt_secret(secret: str, context: str) -> str:
    """Encrypt `secret` (base32 text) for storage; `context` (e.g. "user:42") is bound to it as
    associated data and must be given again to decrypt. Returns "v1." + base64url(nonce + ciphertext)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher().encrypt(nonce, secret.encode("ascii"), context.encode("utf-8"))
    return f"{_VERSION}." + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def decrypt_secret(stored: str, context: str) -> str:
    """The base32 key sealed by encrypt_secret with the same `context`.

    :raises MfaKeyError: the value is malformed, was sealed for another context, or the
        encryption key differs.
    """
    version, _, payload = (stored or "").partition(".")
    if version != _VERSION:
        raise MfaKeyError("unknown format")
    try:
        raw = base64.urlsafe_b64decode(payload.encode("ascii"))
        return _cipher().decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode("utf-8")).decode("ascii")
    except (InvalidTag, ValueError, UnicodeError) as exc:
        raise MfaKeyError("the authenticator key can't be decrypted") from exc


def matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The time step (int, Unix time // 30) whose code equals `code`, looking one step either side
    of `now` (seconds since the epoch, default the current time); None when none matches or
    `code` is not exactly 6 ASCII digits. Compared in constant time."""
    if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    matched = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step
    return matched


def code_at(secret: str, step: int) -> str:
    """The 6-digit code of `secret` for time `step` (what an authenticator app shows)."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).generate_otp(step)


def provisioning_uri(secret: str, email: str) -> str:
    """The otpauth:// URI authenticator apps read from the QR code (issuer = the bank's name)."""
    issuer = current_app.config["BANK_NAME"]
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(name=email, issuer_name=issuer)


def qr_code_data_uri(uri: str) -> str:
    """`uri` as a QR code in an SVG `data:` URI, drawn here (the CSP allows `data:` images only)."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def grouped(secret: str) -> str:
    """The key in groups of four characters, for typing into an app by hand."""
    return " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
