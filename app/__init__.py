"""Online Bank: the application factory, assembled from small `register_*` steps."""

from __future__ import annotations

import os
from typing import Any

from dotenv import load_dotenv
from flask import Flask, redirect, url_for
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

load_dotenv()

from .config import config_class  # noqa: E402  (reads the environment that .env just filled)
from .extensions import (  # noqa: E402
    bootstrap,
    csrf,
    db,
    end_read_only_transaction,
    limiter,
    login_manager,
    migrate,
    register_database_engine_options,
)
from .sessions import IdleTimeoutSessionInterface  # noqa: E402


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the application.

    test_config: settings that override the class chosen by APP_ENV (tests pass
    `{"APP_ENV": "testing", ...}`). Raises ConfigurationError when production settings are
    unsafe (missing or short SECRET_KEY / AUDIT_HMAC_KEY).
    """
    app = Flask(__name__, instance_relative_config=True)
    register_config(app, test_config)
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_security(app)
    register_template_helpers(app)
    register_commands(app)
    return app


def register_config(app: Flask, test_config: dict[str, Any] | None) -> None:
    """Load the configuration class for APP_ENV, apply overrides, and check it is safe."""
    overrides = dict(test_config or {})
    cls = config_class(overrides.get("APP_ENV") or os.environ.get("APP_ENV"))
    app.config.from_object(cls)
    app.config.update(overrides)
    config = dict(app.config)
    cls.finalize(config, app.instance_path)
    app.config.update(config)
    if app.config["TRUSTED_PROXY_COUNT"]:
        hops = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def register_extensions(app: Flask) -> None:
    """Initialise the database, migrations, login, CSRF, Bootstrap and rate limiting."""
    from .audit.services import install_session_hooks

    db.init_app(app)
    # A request's teardown runs before the app context's, where Flask-SQLAlchemy closes the session.
    app.teardown_request(end_read_only_transaction)
    register_database_engine_options(app)
    install_session_hooks()
    migrate.init_app(app, db, render_as_batch=True)
    csrf.init_app(app)
    bootstrap.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please log in to continue."
    login_manager.login_message_category = "warning"
    # Copied cookies are stopped by the per-user session token (auth/services.load_user);
    # Flask-Login's "strong" mode would add nothing, as it degrades to "basic" for the
    # permanent sessions the idle timeout needs.
    login_manager.session_protection = "basic"
    app.session_interface = IdleTimeoutSessionInterface()

    from .auth.services import load_user

    login_manager.user_loader(load_user)


def register_blueprints(app: Flask) -> None:
    """Register the `<id:...>` URL converter, the services' blueprints and the index route."""
    from .routing import IdConverter

    app.url_map.converters["id"] = IdConverter
    from .audit.routes import audit_bp  # the routes module attaches the views (see app/audit/__init__.py)
    from .auth import auth_bp
    from .banking import banking_bp
    from .support import support_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(banking_bp)
    app.register_blueprint(audit_bp)
    app.register_blueprint(support_bp)

    @app.route("/")
    def index():
        """Anonymous → the login page; signed in → the dashboard."""
        if current_user.is_authenticated:
            return redirect(url_for("banking.dashboard"))
        return redirect(url_for("auth.login"))


def register_errorhandlers(app: Flask) -> None:
    """Plain error pages for every error status (app/errors.py)."""
    from .errors import register_errorhandlers as install

    install(app)


def register_security(app: Flask) -> None:
    """Security headers and `Cache-Control: no-store` on every response; oversized chunked
    bodies, then bodies that are not web forms of text fields (JSON, files), refused before
    anything (CSRF check included) reads the form."""
    from .headers import register_security_headers
    from .security import refuse_bodies_that_are_not_forms, refuse_oversized_streams

    register_security_headers(app)
    app.before_request_funcs.setdefault(None, [])[:0] = [refuse_oversized_streams, refuse_bodies_that_are_not_forms]


def register_template_helpers(app: Flask) -> None:
    """Jinja filters for money, masked account numbers and UTC times, pager links, the role-based navigation
    and the layout's fixed links (app/navigation.py), the cached form fragments
    (app/fragments.py) and the forms' hidden inputs (app/widgets.py)."""
    from .fragments import register_form_fragments
    from .models import format_utc_minute
    from .money import format_amount, mask_account_number
    from .navigation import navigation_for, register_layout_links
    from .pagination import page_url
    from .widgets import register_widgets

    app.jinja_env.filters["money"] = format_amount
    app.jinja_env.filters["mask"] = mask_account_number
    app.jinja_env.filters["utc_minute"] = format_utc_minute
    app.jinja_env.globals["page_url"] = page_url
    register_form_fragments(app)
    register_layout_links(app)
    register_widgets(app)

    @app.context_processor
    def inject_navigation() -> dict[str, Any]:
        return {"navigation_for": navigation_for, "bank_name": app.config["BANK_NAME"]}


def register_commands(app: Flask) -> None:
    """seed-admin, verify-ledger, verify-audit."""
    from .commands import register_commands as install

    install(app)
