"""The scan's server and its own HTTP client: gunicorn on a throw-away database, the access log
read back request by request, a self-signed certificate for the production-settings pass, and
a small cookie-keeping client that signs in the way a browser does.

Used by scan/run_scan.py; standard library plus the app's own requirements (cryptography).
"""

from __future__ import annotations

import datetime
import html
import http.client
import http.cookies
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# SCRUBBED_PREFIXES: settings of the app, gunicorn and Flask that come from the scan, never from
# the caller's shell; the end-to-end tests' own list, so the two can't drift apart.
from tests.e2e.multiprocess_support import SCRUBBED_PREFIXES, stop_process_group  # noqa: E402

STARTUP_SECONDS = 60
REQUEST_SECONDS = 60

# The committed gunicorn.conf.py logs the path only (no query string, no user agent). The scan's
# server is throw-away and its log holds scan data only, so it logs the whole request line and
# the user agent, tab-separated: each tool run sends its own user agent, which attributes every
# request (and every 500) to the run that sent it.
ACCESS_LOG_FORMAT = "\t".join(("%(t)s", "%(s)s", "%(M)s", "%(a)s", "%(r)s"))


def scrubbed_environment(**settings: str) -> dict[str, str]:
    """The caller's environment minus every app setting, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(SCRUBBED_PREFIXES)}
    env.update(settings)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class AccessLine:
    time: str
    status: int
    milliseconds: int
    user_agent: str
    request_line: str


def parse_access_log(text: str) -> list[AccessLine]:
    """The requests of an access log written with ACCESS_LOG_FORMAT (other lines are skipped)."""
    lines = []
    for raw in text.splitlines():
        parts = raw.split("\t", 4)
        if len(parts) == 5 and parts[1].isdigit():
            lines.append(AccessLine(parts[0], int(parts[1]), int(parts[2]) if parts[2].isdigit() else 0, parts[3],
                                    parts[4]))
    return lines


@dataclass
class Server:
    """A running `gunicorn -c gunicorn.conf.py` (stdout: access log, stderr: error log)."""

    base_url: str
    env: dict[str, str]
    stdout_path: Path
    stderr_path: Path
    process: subprocess.Popen = field(repr=False)
    tls: bool = False

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.base_url).port or 0

    def access_lines(self) -> list[AccessLine]:
        return parse_access_log(self.stdout_path.read_text(errors="replace"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM to the master (graceful), then SIGKILL to its process group."""
        stop_process_group(self.process, grace_seconds=20)


def start_server(env: dict[str, str], log_dir: Path, name: str, *, workers: int = 2,
                 certificate: tuple[Path, Path] | None = None) -> Server:
    """Start gunicorn with the committed gunicorn.conf.py on a free loopback port and wait
    until every worker booted and the login page answers. `certificate` (cert, key) serves
    HTTPS. Raises RuntimeError (with the error log) when it does not come up."""
    port = free_port()
    env = dict(env, BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY=str(workers))
    stdout_path, stderr_path = log_dir / f"{name}.access.log", log_dir / f"{name}.error.log"
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--access-logformat", ACCESS_LOG_FORMAT]
    if certificate:
        command += ["--certfile", str(certificate[0]), "--keyfile", str(certificate[1])]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
    scheme = "https" if certificate else "http"
    server = Server(f"{scheme}://127.0.0.1:{port}", env, stdout_path, stderr_path, process, tls=bool(certificate))
    deadline = time.monotonic() + STARTUP_SECONDS
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn ({name}) exited at start:\n{server.stderr()[-4000:]}")
            if server.stderr().count("Booting worker with pid") >= workers and _answers(server):
                return server
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn ({name}) did not start in {STARTUP_SECONDS} s:\n{server.stderr()[-4000:]}")
            time.sleep(0.2)
    except BaseException:
        server.stop()
        raise


def _answers(server: Server) -> bool:
    try:
        return Browser(server, "bank-scan/startup").get("/auth/login").status == 200
    except OSError:
        return False


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate and key for 127.0.0.1 (one day), for the HTTPS pass."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "scan-cert.pem", folder / "scan-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------

_INPUTS = re.compile(r"<input\b[^>]*>", re.I)
_ATTRIBUTE = re.compile(r'([a-zA-Z_:-]+)="([^"]*)"')


def input_values(page: str) -> dict[str, str]:
    """name → value of every `<input>` of `page` that has both (the first occurrence wins)."""
    values: dict[str, str] = {}
    for tag in _INPUTS.findall(page):
        attributes = dict(_ATTRIBUTE.findall(tag))
        if "name" in attributes and "value" in attributes:
            values.setdefault(attributes["name"], html.unescape(attributes["value"]))
    return values


@dataclass
class Response:
    status: int
    location: str
    body: str


class Browser:
    """One session: the cookies kept by hand, one connection per request, redirects not followed."""

    def __init__(self, server: Server, user_agent: str) -> None:
        self.server = server
        self.user_agent = user_agent
        self.cookies: dict[str, str] = {}

    @property
    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def request(self, method: str, path: str, fields: dict[str, str] | None = None) -> Response:
        headers = {"User-Agent": self.user_agent, "Connection": "close",
                   # Flask-WTF checks the Referer of HTTPS POSTs, as a browser sends it.
                   "Referer": self.server.base_url + path}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            headers["Cookie"] = self.cookie_header
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read().decode("utf-8", "replace")
            for header in answer.msg.get_all("Set-Cookie") or []:
                jar = http.cookies.SimpleCookie()
                jar.load(header)
                for name, morsel in jar.items():
                    if morsel.value:
                        self.cookies[name] = morsel.value
                    else:
                        self.cookies.pop(name, None)
            return Response(answer.status, answer.getheader("Location") or "", text)
        finally:
            connection.close()

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def set_cookie_headers(self, path: str) -> list[str]:
        """The raw Set-Cookie headers of a GET of `path` (cookies are not kept)."""
        connection = self._connection()
        try:
            connection.request("GET", path, headers={"User-Agent": self.user_agent, "Connection": "close"})
            answer = connection.getresponse()
            answer.read()
            return answer.msg.get_all("Set-Cookie") or []
        finally:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        if self.server.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection(self.server.host, self.server.port, timeout=REQUEST_SECONDS,
                                               context=context)
        return http.client.HTTPConnection(self.server.host, self.server.port, timeout=REQUEST_SECONDS)

    def submit(self, path: str, fields: dict[str, str]) -> Response:
        """GET the form at `path` and POST `fields` to it with the form's csrf_token."""
        form = self.get(path)
        token = input_values(form.body).get("csrf_token")
        if form.status != 200 or not token:
            raise RuntimeError(f"GET {path} answered {form.status} without a form")
        return self.request("POST", path, {"csrf_token": token, **fields})

    def login(self, email: str, password: str) -> None:
        """Sign in through the login form, then open the dashboard (whose log-out form puts the
        session's CSRF secret into the cookie, so forms fetched with this cookie later validate).
        Raises RuntimeError when the sign-in does not land on the dashboard."""
        answer = self.submit("/auth/login", {"email": email, "password": password})
        if answer.status != 302 or not answer.location.endswith("/banking/dashboard"):
            raise RuntimeError(f"login as {email} answered {answer.status} {answer.location}: {answer.body[:500]}")
        dashboard = self.get("/banking/dashboard")
        if dashboard.status != 200 or "csrf_token" not in dashboard.body:
            raise RuntimeError(f"dashboard after login as {email} answered {dashboard.status}")
