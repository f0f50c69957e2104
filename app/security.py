"""Cross-cutting security helpers: RBAC, audit logging, safe redirects, session checks.

Order of checks on every request (DESIGN.md section 6): CSRF (Flask-WTF, global) → login →
forced password change → role (403 + ACCESS_DENIED) → the object (404 when not yours).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import abort, current_app, has_request_context, request
from flask_login import current_user
from flask_wtf.form import SUBMIT_METHODS
from werkzeug.exceptions import RequestEntityTooLarge

from .audit import services as audit_services
from .extensions import atomic, db, login_manager, require_allowance
from .models import ROLES

F = TypeVar("F", bound=Callable[..., Any])


def client_ip() -> str | None:
    """The client address as Werkzeug reports it (ProxyFix applies only with TRUSTED_PROXY_COUNT)."""
    return request.remote_addr if has_request_context() else None


def log_event(action: str, details: dict[str, Any] | None = None, *, user_id: int | None = None) -> None:
    """Add an audit event to the current unit of work; it commits with the change it describes.

    action: one of the DESIGN.md section 4 names. details: JSON-serialisable dict without secrets.
    user_id: who acted; defaults to the logged-in user, None when anonymous. Does not commit
    (deliberate deviation from the original spec: audit and change must be atomic).
    Raises ValueError for an unknown action or a detail key that names a secret.
    """
    if user_id is None and has_request_context() and current_user and current_user.is_authenticated:
        user_id = current_user.id
    audit_services.queue_event(db.session, action, details, user_id, client_ip())


def log_standalone_event(action: str, details: dict[str, Any] | None = None, *, user_id: int | None = None) -> None:
    """Write an audit event that has no other change to accompany it, in its own transaction.

    Used for LOGIN_FAILURE, LOGIN_THROTTLED, ACCESS_DENIED, TRANSFER_FAILED, AUDIT_VIEWED and
    the refused USER_UPDATED, ACCOUNT_FROZEN and ACCOUNT_UNFROZEN.
    Same arguments and errors as log_event; commits.
    """
    if user_id is None and has_request_context() and current_user and current_user.is_authenticated:
        user_id = current_user.id
    with atomic():
        audit_services.queue_event(db.session, action, details, user_id, client_ip())


def roles_required(*roles: str) -> Callable[[F], F]:
    """Allow the view only to logged-in users whose role (read from the database) is in `roles`.

    Anonymous users are sent to the login page; a logged-in user with another role gets 403 and
    an ACCESS_DENIED audit row naming the path (OWASP ASVS 4.1.1, 4.1.3, 7.2.2), or, past
    ACCESS_DENIED_RATE_LIMIT refusals for that user, 429 with Retry-After and no row (ASVS
    11.1.4: the audit log is not a sink any signed-in user can fill at will).
    Raises ValueError at import time for a role name that does not exist.
    """
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles_required needs known roles, got {roles!r}")

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if current_user.role not in roles:
                require_allowance("ACCESS_DENIED_RATE_LIMIT", "access-denied")
                log_standalone_event(
                    "ACCESS_DENIED",
                    {"path": request.path[:200], "method": request.method, "role": current_user.role},
                )
                abort(403)
            return view(*args, **kwargs)

        wrapped.allowed_roles = tuple(roles)  # type: ignore[attr-defined]
        return wrapped  # type: ignore[return-value]

    return decorator


def is_safe_next_url(target: str | None) -> bool:
    """True only for a local path such as `/banking/dashboard?x=1` (OWASP ASVS 5.1.5).

    Refuses absolute and scheme-relative URLs (`//host`, `/\\host`, `https:host`, `javascript:`),
    backslashes, and control characters, so `next` can never send a user to another site.
    """
    if not target or len(target) > 2000:
        return False
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target) or "\\" in target:
        return False
    if not target.startswith("/") or target.startswith("//"):
        return False
    parts = urlsplit(target)
    return not parts.scheme and not parts.netloc


FILE_UPLOAD_REFUSED = "This site takes no file uploads. Fill in the form and send it again."
NOT_A_FORM_REFUSED = "This site takes web forms only. Fill in the form and send it again."
FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def refuse_bodies_that_are_not_forms():
    """Answer with the plain error page and a message a request body that is not a web form of
    text fields: 415 to a JSON (or any other non-form) body, 400 to a multipart form with a file
    part.

    Every form of the bank is a web form of text fields, and Flask-WTF fills a form from
    whatever the body holds: from `request.get_json()` for a JSON body (the CSRF token may come
    in the X-CSRFToken header) and from `request.files` beside the fields of a multipart one.
    A number, list or file where a field expects text then reached its validators, and the
    length check raised TypeError: a 500 instead of a refusal (CWE-20; DESIGN.md section 6).
    A body with no Content-Type is read as an empty form. Only the requests whose body
    Flask-WTF reads (its SUBMIT_METHODS: POST, PUT, PATCH, DELETE) are looked at, and only
    multipart bodies are parsed for files. Runs after refuse_oversized_streams and before the CSRF check, so nothing
    reads such a body as a form (OWASP ASVS 4.0.3 5.1.3; 13.1.5: unexpected content types are
    refused with 415). Returns None to let the request go on, or the plain page and its
    status, (str, 415) or (str, 400).
    """
    if request.method not in SUBMIT_METHODS or not request.mimetype:
        return None
    from .errors import error_page

    if request.mimetype not in FORM_MIMETYPES:
        return error_page(415, NOT_A_FORM_REFUSED)
    return error_page(400, FILE_UPLOAD_REFUSED) if request.mimetype == "multipart/form-data" and request.files else None


def refuse_oversized_streams() -> None:
    """Answer 413 to a body sent without Content-Length (chunked) that is longer than
    MAX_CONTENT_LENGTH (DESIGN.md section 5b; OWASP ASVS 4.0.3 12.1.1).

    With a Content-Length, Werkzeug refuses an oversized body before reading it. Without one,
    it reads a urlencoded body only up to the limit and then stops without an error, so the
    first MAX_CONTENT_LENGTH bytes would be processed as if they were the whole form. This reads
    the body (at most the limit, cached for the form parser) and looks for one byte more.
    """
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None or request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return
    if len(request.get_data(cache=True, parse_form_data=False)) >= limit and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
