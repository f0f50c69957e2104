"""Outside scanners: sqlmap and wapiti3 against the real server on a throw-away database.

`make scan` runs `python -m scan.run_scan` inside `.venv` (the app's own environment) once
`.venv-scan` (sqlmap, requirements-scan.txt) and `.venv-wapiti` (wapiti3 and its pinned
dependencies, requirements-wapiti.txt) are installed. Nothing here needs the internet, and
nothing is sent anywhere but 127.0.0.1.

What it does
------------
1. A fresh SQLite database in a temporary folder, migrated with `flask db upgrade`, and seeded
   by scan/seed.py: a customer with two accounts, transfers and a ticket; a second customer;
   support, auditor and admin users; a customer for the admin's edit form; a customer with two
   accounts for the admin's transfer forms, which no run changes. Every user gets the same
   random strong password, drawn for this run.
2. The app under gunicorn with the committed gunicorn.conf.py (4 workers) on a free 127.0.0.1
   port: APP_ENV=development, CSRF on, fresh random SECRET_KEY, AUDIT_HMAC_KEY and
   MFA_ENCRYPTION_KEY in the environment (nothing is written into instance/), and
     - RATELIMIT_ENABLED=false: Flask-Limiter's request limits would otherwise answer 429 to
       the scanners within a minute and hide the pages behind them;
     - LOGIN_MAX_FAILURES_PER_EMAIL and _PER_IP = 1000000: the database login throttle cannot
       be switched off, only raised, and at 5/20 it would answer 429 to every login probe
       after the twentieth (so the login form's parameters would not really be tested) and
       lock the scan's own users out. The throttle itself is covered by the test suite.
   Its access log records the time, status, User-Agent and whole request line of each
   request (the committed format leaves the query string out; this log holds scan data only).
   Every scanner run sends its own User-Agent, so each request and each 5xx is attributed.
3. sqlmap (.venv-scan) on every GET filter and every form parameter of DESIGN.md section 6,
   one run per page (sqlmap_targets()), each signed in afresh over HTTP as its role (GET
   /auth/login, take csrf_token, POST); SCAN_JOBS (3) runs at a time. Level 1, risk 1,
   --dbms=SQLite, --text-only (see scan/tools.py). Forms get a fresh CSRF token per request
   (--csrf-token/--csrf-url); the transfer forms also need a fresh one-time idempotency_key,
   which sqlmap's --eval hook fetches with the form before each request
   (scan/sqlmap_fresh_form.py), so every probe reaches the transfer service. The login form is
   probed with an email that belongs to nobody. csrf_token and idempotency_key are never
   tested as injection points (they are compared as signed strings, never queried).
4. wapiti3 (.venv-wapiti) as anonymous, customer, support, auditor and admin, three at a
   time: a crawl from / with the role's session cookie, the modules in
   tools.WAPITI_ATTACK_MODULES (only those that need no internet, and why the others are
   left out), time limits, a JSON report. Not crawled: log-out, turning two-step sign-in off,
   change-password (WAPITI_EXCLUDE); forms another role's run already attacks
   (WAPITI_ROLE_EXCLUDE); all but one object of each object page (object_exclusions()), so the
   admin's run edits and freezes only the edit-target customer, never a scan user.
5. A stored-payload sweep once every attack is over: as each role, the pages that show stored
   data (tickets, names, audit details) are fetched and any inline script or event-handler
   attribute fails (no template has one; the CSP forbids them). wapiti's permanentxss follows
   its own payloads within one run only.
6. The production settings: a second, short server with APP_ENV=production over HTTPS (a
   throw-away self-signed certificate), whose session cookie must be `__Host-session` with
   Secure, HttpOnly, SameSite and Path=/ (checked from the Set-Cookie header), crawled
   anonymously by wapiti's cookieflags, http_headers and csp modules. The development server
   sends its cookie without Secure on purpose (plain HTTP on localhost); production is what
   ships, so the Secure flag is judged there: a missing Secure flag on the development server
   is listed, not failed. Every other cookie flag finding fails, on either server.
7. `flask verify-ledger` and `flask verify-audit` on the scanned database: the scanners moved
   money and wrote thousands of audit rows, and the books must still hold.
8. The verdict, written to reports/scan-<timestamp>.md with the raw outputs beside it in
   reports/scan-<timestamp>/ (sqlmap logs and gzipped traffic, wapiti JSON reports and logs,
   both servers' access and error logs). The scan fails (exit status 1) on:
   - any sqlmap finding: an injection point (confirmed, or a candidate sqlmap did not reject)
     or its XSS / file-inclusion heuristic;
   - any wapiti finding in the categories injection, XSS, CSRF, open redirect, file
     disclosure, command execution and cookie flags (tools.WAPITI_FAILING), or a 500 it saw;
   - stored markup found by the sweep, a bad cookie flag found by the cookie check;
   - any 5xx answer in the servers' access logs, or a traceback in their error logs;
   - a ledger or audit-chain check that fails;
   - a tool that did not run to its end (error, time-out, no report, no conclusion), since a
     scan that did not happen is not a pass.
   Everything else the tools report (headers they would like, HTTP methods, crawled pages,
   sqlmap heuristics it then rejected, a module stopped by its time limit) is listed as
   informational.

Options: `--only TEXT` runs only the sqlmap targets and wapiti roles whose name contains TEXT
(for a quick look; the report says so); `--skip-wapiti`, `--skip-sqlmap`. Environment:
SCAN_JOBS (scanner processes at a time, default 3), SCAN_SQLMAP_LEVEL / SCAN_SQLMAP_RISK
(default 1 / 1; e.g. 3 / 2 adds SQLite's time-based and stacked tests, several times longer),
SCAN_WAPITI_SECONDS (crawl limit) and SCAN_WAPITI_ATTACK_SECONDS (per module).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from . import tools
from .server import REPO, Browser, Server, input_values, scrubbed_environment, self_signed_certificate, start_server
from .tools import Finding, SqlmapTarget, ToolRun

REPORTS = REPO / "reports"
# Scanner processes at a time. sqlmap and wapiti send one request at a time and wait for it, so
# on their own they leave this 2-core machine half idle; the server runs DEV_WORKERS workers.
PARALLEL_JOBS = int(os.environ.get("SCAN_JOBS", "3"))
DEV_WORKERS = 4
SCAN_USERS = ("customer", "customer2", "support", "auditor", "admin")
WAPITI_ROLES = ("anonymous", "customer", "support", "auditor", "admin")
NOBODY_EMAIL = "scan-nobody@example.com"
# Not crawled by wapiti: log-out and turning two-step sign-in off would end the session or change
# its security settings; the change-password form's three fields are passwords, only ever hashed
# or checked with Argon2 (about 0.1 s a request, so the modules would spend their whole time
# there) and never shown again; sqlmap tests its parameters.
WAPITI_EXCLUDE = ("/auth/logout*", "/auth/mfa/disable*", "/auth/change-password*")
# Pager parameters dropped from crawled links: every page of the audit log is another URL, and
# the scan writes thousands of audit rows. Each list is still crawled (and attacked) once with
# its pager parameter through the start URLs below; sqlmap tests page and before everywhere.
WAPITI_REMOVE = ("page", "before")
# Pages each role's run starts from, besides /: the lists with their pager parameter (dropped
# from crawled links) and the objects kept by object_exclusions(), which may no longer be on a
# list's first page once the scanners have added rows.
#
# The admin's transfer forms act for the seeded transfer owner, a customer no run changes. Those
# pages show the owner's name and accounts, and wapiti's blind SQL test compares the pages it gets
# back for "AND 1=2" probes and for "AND 1=1" probes with the page for the form's own values
# (here an invalid amount: the same refusal whatever the probe). Acting for the scan customer,
# whose name the customer's run rewrites while it attacks the profile form, the page could
# change under the "1=2" probes and change back before the "1=1" ones: a run reported an
# injection in `amount` that way, and sqlmap, which tests `amount` on its own, found none.
def wapiti_start(role: str, data: dict) -> tuple[str, ...]:
    ticket = f"/support/tickets/{data['ticket_id']}"
    transfer_owner = data["users"]["transfer_owner"]["id"]
    return {
        "anonymous": ("/auth/login", "/auth/register"),
        "customer": ("/banking/transactions?page=1",),
        "support": ("/support/tickets?page=1", ticket),
        "auditor": ("/audit/logs?before=1000000", "/audit/transactions?before=1000000"),
        "admin": ("/banking/admin/users?page=1", "/banking/admin/accounts?page=1",
                  f"/banking/admin/users/{data['users']['edit_target']['id']}/edit",
                  f"/banking/admin/accounts?account_number={data['accounts']['edit_target']['number']}",
                  f"/banking/transfer/internal?owner_user_id={transfer_owner}",
                  f"/banking/transfer/external?owner_user_id={transfer_owner}"),
    }[role]


# Pages attacked in one role's run only: the profile and two-step sign-in forms are the same
# form and code for everyone (the customer's run attacks them), and the admin's support and
# audit pages are the support and auditor runs' pages. The admin's transfer forms are attacked
# for the customer named in the start URLs, not again for each customer the owner picker offers.
# Who may open what is the access-matrix tests' job (tests/integration), not the scanners'.
WAPITI_ROLE_EXCLUDE = {
    "anonymous": (),
    "customer": (),
    "support": ("/auth/profile*", "/auth/mfa/setup*"),
    "auditor": ("/auth/profile*", "/auth/mfa/setup*"),
    "admin": ("/auth/profile*", "/auth/mfa/setup*", "/support/*", "/audit/*", "/banking/transfer/*submit=Choose*"),
}
# Markup that no template of the app contains (the CSP forbids inline script, and the pages
# load Bootstrap's scripts by src only): found in a page, it is a stored payload that rendered.
ACTIVE_MARKUP = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<[a-z][^>]*\son[a-z]+\s*=|(?:href|src|action)\s*=\s*[\"']?\s*javascript:", re.I)


# Keys for this run only; both servers share them (one audit chain, one database).
RUN_KEYS = {name: secrets.token_hex(32) for name in ("SECRET_KEY", "AUDIT_HMAC_KEY", "MFA_ENCRYPTION_KEY")}


def server_environment(database_url: str, app_env: str = "development", **settings: str) -> dict[str, str]:
    return scrubbed_environment(
        APP_ENV=app_env, DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **RUN_KEYS,
        RATELIMIT_ENABLED="false", LOGIN_MAX_FAILURES_PER_EMAIL="1000000", LOGIN_MAX_FAILURES_PER_IP="1000000",
        TRUSTED_PROXY_COUNT="0", **settings,
    )


def flask(env: dict[str, str], *args: str) -> str:
    finished = subprocess.run([sys.executable, "-m", "flask", "--app", "run.py", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{finished.stdout}\n{finished.stderr}")
    return finished.stdout


def seed(env: dict[str, str], password: str) -> dict:
    finished = subprocess.run([sys.executable, "-m", "scan.seed"], cwd=REPO, env=env,
                              input=json.dumps({"password": password}), capture_output=True, text=True, timeout=300,
                              check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"seeding failed:\n{finished.stdout}\n{finished.stderr}")
    return json.loads(finished.stdout)


def sqlmap_targets(data: dict) -> list[SqlmapTarget]:
    """Every GET filter and form parameter of DESIGN.md section 6, by role; login last."""
    users, accounts = data["users"], data["accounts"]
    checking, savings = accounts["checking"], accounts["savings"]
    customer_id, ticket_id = users["customer"]["id"], data["ticket_id"]
    dates = "date_from=2000-01-01&date_to=2099-12-31"
    # From 1.00: the seeded debits are 9.99 and more, and every transfer the scanner's own form
    # runs make is 0.01, so the filtered lists read the same from one request to the next (rows
    # added while sqlmap probed a list made it call the page "heavily dynamic", failing the scan).
    amounts = "type=debit&min_amount=1.00&max_amount=100000.00"
    transfer = {"amount": "0.01", "description": "scan"}
    return [
        # customer
        SqlmapTarget("customer", "transactions", f"/banking/transactions?{dates}&{amounts}&page=1",
                     ("date_from", "date_to", "type", "min_amount", "max_amount", "page")),
        SqlmapTarget("customer", "profile", "/auth/profile", ("full_name", "phone"),
                     {"full_name": "Scan Customer", "phone": "+44 20 7946 0001"}),
        SqlmapTarget("customer", "open-account", "/banking/open-account", ("type", "opening_balance"),
                     {"type": "savings", "opening_balance": "0.00"}),
        SqlmapTarget("customer", "transfer-internal", "/banking/transfer/internal",
                     ("source_account", "target_account", "amount", "description"),
                     {"source_account": str(checking["id"]), "target_account": str(savings["id"]), **transfer},
                     transfer=True),
        SqlmapTarget("customer", "transfer-external", "/banking/transfer/external",
                     ("source_account", "target_account_number", "amount", "description"),
                     {"source_account": str(checking["id"]), "target_account_number": accounts["customer2"]["number"],
                      **transfer}, transfer=True),
        SqlmapTarget("customer", "ticket-create", "/support/create", ("subject", "description"),
                     {"subject": "Scan ticket", "description": "Opened by the scan."}),
        # the second customer: forms that must not touch the first one's sign-in
        SqlmapTarget("customer2", "change-password", "/auth/change-password",
                     ("current_password", "new_password", "confirm_password"),
                     {"current_password": "not the password at all", "new_password": "another long passphrase 42",
                      "confirm_password": "another long passphrase 42"}),
        SqlmapTarget("customer2", "mfa-setup", "/auth/mfa/setup", ("code",), {"code": "123456"}),
        # support
        # The resolved tickets: the open ones change while the customer's ticket-create run files more.
        SqlmapTarget("support", "tickets", "/support/tickets?status=resolved&page=1", ("status", "page")),
        SqlmapTarget("support", "ticket-update", f"/support/tickets/{ticket_id}", ("status", "note"),
                     {"status": "in_progress", "note": "Looking into it."}),
        # auditor
        SqlmapTarget("auditor", "audit-logs",
                     f"/audit/logs?action=LOGIN_SUCCESS&user_id={customer_id}&{dates}&before=1000000",
                     ("action", "user_id", "date_from", "date_to", "before")),
        SqlmapTarget("auditor", "audit-transactions",
                     f"/audit/transactions?{dates}&{amounts}&account_number={checking['number']}&before=1000000",
                     ("date_from", "date_to", "type", "min_amount", "max_amount", "account_number", "before")),
        # admin
        SqlmapTarget("admin", "users", "/banking/admin/users?page=1", ("page",)),
        SqlmapTarget("admin", "accounts", f"/banking/admin/accounts?account_number={checking['number']}&page=1",
                     ("account_number", "page")),
        SqlmapTarget("admin", "user-edit", f"/banking/admin/users/{users['edit_target']['id']}/edit",
                     ("full_name", "email", "phone", "role", "is_active"),
                     {"full_name": "Scan Edit Target", "email": users["edit_target"]["email"],
                      "phone": "+44 20 7946 0003", "role": "customer", "is_active": "y"}),
        SqlmapTarget("admin", "open-account", "/banking/open-account", ("type", "opening_balance", "owner_user_id"),
                     {"type": "checking", "opening_balance": "0.00", "owner_user_id": str(users["customer2"]["id"])}),
        SqlmapTarget("admin", "transfer-internal", f"/banking/transfer/internal?owner_user_id={customer_id}",
                     ("owner_user_id", "source_account", "target_account", "amount", "description"),
                     {"source_account": str(savings["id"]), "target_account": str(checking["id"]),
                      "amount": "0.01", "description": "scan: admin correction"}, transfer=True),
        SqlmapTarget("admin", "transfer-external", f"/banking/transfer/external?owner_user_id={customer_id}",
                     ("owner_user_id", "source_account", "target_account_number", "amount", "description"),
                     {"source_account": str(savings["id"]), "target_account_number": accounts["customer2"]["number"],
                      "amount": "0.01", "description": "scan: admin correction"}, transfer=True),
        # anonymous: registration with an email that is taken (every probe answers the same
        # way whatever its order), then the login form with an email that belongs to nobody
        SqlmapTarget("anonymous", "register", "/auth/register",
                     ("full_name", "email", "phone", "password", "confirm_password"),
                     {"full_name": "Scan Registrant", "email": users["customer"]["email"], "phone": "+44 20 7946 0099",
                      "password": "a long enough scan passphrase 7", "confirm_password": "a long enough scan passphrase 7"}),
        SqlmapTarget("anonymous", "login", "/auth/login", ("email", "password"),
                     {"email": NOBODY_EMAIL, "password": "not the password at all"}),
    ]


def signed_in(server: Server, role: str, data: dict, password: str, user_agent: str) -> Browser:
    browser = Browser(server, user_agent)
    if role != "anonymous":
        browser.login(data["users"][role]["email"], password)
    return browser


def form_token(browser: Browser, path: str) -> str | None:
    page = browser.get(path)
    if page.status != 200:
        raise RuntimeError(f"GET {path} as {browser.user_agent} answered {page.status}")
    return input_values(page.body).get("csrf_token")


def in_parallel(jobs: list[tuple[str, Callable[[], ToolRun]]]) -> list[ToolRun]:
    """Run the jobs SCAN_JOBS at a time (each drives one scanner process, which sends one request
    at a time); return their runs in the jobs' order. A job that raises becomes a run with an error."""
    def guarded(label: str, job: Callable[[], ToolRun]) -> ToolRun:
        print(f"== start {label}", flush=True)
        try:
            run = job()
        except Exception as exc:  # a scan that could not run is reported, not hidden
            tool, role, name = (label.split(" ", 2) + ["", ""])[:3]
            run = ToolRun(tool, role, name, label, f"bank-scan/{tool}/{role}/{name}", errors=[f"{type(exc).__name__}: {exc}"])
        print(f"   done {label}: {run.seconds:.0f} s, {len(run.findings)} finding(s), {len(run.errors)} error(s)",
              flush=True)
        return run

    with ThreadPoolExecutor(max_workers=PARALLEL_JOBS) as pool:
        futures = [pool.submit(guarded, label, job) for label, job in jobs]
        return [future.result() for future in futures]


