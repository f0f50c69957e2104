"""Domain errors raised by services, and the plain error pages for every error status.

A DomainError's message is written for the user and safe to show. Error pages never include a
stack trace, an exception text or any other internal detail.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from .extensions import TryAgainError, db, rate_limit_retry_after

log = logging.getLogger(__name__)


class DomainError(Exception):
    """A business rule refused the request; `str(exc)` is the message shown to the user."""

    default_message = "The request could not be completed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class AccountNotFoundError(DomainError):
    """The account does not exist or the acting user may not use it."""

    default_message = "Account not found."


class AccountNotActiveError(DomainError):
    """The account is frozen or closed."""

    default_message = "That account is frozen or closed and cannot be used."


class TargetUnavailableError(DomainError):
    """External target unknown, frozen or closed: one message, so nothing is learned (DESIGN §3)."""

    default_message = "That account number cannot receive transfers. Check the number and try again."


class InsufficientFundsError(DomainError):
    """The source balance is below the amount."""

    default_message = "Insufficient funds in the source account."


class SameAccountError(DomainError):
    """Source and target are the same account."""

    default_message = "Choose two different accounts."


class LimitExceededError(DomainError):
    """A configured limit (amount, number of accounts) would be exceeded."""


class DuplicateTransferError(DomainError):
    """The idempotency key was used already: the transfer was made once and is not repeated."""

    default_message = "This transfer was already made; it was not repeated."

    def __init__(self, reference: str | None = None) -> None:
        super().__init__()
        self.reference = reference


class BusyError(DomainError):
    """Concurrent updates kept conflicting; nothing was changed."""

    default_message = "The bank is busy right now. Nothing was changed; please try again."


class ValidationRuleError(DomainError):
    """A rule on user input that only the service can check (e.g. last active admin)."""


class TicketNotFoundError(DomainError):
    """No support ticket has this id (shown as 404)."""

    default_message = "Ticket not found."


ERROR_TITLES = {
    400: ("Bad request", "The request could not be understood. Please go back and try again."),
    403: ("Forbidden", "You do not have permission to open this page."),
    404: ("Not found", "There is no such page, or it is not yours to see."),
    405: ("Method not allowed", "This page does not accept that kind of request."),
    413: ("Request too large", "The request was larger than the bank accepts."),
    415: ("Unsupported content", "The bank takes web forms only."),
    429: ("Too many requests", "Too many attempts. Please wait a few minutes and try again."),
    500: ("Something went wrong", "The bank could not complete the request. Check your accounts before trying again."),
    503: ("Service unavailable", "The bank is temporarily unavailable. Please try again shortly."),
}


def error_page(status: int, message: str | None = None):
    """Render the plain page for `status` (int HTTP status) with an optional safe message.

    Rendered straight from the Jinja environment, without the context processors that
    render_template runs: Flask-Login's loads the signed-in user, i.e. queries the database —
    the very thing that may have failed. When the user loader itself raised OperationalError,
    rendering the 503 page that way raised it again inside the handler, and the request ended
    as the WSGI server's bare 500 (no security headers). The page needs nothing but its
    arguments and `url_for`, which is a Jinja global.
    """
    title, default = ERROR_TITLES.get(status, ERROR_TITLES[500])
    template = current_app.jinja_env.get_template("errors/error.html")
    return template.render(status=status, title=title, message=message or default), status


def _rollback_quietly() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.warning("rollback failed while handling an error", exc_info=True)


def register_errorhandlers(app: Flask) -> None:
    """Install plain pages for 400, 403, 404, 405, 413, 415, 429, 500 and 503 and the CSRF failure."""

    @app.errorhandler(CSRFError)
    def csrf_failed(exc: CSRFError):
        return error_page(400, "The form expired or was not sent by this site. Reload the page and try again.")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if status >= 500:
            _rollback_quietly()
        body, shown = error_page(status if status in ERROR_TITLES else 500 if status >= 500 else 400)
        # The exception's own headers go out with the page: `Allow` on a 405 (RFC 9110 §15.5.6),
        # `Retry-After` on a 429 refused by an allowance (refuse_over_allowance). A 429 from a
        # Flask-Limiter decorator carries none: it gets the breached limit's own (RFC 6585 §4).
        headers = [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]
        if status == 429 and not any(name.lower() == "retry-after" for name, _ in headers):
            retry_after = rate_limit_retry_after()
            if retry_after is not None:
                headers.append(("Retry-After", str(retry_after)))
        return body, shown, headers

    @app.errorhandler(TryAgainError)
    def busy(exc: TryAgainError):
        _rollback_quietly()
        return error_page(503, BusyError.default_message)

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(exc: DBAPIError):
        _rollback_quietly()
        log.error("database error: %s", type(exc).__name__)
        return error_page(503)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        _rollback_quietly()
        log.exception("unhandled error")
        return error_page(500)
