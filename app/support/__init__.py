"""Support desk service: customers' tickets and staff replies (URL prefix /support)."""

from flask import Blueprint

support_bp = Blueprint("support", __name__, url_prefix="/support")

from . import routes  # noqa: E402,F401  (routes attach themselves to support_bp)
