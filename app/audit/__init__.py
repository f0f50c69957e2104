"""Audit service: the append-only, hash-chained audit log."""

from flask import Blueprint

audit_bp = Blueprint("audit", __name__, url_prefix="/audit")

from . import routes  # noqa: E402,F401  (routes attach themselves to audit_bp)
