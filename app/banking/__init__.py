"""Core banking service: accounts, transfers, transactions (URL prefix /banking)."""

from flask import Blueprint

banking_bp = Blueprint("banking", __name__, url_prefix="/banking")

from . import admin_routes, routes  # noqa: E402,F401  (routes attach themselves to banking_bp)
