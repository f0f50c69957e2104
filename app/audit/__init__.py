"""Audit service: the append-only, hash-chained audit log.

Unlike the other blueprint packages, this one does not import its routes here: app/security.py
imports `app.audit.services` (log_event hands over to it), and the routes need app/security.py,
so importing them from this file would be a circular import whenever app.security is loaded
first. The app factory imports `audit_bp` from `app.audit.routes`, which attaches the views.
"""

from flask import Blueprint

audit_bp = Blueprint("audit", __name__, url_prefix="/audit")
