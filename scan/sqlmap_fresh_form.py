"""Fresh one-time form values for sqlmap's `--eval` hook (the transfer forms).

A transfer form carries a one-time `idempotency_key` (DESIGN.md section 3): the first request
that moves money uses it up, and every later request with the same key is answered "already
made" without looking at the other fields. sqlmap's own `--csrf-token` refresh handles one
token only, so for the transfer forms scan/run_scan.py runs sqlmap with

    --eval "import os,sys;sys.path.insert(0,os.environ['BANK_SCAN_DIR']);import sqlmap_fresh_form as _ff;csrf_token,idempotency_key=_ff.fresh(cookie)"

sqlmap executes that Python before every request it sends, with each form field and the
request's `cookie` header as variables, and writes back any variable the code changed. fresh()
GETs the form page (BANK_SCAN_FORM_URL) with the same session cookie and returns the page's
`csrf_token` and a newly issued `idempotency_key`, so every request sqlmap makes is a
first-time submission that reaches the transfer service.

Standard library only: it runs inside sqlmap's own interpreter (.venv-scan), not the app's.
sqlmap turns `;` into new lines before running the hook, so the hook line above has no
string containing one.
"""

from __future__ import annotations

import html
import os
import re
import urllib.request

USER_AGENT_SUFFIX = " (fresh form)"
_INPUTS = re.compile(r"<input\b[^>]*>", re.I)
_ATTRIBUTE = re.compile(r'([a-zA-Z_:-]+)="([^"]*)"')


def hidden_values(page: str) -> dict[str, str]:
    """The name → value of every `<input>` in `page` that has both (first occurrence wins)."""
    values: dict[str, str] = {}
    for tag in _INPUTS.findall(page):
        attributes = dict(_ATTRIBUTE.findall(tag))
        if "name" in attributes and "value" in attributes:
            values.setdefault(attributes["name"], html.unescape(attributes["value"]))
    return values


def fresh(cookie: str | None) -> tuple[str, str]:
    """GET the form named by BANK_SCAN_FORM_URL with `cookie`; return (csrf_token, idempotency_key).

    Raises RuntimeError when the page has neither (e.g. the session ended), which sqlmap
    reports as an error of the --eval code and stops: better than scanning a login page.
    """
    url = os.environ["BANK_SCAN_FORM_URL"]
    if not url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
        raise RuntimeError(f"BANK_SCAN_FORM_URL must name the scan's server on 127.0.0.1, not {url!r}")
    headers = {"User-Agent": os.environ.get("BANK_SCAN_USER_AGENT", "bank-scan") + USER_AGENT_SUFFIX}
    if cookie:
        headers["Cookie"] = cookie
    request = urllib.request.Request(url, headers=headers)
    # The URL's scheme and host are checked above: http(s)://127.0.0.1 only.
    with urllib.request.urlopen(request, timeout=30) as response:  # nosec B310
        page = response.read().decode("utf-8", "replace")
    values = hidden_values(page)
    if "csrf_token" not in values or "idempotency_key" not in values:
        raise RuntimeError(f"{url} did not answer with the transfer form (session ended?)")
    return values["csrf_token"], values["idempotency_key"]