def run_sqlmap_targets(server: Server, data: dict, password: str, out_dir: Path, only: str | None) -> list[ToolRun]:
    def job(target: SqlmapTarget) -> ToolRun:
        browser = signed_in(server, target.role, data, password, f"bank-scan/login/{target.role}/{target.name}")
        token = form_token(browser, target.path) if target.fields is not None else None
        return tools.run_sqlmap(target, server, browser.cookie_header or None, token, out_dir)

    return in_parallel([(f"sqlmap {target.role} {target.name}", partial(job, target)) for target in sqlmap_targets(data)
                        if not only or only in f"{target.role}-{target.name}"])


ID_QUERIES = {"user": 'SELECT id FROM "user"', "account": "SELECT id FROM account",
              "support_ticket": "SELECT id FROM support_ticket"}


def database_ids(database: Path, table: str) -> list[int]:
    """The ids of `table` (a key of ID_QUERIES) in the scanned SQLite database, read-only."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return [row[0] for row in connection.execute(ID_QUERIES[table])]


def object_exclusions(role: str, data: dict, database: Path) -> tuple[str, ...]:
    """One object per object page: the seeded ticket, and for the admin the edit-target user and
    account. The other tickets, users and accounts (many, once the scanners have opened tickets)
    render the same templates through the same code, and the admin's run must not edit the scan's
    own users (their role, active state or email) or freeze their accounts."""
    patterns: list[str] = []
    if role in ("support", "admin"):
        patterns += [f"/support/tickets/{ticket}" for ticket in database_ids(database, "support_ticket")
                     if ticket != data["ticket_id"]]
    if role == "admin":
        keep_user, keep_account = data["users"]["edit_target"]["id"], data["accounts"]["edit_target"]["id"]
        patterns += [f"/banking/admin/users/{user}/edit" for user in database_ids(database, "user") if user != keep_user]
        patterns += [f"/banking/admin/accounts/{account}/{action}" for account in database_ids(database, "account")
                     if account != keep_account for action in ("freeze", "unfreeze")]
    return tuple(patterns)


# The order the roles' wapiti runs start in: the two longest first, so the pool ends together,
# and support with them: its crawl then lists the tickets before the customer's run has filed
# hundreds more, each of which its modules would otherwise attack in turn (one support run took
# 882 s instead of 40 that way).
WAPITI_ORDER = ("admin", "customer", "support", "auditor", "anonymous")


def run_wapiti_roles(server: Server, data: dict, password: str, out_dir: Path, database: Path,
                     only: str | None) -> list[ToolRun]:
    def job(role: str) -> ToolRun:
        browser = signed_in(server, role, data, password, f"bank-scan/login/{role}/wapiti")
        exclude = WAPITI_EXCLUDE + WAPITI_ROLE_EXCLUDE[role] + object_exclusions(role, data, database)
        return tools.run_wapiti(role, server, browser.cookie_header or None, out_dir, start=wapiti_start(role, data),
                                exclude=exclude, remove=WAPITI_REMOVE)

    runs = in_parallel([(f"wapiti {role} site", partial(job, role)) for role in WAPITI_ORDER
                        if not only or only in role])
    return sorted(runs, key=lambda run: WAPITI_ROLES.index(run.role))


def stored_payload_sweep(server: Server, data: dict, password: str, out_dir: Path, wapiti_runs: list[ToolRun],
                         only: str | None) -> list[ToolRun]:
    """After every attack: open, as each role, the pages its wapiti run crawled plus the pages
    that show what other roles wrote, and look for markup no template contains. wapiti's
    permanentxss only follows its own payloads within one run; this catches a payload one role
    stored (a ticket, a name, an audit detail) rendering on another role's page."""
    ticket, edit_target = data["ticket_id"], data["users"]["edit_target"]["id"]
    pages = {
        "anonymous": ["/auth/login", "/auth/register"],
        "customer": ["/banking/dashboard", "/banking/transactions", "/support/my-tickets", "/auth/profile",
                     "/banking/transfer/internal", "/banking/transfer/external"],
        "support": ["/banking/dashboard", "/support/tickets", f"/support/tickets/{ticket}", "/auth/profile"],
        "auditor": ["/banking/dashboard", "/audit/logs", "/audit/transactions", "/audit/logs/verify"],
        "admin": ["/banking/dashboard", "/banking/admin/users", "/banking/admin/accounts", "/support/tickets",
                  f"/support/tickets/{ticket}", "/audit/logs", "/audit/transactions",
                  f"/banking/admin/users/{edit_target}/edit",
                  f"/banking/transfer/internal?owner_user_id={data['users']['transfer_owner']['id']}"],
    }
    for run in wapiti_runs:
        report = out_dir / "wapiti" / f"{run.role}-{run.name}" / "report.json"
        if run.name == "site" and run.role in pages and report.exists():
            for item in json.loads(report.read_text()).get("infos", {}).get("crawled_pages", []):
                request = item.get("request", {})
                if request.get("method") == "GET" and request.get("status_code") == 200:
                    url = request["url"]
                    pages[run.role].append(url[len(server.base_url):] if url.startswith(server.base_url) else url)
    runs = []
    for role, paths in pages.items():
        if only and only not in role:
            continue
        user_agent = f"bank-scan/sweep/{role}/stored-markup"
        run = ToolRun("sweep", role, "stored-markup", "GET pages that show stored data; inline script or event "
                      "handlers fail", user_agent)
        started = time.monotonic()
        try:
            browser = signed_in(server, role, data, password, user_agent)
        except RuntimeError as exc:
            run.errors.append(str(exc))
            runs.append(run)
            continue
        seen = []
        for path in dict.fromkeys(paths):
            if not path.startswith("/") or path.endswith((".js", ".css")):
                continue
            page = browser.get(path)
            seen.append(f"{path} ({page.status})")
            for match in ACTIVE_MARKUP.finditer(page.body):
                start = max(match.start() - 80, 0)
                run.findings.append(Finding("XSS (stored)",
                                            f"GET {path} as {role}: {page.body[start:match.end() + 80]!r}"))
        run.informational.append(Finding("pages checked", ", ".join(seen)))
        run.seconds = time.monotonic() - started
        runs.append(run)
    return runs


