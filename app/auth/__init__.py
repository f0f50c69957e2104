"""Identity service: registration, sign-in, sessions, profile and password (URL prefix /auth)."""

from flask import Blueprint

auth_bp = Blueprint("auth", __name__, url_prefix="/auth")

from . import routes  # noqa: E402,F401  (routes attach themselves to auth_bp)
