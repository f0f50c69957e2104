"""Flask's signed-cookie sessions with the idle timeout enforced by the server, re-signed at most
once per SESSION_RESIGN_INTERVAL instead of on every response.

The idle timeout (DESIGN.md section 5; PCI DSS v4.0 8.2.8, OWASP ASVS 4.0.3 3.3.2) is the age of
the cookie's signature: Flask refuses a cookie signed more than PERMANENT_SESSION_LIFETIME ago,
and re-signs it as the session is used. Re-signing on every response costs a serialization, an
HMAC and a Set-Cookie per request; re-signing only when the signature is at least
SESSION_RESIGN_INTERVAL old means a session ends between PERMANENT_SESSION_LIFETIME minus the
interval and PERMANENT_SESSION_LIFETIME after its last request: earlier at worst, never later.
A session whose content changes (sign-in, a flash message, a new CSRF token) is re-signed at once,
as before.
"""

from __future__ import annotations

import time
from datetime import datetime

from flask import Flask
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask.wrappers import Request
from itsdangerous import BadSignature


class SignedSession(SecureCookieSession):
    """A session that knows when its cookie was signed (`signed_at`, UTC; None when new)."""

    signed_at: datetime | None = None


class IdleTimeoutSessionInterface(SecureCookieSessionInterface):
    """SecureCookieSessionInterface whose unchanged sessions are re-signed only once their
    signature is SESSION_RESIGN_INTERVAL (seconds) old or older."""

    session_class = SignedSession

    def open_session(self, app: Flask, request: Request) -> SignedSession | None:
        """The session of the request's cookie, or a new one when there is none, its signature
        is wrong, or it was signed more than PERMANENT_SESSION_LIFETIME ago (the idle timeout)."""
        serializer = self.get_signing_serializer(app)
        if serializer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            data, signed_at = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        session = self.session_class(data)
        session.signed_at = signed_at
        return session

    def should_set_cookie(self, app: Flask, session: SecureCookieSession) -> bool:
        """True when the session changed, or when it is permanent, refreshed on use, and its
        signature is at least SESSION_RESIGN_INTERVAL seconds old (or unknown)."""
        if session.modified:
            return True
        if not (session.permanent and app.config["SESSION_REFRESH_EACH_REQUEST"]):
            return False
        signed_at = getattr(session, "signed_at", None)
        if signed_at is None:
            return True
        return time.time() - signed_at.timestamp() >= app.config["SESSION_RESIGN_INTERVAL"]