def check_session_cookie(server: Server, production: bool) -> ToolRun:
    """The session cookie's attributes as the server sets them with the login page."""
    label = "production-https" if production else "development-http"
    run = ToolRun("cookie-check", "anonymous", label, f"Set-Cookie of GET /auth/login ({label})",
                  f"bank-scan/cookie-check/{label}")
    headers = Browser(server, run.user_agent).set_cookie_headers("/auth/login")
    wanted = "__Host-session" if production else "session"
    cookie = next((header for header in headers if header.startswith(wanted + "=")), None)
    if cookie is None:
        run.errors.append(f"no {wanted} cookie set by /auth/login (got {headers})")
        return run
    attributes = {part.strip().split("=", 1)[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    run.informational.append(Finding("Set-Cookie", f"{wanted}=…; " + "; ".join(attributes.values())))
    if "httponly" not in attributes:
        run.findings.append(Finding("cookie flags", f"{wanted} without HttpOnly"))
    if attributes.get("samesite", "").lower() not in ("samesite=lax", "samesite=strict"):
        run.findings.append(Finding("cookie flags", f"{wanted} without SameSite=Lax or Strict"))
    if production:
        if "secure" not in attributes:
            run.findings.append(Finding("cookie flags", f"{wanted} without Secure"))
        if "domain" in attributes or attributes.get("path", "").lower() != "path=/":
            run.findings.append(Finding("cookie flags", f"{wanted} breaks the __Host- rules (a Domain, or Path not /)"))
    elif "secure" not in attributes:
        run.informational.append(Finding("cookie flags (plain-HTTP development server)",
                                         "no Secure flag, by design over http://; judged on the production pass"))
    return run


def production_pass(database_url: str, folder: Path, out_dir: Path, with_wapiti: bool) -> tuple[list[ToolRun], Server]:
    """The production settings over HTTPS: the session cookie's flags, and wapiti's passive
    modules (cookieflags, http_headers, csp) crawling anonymously."""
    certificate = self_signed_certificate(folder)
    env = server_environment(database_url, "production")
    server = start_server(env, out_dir, "server-production", workers=1, certificate=certificate)
    try:
        print("== production settings over HTTPS: cookie check" + (" and wapiti" if with_wapiti else ""), flush=True)
        runs = [check_session_cookie(server, production=True)]
        if with_wapiti:
            runs.append(tools.run_wapiti("anonymous", server, None, out_dir, modules=tools.WAPITI_PASSIVE_MODULES,
                                         exclude=WAPITI_EXCLUDE, name="production-https", secure_flag_expected=True,
                                         scan_seconds=60, attack_seconds=60))
    finally:
        server.stop()
    for run in runs:
        run.count_requests(server.access_lines())
    return runs, server


def server_log_problems(server: Server, label: str, runs: list[ToolRun]) -> list[str]:
    """5xx answers not sent to a tool run (those are listed with the run), and tracebacks."""
    problems = [f"{label}: {line.status} {line.time} {line.request_line} ({line.user_agent})"
                for line in server.access_lines() if line.status >= 500
                and not any(run.sent(line) for run in runs)]
    stderr = server.stderr()
    if "Traceback" in stderr:
        problems.append(f"{label}: a traceback in {server.stderr_path.name}")
    return problems


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(path: Path, out_dir: Path, runs: list[ToolRun], problems: list[str], started: datetime.datetime,
                 seconds: float, only: str | None, notes: list[str]) -> None:
    failed = any(run.failed for run in runs) or bool(problems)
    lines = [
        f"# Outside scan {started:%Y-%m-%d %H:%M:%S} UTC: {'FAILED' if failed else 'passed'}",
        "",
        f"Duration {seconds / 60:.1f} min. Raw outputs: `{out_dir.relative_to(REPO)}/`. "
        f"sqlmap {subprocess.run([str(tools.SQLMAP), '--version'], capture_output=True, text=True).stdout.strip()}"
        f" (level {tools.SQLMAP_LEVEL}, risk {tools.SQLMAP_RISK}, --dbms=SQLite); "
        f"wapiti3 from .venv-wapiti.",
        "",
    ]
    if only:
        lines += [f"**Partial run** (`--only {only}`): not a verdict on the whole site.", ""]
    lines += ["## Summary", "",
              "| tool | role | target | requests | statuses | failing findings | informational | 5xx | errors | seconds |",
              "|---|---|---|---:|---|---|---:|---:|---:|---:|"]
    for run in runs:
        by_category: dict[str, int] = {}
        for finding in run.findings:
            by_category[finding.category] = by_category.get(finding.category, 0) + 1
        findings = ", ".join(f"{name} {count}" for name, count in sorted(by_category.items())) or "none"
        statuses = " ".join(f"{code}×{count}" for code, count in sorted(run.statuses.items()))
        lines.append(f"| {run.tool} | {run.role} | {_cell(run.name)} | {run.requests} | {statuses} | {findings} | "
                     f"{len(run.informational)} | {len(run.server_errors)} | {len(run.errors)} | {run.seconds:.0f} |")
    lines += ["", "## Failing", ""]
    failing = [(run, finding) for run in runs for finding in run.findings]
    if not failing and not problems and not any(run.errors or run.server_errors for run in runs):
        lines.append("Nothing.")
    for run, finding in failing:
        lines.append(f"- {run.tool} {run.role}/{run.name}: **{finding.category}**: {_cell(finding.detail)}")
    for run in runs:
        for line in run.server_errors:
            lines.append(f"- {run.tool} {run.role}/{run.name}: **{line.status}** {line.time} "
                         f"`{_cell(line.request_line)}`")
        for error in run.errors:
            lines.append(f"- {run.tool} {run.role}/{run.name}: **did not complete**: {_cell(error)}")
    for problem in problems:
        lines.append(f"- server: **{_cell(problem)}**")
    lines += ["", "## Informational", ""]
    for run in runs:
        if run.informational:
            lines.append(f"### {run.tool} {run.role}/{run.name} ({run.what})")
            lines.append("")
            for finding in run.informational[:200]:
                lines.append(f"- {finding.category}: {_cell(finding.detail)}")
            if len(run.informational) > 200:
                lines.append(f"- … {len(run.informational) - 200} more in the raw output")
            lines.append("")
    lines += ["## How this scan was run", ""] + [f"- {note}" for note in notes] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")


NOTES = [
    f"Throw-away SQLite database, migrated and seeded by scan/seed.py; gunicorn with gunicorn.conf.py, "
    f"{DEV_WORKERS} workers, APP_ENV=development, CSRF on; {PARALLEL_JOBS} scanner processes at a time.",
    "RATELIMIT_ENABLED=false and LOGIN_MAX_FAILURES_PER_EMAIL/_PER_IP=1000000 on the scanned servers: request "
    "limits and the login throttle would otherwise answer 429 to the scanners (and lock the scan users out); "
    "both are covered by the test suite.",
    "sqlmap: one run per page, a fresh session per run, --csrf-token/--csrf-url on forms; the transfer forms get "
    "a fresh csrf_token and idempotency_key before every request through --eval (scan/sqlmap_fresh_form.py). "
    "csrf_token and idempotency_key are not injection points under test. The login form is probed with an email "
    "that belongs to nobody.",
    f"wapiti3: crawl from / with each role's session cookie, modules {', '.join(tools.WAPITI_ATTACK_MODULES)}; "
    f"not crawled: {', '.join(WAPITI_EXCLUDE)}, forms another role's run attacks, and all but one ticket, user "
    "and account on the object pages (the admin edits and freezes only the edit-target customer); pager "
    f"parameters ({', '.join(WAPITI_REMOVE)}) dropped from crawled links, each list started once with them.",
    "Stored-payload sweep after all attacks: each role's pages that show stored data are fetched; any inline "
    "script or event-handler attribute fails (no template has one).",
    "Cookie flags: the development server sends its session cookie without Secure on purpose (plain HTTP on "
    "localhost), listed here; the production settings are checked over HTTPS (self-signed certificate) from the "
    "Set-Cookie header and by wapiti's cookieflags, http_headers and csp modules, where a missing Secure or "
    "HttpOnly flag fails.",
    "Failing: sqlmap injection points and XSS/file-inclusion heuristics; wapiti injection, XSS, CSRF, open "
    "redirect, file disclosure, command execution and cookie-flag findings; stored markup; any 5xx or traceback; "
    "verify-ledger or verify-audit failing afterwards; a tool that did not finish.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only the sqlmap targets / wapiti roles whose name contains this")
    parser.add_argument("--skip-sqlmap", action="store_true")
    parser.add_argument("--skip-wapiti", action="store_true")
    args = parser.parse_args(argv)
    for tool in (tools.SQLMAP, tools.WAPITI):
        if not tool.exists():
            print(f"{tool} is missing: run `make scan` (it installs .venv-scan and .venv-wapiti)", file=sys.stderr)
            return 2

    started = datetime.datetime.now(datetime.timezone.utc)
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out_dir = REPORTS / f"scan-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = REPORTS / f"scan-{stamp}.md"
    clock = time.monotonic()
    runs: list[ToolRun] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bank-scan-") as temp:
        folder = Path(temp)
        database_url = f"sqlite:///{folder / 'scan.db'}"
        env = server_environment(database_url)
        flask(env, "db", "upgrade")
        password = f"scan {secrets.token_hex(12)} otter"
        data = seed(env, password)
        production_runs, production = production_pass(database_url, folder, out_dir, not args.skip_wapiti)
        problems += server_log_problems(production, "production server", production_runs)
        server = start_server(env, out_dir, "server", workers=DEV_WORKERS)
        dev_runs: list[ToolRun] = []
        try:
            dev_runs.append(check_session_cookie(server, production=False))
            if not args.skip_sqlmap:
                dev_runs += run_sqlmap_targets(server, data, password, out_dir, args.only)
            if not args.skip_wapiti:
                wapiti_runs = run_wapiti_roles(server, data, password, out_dir, folder / "scan.db", args.only)
                dev_runs += wapiti_runs
                print("== stored-payload sweep", flush=True)
                dev_runs += stored_payload_sweep(server, data, password, out_dir, wapiti_runs, args.only)
        finally:
            server.stop()
        lines = server.access_lines()
        for run in dev_runs:
            run.count_requests(lines)
        runs = production_runs + dev_runs
        problems += server_log_problems(server, "server", dev_runs)
        # The scan itself must not have broken the books.
        for command in ("verify-ledger", "verify-audit"):
            try:
                flask(env, command)
            except RuntimeError as exc:
                problems.append(str(exc).strip().splitlines()[-1])
    seconds = time.monotonic() - clock
    write_report(report_path, out_dir, runs, problems, started, seconds, args.only, NOTES)
    failed = any(run.failed for run in runs) or bool(problems)
    print(f"\nScan {'FAILED' if failed else 'passed'} in {seconds / 60:.1f} min: {report_path.relative_to(REPO)}")
    for run in runs:
        for finding in run.findings:
            print(f"  FINDING {run.tool} {run.role}/{run.name}: {finding.category}: {finding.detail}")
        for error in run.errors:
            print(f"  ERROR {run.tool} {run.role}/{run.name}: {error}")
        for line in run.server_errors:
            print(f"  5xx {run.tool} {run.role}/{run.name}: {line.status} {line.request_line}")
    for problem in problems:
        print(f"  SERVER {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
