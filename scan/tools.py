"""Running sqlmap and wapiti3 against the scan's server and reading what they report.

Used by scan/run_scan.py. Each run gets its own User-Agent (`bank-scan/<tool>/<role>/<name>`),
so the server's access log tells how many requests it sent and which of them, if any, got a 5xx.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from .server import REPO, AccessLine, Server

SQLMAP = REPO / ".venv-scan" / "bin" / "sqlmap"
WAPITI = REPO / ".venv-wapiti" / "bin" / "wapiti"

# sqlmap: --dbms=SQLite (the scan's database) limits the payloads to that back end; risk 1 never
# sends OR-based payloads (they could update every row behind an UPDATE statement) or heavy
# time-based ones. --text-only compares pages by their text: every page carries a CSRF token
# signed with the current second (and transfer forms a fresh idempotency key), which would
# otherwise make two answers to the same request differ. Redirects are not followed and
# Set-Cookie is ignored, so every request is judged on its own answer, in the one session.
SQLMAP_LEVEL = os.environ.get("SCAN_SQLMAP_LEVEL", "1")
SQLMAP_RISK = os.environ.get("SCAN_SQLMAP_RISK", "1")
SQLMAP_SECONDS = 600  # a hung sqlmap run is stopped and reported as an error

# The hook that gives every transfer request a fresh csrf_token and idempotency_key
# (scan/sqlmap_fresh_form.py explains why). sqlmap turns ';' into new lines.
FRESH_FORM_EVAL = ("import os,sys;sys.path.insert(0,os.environ['BANK_SCAN_DIR']);import sqlmap_fresh_form as _ff;"
                   "csrf_token,idempotency_key=_ff.fresh(cookie)")

# wapiti3 modules that need nothing outside this machine. Left out: ssrf, xxe and log4shell
# (they need wapiti's public endpoint to see the call back), nikto, htp and wapp (download
# their databases), ssl and takeover (TLS certificate look-ups and DNS on the internet; the
# site is plain HTTP), brute_login_form (password guessing: the throttle's job, tested by the
# suite), buster and backup (path brute force with big word lists: slow, and Flask serves no
# files but the static ones), upload (no file inputs), cms, wp_enum, network_device,
# shellshock, spring4shell (fingerprints of software the bank does not run), https_redirect
# (the development server is plain HTTP by design), ldap (the bank has no LDAP, and the
# module compares MD5s of whole pages, which differ on every answer here because each page
# carries a CSRF token signed with the current second: it reported false injections), and
# timesql (its payloads are MySQL sleep(), MSSQL WAITFOR and the like; SQLite, the scanned
# database, has no sleep, so it could never fire; sqlmap's SQLite tests cover that ground).
WAPITI_ATTACK_MODULES = ("exec", "file", "sql", "crlf", "xss", "permanentxss", "redirect", "csrf", "cookieflags",
                         "http_headers", "csp", "methods")
# The production-settings pass over HTTPS looks at what the responses say, attacks nothing.
WAPITI_PASSIVE_MODULES = ("cookieflags", "http_headers", "csp")
# Time limits: the crawl (--max-scan-time) and each attack module (--max-attack-time). They are
# safety nets, well above what a run takes; a module that reaches its limit is listed in the
# report as not having attacked everything.
WAPITI_SCAN_SECONDS = float(os.environ.get("SCAN_WAPITI_SECONDS", "60"))
WAPITI_ATTACK_SECONDS = float(os.environ.get("SCAN_WAPITI_ATTACK_SECONDS", "240"))
# An address where nothing listens: the payloads that name wapiti's external endpoint point
# here, so nothing the scan sends can make the app (or wapiti) reach outside this machine.
WAPITI_ENDPOINT = "http://127.0.0.1:9/"

# wapiti categories that fail the scan (vulnerabilities). Everything else it reports is listed.
WAPITI_FAILING = {
    "SQL Injection": "injection", "Blind SQL Injection": "injection", "LDAP Injection": "injection",
    "XPATH Injection": "injection", "CRLF Injection": "injection", "HTML Injection": "injection",
    "Stored HTML Injection": "injection", "Server Side Request Forgery": "injection",
    "XML External Entity": "injection",
    "Reflected Cross Site Scripting": "XSS", "Stored Cross Site Scripting": "XSS",
    "Cross Site Request Forgery": "CSRF",
    "Open Redirect": "open redirect",
    "Path Traversal": "file disclosure", "Backup file": "file disclosure",
    "Command execution": "command execution",
    "Secure Flag cookie": "cookie flags", "HttpOnly Flag cookie": "cookie flags",
    "Internal Server Error": "500",
}


@dataclass
class Finding:
    category: str
    detail: str


@dataclass
class ToolRun:
    """One run of one tool as one role, and what came of it."""

    tool: str
    role: str
    name: str
    what: str
    user_agent: str
    seconds: float = 0.0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    informational: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    server_errors: list[AccessLine] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.findings or self.errors or self.server_errors)

    def sent(self, line: AccessLine) -> bool:
        """True when this run sent the request (its User-Agent, or that plus a note in brackets)."""
        return line.user_agent == self.user_agent or line.user_agent.startswith(self.user_agent + " (")

    def count_requests(self, lines: list[AccessLine]) -> None:
        """Attribute the server's access lines sent with this run's User-Agent."""
        mine = [line for line in lines if self.sent(line)]
        self.requests = len(mine)
        self.statuses = {}
        for line in mine:
            self.statuses[line.status] = self.statuses.get(line.status, 0) + 1
        self.server_errors = [line for line in mine if line.status >= 500]


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# sqlmap
# ---------------------------------------------------------------------------------------------


@dataclass
class SqlmapTarget:
    """One page or form: `params` are tested, `fields` are the POST body (None: a GET)."""

    role: str
    name: str
    path: str
    params: tuple[str, ...]
    fields: dict[str, str] | None = None
    transfer: bool = False

    @property
    def what(self) -> str:
        method = "GET" if self.fields is None else "POST"
        return f"{method} {urllib.parse.urlsplit(self.path).path} [{', '.join(self.params)}]"


_VULNERABLE = re.compile(r"parameter '([^']+)' is vulnerable|identified the following injection point")
_CANDIDATE = re.compile(r"parameter '([^']+)' appears to be '([^']+)' injectable")
_HEURISTIC_VULN = re.compile(r"heuristic \((XSS|FI)\) test shows that (.+?) might be vulnerable to (.+)")
_HEURISTIC_SQL = re.compile(r"heuristic \(basic\) test shows that (.+?) might be injectable")
_STATIC = re.compile(r"(?:GET|POST|URI) parameter '([^']+)' does not appear to be dynamic")
_SKIPPED = re.compile(r"skipping (?:static )?(?:GET|POST|URI) parameter '([^']+)'")
_FALSE_POSITIVE = re.compile(r"false positive or unexploitable injection point detected")
_CLEAN = re.compile(r"all tested parameters do not appear to be injectable")
_CRITICAL = re.compile(r"\[CRITICAL\] (.*)")


def run_sqlmap(target: SqlmapTarget, server: Server, cookie: str | None, csrf_token: str | None, out_dir: Path) -> ToolRun:
    """Run sqlmap on `target` with the session `cookie` (None: anonymous) and read its log."""
    user_agent = f"bank-scan/sqlmap/{target.role}/{target.name}"
    run = ToolRun("sqlmap", target.role, target.name, target.what, user_agent)
    folder = out_dir / "sqlmap" / f"{target.role}-{target.name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    url = server.base_url + target.path
    command = [
        str(SQLMAP), "-u", url, "-p", ",".join(target.params), "--batch", "--dbms=SQLite",
        f"--level={SQLMAP_LEVEL}", f"--risk={SQLMAP_RISK}", "--output-dir", str(folder), "--flush-session",
        "--user-agent", user_agent, "--disable-coloring", "-t", str(folder / "traffic.txt"), "--timeout=30",
        "--retries=1", "--ignore-redirects", "--drop-set-cookie", "--text-only",
    ]
    env = dict(os.environ, TERM="dumb")
    if cookie:
        command += ["--cookie", cookie]
    if target.fields is not None:
        fields = dict(target.fields)
        form_url = url
        if target.transfer:
            fields.update(csrf_token="-", idempotency_key="-")
            command += ["--eval", FRESH_FORM_EVAL]
            env.update(SQLMAP_UNSAFE_EVAL="1", BANK_SCAN_DIR=str(Path(__file__).resolve().parent),
                       BANK_SCAN_FORM_URL=form_url, BANK_SCAN_USER_AGENT=user_agent)
        else:
            fields["csrf_token"] = csrf_token or "-"
            command += ["--csrf-token=csrf_token", f"--csrf-url={form_url}"]
        command += ["--data", urllib.parse.urlencode(fields)]
    log_path = folder / "sqlmap.log"
    started = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            finished = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=SQLMAP_SECONDS, check=False)
        returncode = finished.returncode
    except subprocess.TimeoutExpired:
        returncode = None
        run.errors.append(f"sqlmap did not finish in {SQLMAP_SECONDS} s")
    run.seconds = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    _read_sqlmap_log(run, text, target, returncode)
    # Injection points sqlmap stores per host (empty unless something was found).
    for stored in folder.glob("*/log"):
        if stored.read_text(errors="replace").strip():
            run.findings.append(Finding("SQL injection", f"sqlmap stored injection points in {_relative(stored)}"))
    traffic = folder / "traffic.txt"
    if traffic.exists():
        with open(traffic, "rb") as source, gzip.open(str(traffic) + ".gz", "wb") as target_file:
            shutil.copyfileobj(source, target_file)
        traffic.unlink()
    run.outputs = [_relative(folder)]
    return run


def _read_sqlmap_log(run: ToolRun, text: str, target: SqlmapTarget, returncode: int | None) -> None:
    lines = text.splitlines()
    for line in lines:
        if _VULNERABLE.search(line):
            run.findings.append(Finding("SQL injection", line.strip()))
        elif match := _HEURISTIC_VULN.search(line):
            run.findings.append(Finding("XSS" if match.group(1) == "XSS" else "file inclusion", line.strip()))
        elif match := _CANDIDATE.search(line):
            run.informational.append(Finding("injection candidate", line.strip()))
        elif _FALSE_POSITIVE.search(line):
            run.informational.append(Finding("candidate rejected", line.strip()))
        elif match := _HEURISTIC_SQL.search(line):
            run.informational.append(Finding("heuristic", line.strip()))
        elif match := (_STATIC.search(line) or _SKIPPED.search(line)):
            run.informational.append(Finding("not dynamic", line.strip()))
    # A candidate that sqlmap did not reject is a finding, even if it stopped before confirming it.
    candidates = sum(1 for item in run.informational if item.category == "injection candidate")
    rejected = sum(1 for item in run.informational if item.category == "candidate rejected")
    if candidates > rejected and not any(f.category == "SQL injection" for f in run.findings):
        run.findings.append(Finding("SQL injection", f"{candidates - rejected} injection candidate(s) not rejected"))
    criticals = [match.group(1) for line in lines if (match := _CRITICAL.search(line))]
    unexpected = [message for message in criticals if not _CLEAN.search(message)]
    concluded = any(_CLEAN.search(message) for message in criticals) or bool(run.findings)
    if returncode not in (0, None):
        run.errors.append(f"sqlmap exited with status {returncode}")
    run.errors.extend(f"sqlmap: {message}" for message in unexpected)
    if not concluded and not run.errors:
        run.errors.append("sqlmap ended without a conclusion (see its log)")


# ---------------------------------------------------------------------------------------------
# wapiti3
# ---------------------------------------------------------------------------------------------


def run_wapiti(role: str, server: Server, cookie: str | None, out_dir: Path, *, modules=WAPITI_ATTACK_MODULES,
               exclude: tuple[str, ...] = (), start: tuple[str, ...] = (), remove: tuple[str, ...] = (),
               name: str = "site",
               secure_flag_expected: bool = False, scan_seconds: float = WAPITI_SCAN_SECONDS,
               attack_seconds: float = WAPITI_ATTACK_SECONDS) -> ToolRun:
    """Crawl and attack the site as `role` (cookie None: anonymous) and read wapiti's JSON report.

    secure_flag_expected=False (the plain-HTTP development server): a missing Secure flag is
    listed, not failed, because that server deliberately sends the cookie without it; the
    HTTPS pass with the production settings (True) fails on it.
    """
    user_agent = f"bank-scan/wapiti/{role}/{name}"
    run = ToolRun("wapiti", role, name, f"{server.base_url}/ modules {','.join(modules)}", user_agent)
    folder = out_dir / "wapiti" / f"{role}-{name}"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "session").mkdir(parents=True)
    report_path = folder / "report.json"
    command = [
        str(WAPITI), "-u", server.base_url + "/", "--scope", "folder", "-m", ",".join(modules),
        "--flush-session", "--store-session", str(folder / "session"), "--store-config", str(folder / "session"),
        "--max-scan-time", str(scan_seconds), "--max-attack-time", str(attack_seconds), "--tasks", "4",
        "-f", "json", "-o", str(report_path), "-dr", "1", "--no-bugreport", "-A", user_agent,
        "--endpoint", WAPITI_ENDPOINT, "--dns-endpoint", "127.0.0.1", "-v", "1", "--verify-ssl", "0", "--timeout", "30",
    ]
    for path in start:
        command += ["-s", server.base_url + path]
    for pattern in exclude:
        command += ["-x", server.base_url + pattern]
    for parameter in remove:
        command += ["-r", parameter]
    if cookie:
        command += ["-C", cookie]
    log_path = folder / "wapiti.log"
    started = time.monotonic()
    try:
        with open(log_path, "wb") as log:
            finished = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, timeout=scan_seconds + attack_seconds * len(modules) + 120,
                                      check=False)
        if finished.returncode != 0:
            run.errors.append(f"wapiti exited with status {finished.returncode}")
    except subprocess.TimeoutExpired:
        run.errors.append("wapiti did not stop by itself")
    run.seconds = time.monotonic() - started
    shutil.rmtree(folder / "session", ignore_errors=True)
    run.outputs = [_relative(folder)]
    if not report_path.exists():
        run.errors.append("wapiti wrote no report")
        return run
    report = json.loads(report_path.read_text(errors="replace"))
    _read_wapiti_report(run, report, secure_flag_expected)
    for line in log_path.read_text(errors="replace").splitlines():
        if _WAPITI_ERROR.search(line):
            run.errors.append(f"wapiti: {line.strip()}")
        elif _WAPITI_LIMIT.search(line):
            run.informational.append(Finding("time limit", line.strip()))
    return run


_WAPITI_ERROR = re.compile(r"Traceback|\[!\] Unable to|seems broken|skipped due to network issues|Missing dependencies")
_WAPITI_LIMIT = re.compile(r"Max (?:attack|scan) time was reached")


def _wapiti_item(item: dict) -> str:
    where = f"{item.get('method', '')} {item.get('path', '')}".strip()
    parameter = f" parameter {item['parameter']}" if item.get("parameter") else ""
    return f"{where}{parameter}: {item.get('info', '')}".strip()


def _read_wapiti_report(run: ToolRun, report: dict, secure_flag_expected: bool) -> None:
    infos = report.get("infos") or {}
    if infos.get("crawled_pages_nbr") is not None:
        run.informational.append(Finding("pages crawled", str(infos["crawled_pages_nbr"])))
    for section in ("vulnerabilities", "anomalies"):
        for category, items in (report.get(section) or {}).items():
            for item in items:
                kind = WAPITI_FAILING.get(category)
                detail = f"{category}: {_wapiti_item(item)}"
                if category == "Secure Flag cookie" and not secure_flag_expected:
                    run.informational.append(Finding("cookie flags (plain-HTTP development server)", detail))
                elif kind:
                    run.findings.append(Finding(kind, detail))
                else:
                    run.informational.append(Finding(category, detail))
    for category, items in (report.get("additionals") or {}).items():
        for item in items:
            run.informational.append(Finding(category, f"{category}: {_wapiti_item(item)}"))
