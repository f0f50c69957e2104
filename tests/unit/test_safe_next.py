"""is_safe_next_url: `?next=` may only lead to a local path (OWASP ASVS 5.1.5; DESIGN.md section 5)."""

from __future__ import annotations

import pytest

from app.security import is_safe_next_url

LOCAL_PATHS = [
    "/",
    "/banking/dashboard",
    "/banking/transactions?type=debit&page=2",
    "/auth/profile#details",
    "/support/tickets/12",
    "/path/with%2Fencoded",
    "/a:b",
]

UNSAFE_TARGETS = {
    "scheme-relative": "//evil.example",
    "scheme-relative with path": "//evil.example/banking/dashboard",
    "triple slash": "///evil.example",
    "slash backslash": "/\\evil.example",
    "backslash slash": "\\/evil.example",
    "double backslash": "\\\\evil.example",
    "backslash inside path": "/banking\\..\\evil",
    "scheme without slashes": "https:evil.example",
    "http absolute": "http://x",
    "https absolute": "https://evil.example/banking/dashboard",
    "upper-case scheme": "HTTPS://evil.example",
    "javascript": "javascript:alert(1)",
    "javascript upper-case": "JavaScript:alert(1)",
    "data URL": "data:text/html,<script>alert(1)</script>",
    "relative path": "banking/dashboard",
    "dot relative": "./dashboard",
    "bare host": "evil.example",
    "leading space": " /banking/dashboard",
    "tab after slash": "/\t/evil.example",
    "newline after slash": "/\n/evil.example",
    "carriage return": "/\r\nLocation: https://evil.example",
    "NUL": "/banking\x00/dashboard",
    "DEL": "/\x7f/evil.example",
    "escape": "/\x1b/evil.example",
    "empty": "",
    "over-long": "/" + "a" * 2001,
}


@pytest.mark.parametrize("target", LOCAL_PATHS)
def test_is_safe_next_url_accepts_local_paths(target):
    """Is a path on this site (with query or fragment) accepted?"""
    assert is_safe_next_url(target) is True


@pytest.mark.parametrize("target", UNSAFE_TARGETS.values(), ids=UNSAFE_TARGETS.keys())
def test_is_safe_next_url_refuses_anything_that_could_leave_the_site(target):
    """Is every absolute, scheme-relative, backslashed or control-character target refused?"""
    assert is_safe_next_url(target) is False


def test_is_safe_next_url_refuses_none():
    """Is a missing `next` refused (the caller then uses the dashboard)?"""
    assert is_safe_next_url(None) is False
