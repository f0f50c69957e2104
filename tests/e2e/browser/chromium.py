"""Which Chromium the browser suite drives: Debian's `chromium` package, never a browser that
Playwright downloads. Kept apart from the fixtures so tests/conftest.py can name it in the
report header without importing the browser suite's conftest."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/bin/chromium"
# The flags the machine's probe used: no sandbox (root in a container), no GPU, and nothing that
# phones home (this network is closed; those connections would only fail, noisily).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_executable() -> tuple[str | None, str]:
    """(path, "") of the executable named by BANK_CHROMIUM (default /usr/bin/chromium), or
    (None, the reason the browser suite is skipped) when there is none."""
    named = os.environ.get("BANK_CHROMIUM", "").strip()
    path = named or DEFAULT_CHROMIUM
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path, ""
    source = "BANK_CHROMIUM" if named else "the default; set BANK_CHROMIUM to use another"
    return None, (f"browser suite skipped: no Chromium executable at {path} ({source}); install Debian's "
                  "`chromium` package")
