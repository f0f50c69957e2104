"""Security headers on every response, built with the `secure` package (DESIGN.md section 5b)."""

from __future__ import annotations

import secure
from flask import Flask, request

CONTENT_SECURITY_POLICY = (
    secure.ContentSecurityPolicy()
    .default_src("'self'")
    .img_src("'self'", "data:")
    .object_src("'none'")
    .base_uri("'none'")
    .frame_ancestors("'none'")
    .form_action("'self'")
)


def build_secure_headers(production: bool) -> secure.Secure:
    """The header set, configured header by header (the presets send `unsafe-inline` or
    `no-referrer`, which breaks Flask-WTF's HTTPS referrer check). HSTS only in production."""
    return secure.Secure(
        csp=CONTENT_SECURITY_POLICY,
        xcto=secure.XContentTypeOptions(),
        xfo=secure.XFrameOptions().deny(),
        referrer=secure.ReferrerPolicy().strict_origin_when_cross_origin(),
        coop=secure.CrossOriginOpenerPolicy().same_origin(),
        permissions=(
            secure.PermissionsPolicy()
            .accelerometer().camera().geolocation().gyroscope().magnetometer().microphone()
            .payment().usb().fullscreen()
        ),
        hsts=secure.StrictTransportSecurity().max_age(63072000).include_subdomains() if production else None,
    )


def register_security_headers(app: Flask) -> None:
    """Add the security headers, and `Cache-Control: no-store` on every answer but a static
    file served (a refused or missing static path is an error page like any other)."""
    headers = build_secure_headers(app.config["APP_ENV"] == "production")

    @app.after_request
    def add_headers(response):
        headers.set_headers(response)
        if not (request.endpoint or "").endswith("static") or response.status_code >= 400:
            response.headers["Cache-Control"] = "no-store"
            response.headers["Pragma"] = "no-cache"
        return response
