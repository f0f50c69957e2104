"""The deployment files (Dockerfile, compose.yaml, .dockerignore) agree with the app (issue 4, item 7).

Images can't be pulled or built on this machine, so the files are parsed and checked against the
app's own sources instead: the environment variables compose passes are the ones the app reads
(and .env.example documents), the commands are the README's, the web service runs as a non-root
user, connects as the application role that a one-off `migrate` service (the schema owner) has
given its privileges, and no secret value is written into either file.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.config import PRODUCTION_SECRETS, BaseConfig, TestingConfig

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
README = REPO / "README.md"
GUNICORN_CONF = REPO / "gunicorn.conf.py"

# DESIGN.md section 7: the environment the app is configured by.
DESIGN_VARIABLES = {"SECRET_KEY", "DATABASE_URL", "APP_ENV", "AUDIT_HMAC_KEY", "RATELIMIT_STORAGE_URI",
                    "TRUSTED_PROXY_COUNT", "REQUIRE_STAFF_MFA"}
README_COMMANDS = ("flask --app run.py db upgrade", "flask --app run.py seed-admin")
# The role the web processes connect as (deploy/postgres creates it; grant-app-role equips it).
APP_ROLE = "bank_app"
INIT_SCRIPT = REPO / "deploy" / "postgres" / "10-create-app-role.sh"
# Variables whose value is a secret: never a literal, never a non-empty default.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|HMAC|(^|_)KEY$")
# `${NAME}`, `${NAME:-default}`, `${NAME-default}`, `${NAME:?message}`, `${NAME?message}`, `${NAME:+alt}`.
REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
BARE_REFERENCE = re.compile(r"\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)")
# Names the code reads from the environment: os.environ.get("X"), os.environ["X"], os.getenv("X"),
# and app/config.py's env_int / env_bool / env_decimal("X").
READS = re.compile(r"(?:os\.environ\.get|os\.getenv|os\.environ\[|env_int|env_bool|env_decimal)"
                   r"""\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+/=_-]{32,}")


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _service(name: str) -> dict:
    services = _compose().get("services") or {}
    assert name in services, f"compose.yaml has no `{name}` service"
    return services[name]


def _environment(service: dict) -> dict[str, str]:
    """A service's `environment`, written as a mapping or as a list of NAME=value."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.partition("=") for item in raw)
        return {name: value for name, _, value in pairs}
    return {name: "" if value is None else str(value) for name, value in raw.items()}


def _references(value: str) -> list[re.Match]:
    """The `${...}` references in `value` (`$$` is compose's escaped dollar, not a reference)."""
    return list(REFERENCE.finditer(value.replace("$$", "")))


def _without_references(value: str) -> str:
    return REFERENCE.sub("", value.replace("$$", ""))


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def _instruction_arguments(keyword: str) -> list[str]:
    return [arguments for name, arguments in _dockerfile() if name == keyword]


def _exec_form(arguments: str) -> list[str]:
    """A CMD/HEALTHCHECK CMD in exec (JSON array) form; a shell-form string is refused."""
    assert arguments.startswith("["), f"use the exec (JSON array) form, not a shell string: {arguments}"
    return json.loads(arguments)


def _dockerfile_env() -> dict[str, str]:
    """Variables set by ENV (the NAME=value form, several per instruction)."""
    values: dict[str, str] = {}
    for arguments in _instruction_arguments("ENV"):
        for item in shlex.split(arguments):
            name, equals, value = item.partition("=")
            assert equals, f"use ENV NAME=value: {arguments}"
            values[name] = value
    return values


def _variables_read_by(paths: list[Path]) -> dict[str, str]:
    """Environment variable name -> the first file (relative) that reads it."""
    readers: dict[str, str] = {}
    for path in paths:
        for name in READS.findall(path.read_text(encoding="utf-8")):
            readers.setdefault(name, str(path.relative_to(REPO)))
    return readers


def _app_variables() -> dict[str, str]:
    return _variables_read_by(sorted((REPO / "app").rglob("*.py")))


def _documented_variables() -> set[str]:
    """Names .env.example documents, as `NAME=...` or commented out as `# NAME=...`."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(encoding="utf-8"), re.M))


def _command_steps(service: str) -> list[str]:
    """A service's command as shell steps joined by `&&` (list or string form)."""
    command = _service(service).get("command")
    assert command, f"the {service} service must state its command"
    if isinstance(command, list):
        if command[:2] in (["sh", "-c"], ["/bin/sh", "-c"], ["bash", "-c"]):
            script = command[2]
        else:
            script = shlex.join(command)
    else:
        script = command
    assert ";" not in script and "||" not in script, "steps must be chained with && so a failure stops the start"
    return [" ".join(step.split()) for step in script.split("&&")]


def _uses_gunicorn_conf(words: list[str]) -> bool:
    for flag in ("-c", "--config"):
        if flag in words and words.index(flag) + 1 < len(words) and words[words.index(flag) + 1] == "gunicorn.conf.py":
            return True
    return "--config=gunicorn.conf.py" in words


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["web", "migrate"])
def test_web_passes_only_variables_the_app_reads_and_env_example_documents(service):
    """Is every environment variable compose gives the app's services one that the app's code
    reads (app/config.py and friends) and that .env.example documents, so none is a typo that
    silently does nothing?"""
    environment = _environment(_service(service))
    readers = _app_variables()
    documented = _documented_variables()

    unread = sorted(set(environment) - set(readers))
    undocumented = sorted(set(environment) - documented)

    assert environment, "the web service passes no environment"
    assert unread == [], f"compose passes variables the app never reads: {unread}"
    assert undocumented == [], f"compose passes variables .env.example does not document: {undocumented}"
    assert readers["SECRET_KEY"] == readers["DATABASE_URL"] == "app/config.py"


def test_web_is_configured_by_the_design_variables_for_production():
    """Does the web service set every variable of DESIGN.md section 7, run with
    APP_ENV=production, and reach PostgreSQL through psycopg 3 at the `db` service as the
    application role, while only `migrate` connects as the schema owner?"""
    environment = _environment(_service("web"))
    database = _environment(_service("db"))

    assert DESIGN_VARIABLES <= set(environment), sorted(DESIGN_VARIABLES - set(environment))
    assert environment["APP_ENV"] == _environment(_service("migrate"))["APP_ENV"] == "production"
    web_url, migrate_url = (make_url(REFERENCE.sub("placeholder", _environment(_service(name))["DATABASE_URL"]))
                            for name in ("web", "migrate"))
    for url in (web_url, migrate_url):
        assert url.drivername == "postgresql+psycopg"
        assert url.host == "db" and url.port in (None, 5432)
        assert url.database == "bank" == database.get("POSTGRES_DB")
    assert migrate_url.username == "bank" == database.get("POSTGRES_USER")
    assert web_url.username == APP_ROLE != database.get("POSTGRES_USER")


def test_every_variable_compose_interpolates_is_documented():
    """Is every `${VAR}` that compose fills in from the environment or `.env` documented in
    .env.example, so a deployer knows what to set?"""
    text = COMPOSE.read_text(encoding="utf-8")
    interpolated = {match.group("name") for match in _references(text)}
    bare = {match.group("name") for match in BARE_REFERENCE.finditer(text.replace("$$", ""))}

    assert bare == set(), f"use ${{VAR}}, not $VAR: {sorted(bare)}"
    assert interpolated, "compose.yaml takes nothing from the environment"
    assert sorted(interpolated - _documented_variables()) == []


def test_no_secret_value_is_written_into_the_deployment_files():
    """Are all secrets (keys, passwords, the database password inside DATABASE_URL) taken from
    the environment as `${VAR}` references with no default, the required ones refusing to start
    when unset, and does no secret-looking literal appear in compose.yaml or the Dockerfile?"""
    for service_name, service in (_compose().get("services") or {}).items():
        for name, value in _environment(service).items():
            if not SECRET_NAME.search(name):
                continue
            references = _references(value)
            assert len(references) == 1 and references[0].group(0) == value.strip(), (
                f"{service_name}.{name} must be exactly one ${{VAR}} reference, not {value!r}")
            match = references[0]
            assert SECRET_NAME.search(match.group("name")), f"{service_name}.{name} comes from a non-secret name"
            if (match.group("op") or "").lstrip(":") in ("-", "+"):
                assert not match.group("arg"), f"{service_name}.{name} has a hard-coded default"

    for service_name, password_variable in (("web", "APP_DB_PASSWORD"), ("migrate", "POSTGRES_PASSWORD")):
        environment = _environment(_service(service_name))
        for required in PRODUCTION_SECRETS:
            assert (_references(environment[required])[0].group("op") or "").endswith("?"), (
                f"{service_name}.{required} must be required (:?)")
        password = make_url(REFERENCE.sub(lambda m: f"REF{m.start()}", environment["DATABASE_URL"])).password
        references = _references(environment["DATABASE_URL"])
        assert password is not None and password.startswith("REF"), "the database password must be a ${VAR} reference"
        assert [ref.group("name") for ref in references if (ref.group("op") or "").endswith("?")] == [password_variable]
    for name in ("POSTGRES_PASSWORD", "APP_DB_PASSWORD"):
        assert _environment(_service("db"))[name].startswith(f"${{{name}:?")

    for name in _dockerfile_env():
        assert not SECRET_NAME.search(name), f"the Dockerfile bakes {name} into the image"
    for arguments in _instruction_arguments("ARG"):
        assert not SECRET_NAME.search(arguments), f"build arguments end up in the image history: ARG {arguments}"
    known = (TestingConfig.SECRET_KEY, TestingConfig.AUDIT_HMAC_KEY, BaseConfig.DEFAULT_ADMIN_PASSWORD)
    for path in (COMPOSE, DOCKERFILE):
        text = path.read_text(encoding="utf-8")
        assert not any(secret in text for secret in known), f"{path.name} contains a known development secret"
        literal = RANDOM_LOOKING.findall(_without_references(text))
        assert literal == [], f"{path.name} has secret-looking literals: {literal}"


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def test_migrate_runs_the_readme_commands_and_web_then_gunicorn_with_its_config():
    """Does the `migrate` service apply the migrations, give the application role its privileges
    and seed the administrator with exactly the README's commands, in that order and stopping at
    a failure; and does `web`, started only after `migrate` succeeded, run gunicorn (as the main
    process) with the repository's gunicorn.conf.py serving run:app?"""
    readme = README.read_text(encoding="utf-8")
    steps = _command_steps("migrate")
    grant = f"flask --app run.py grant-app-role {APP_ROLE}"

    for command in (*README_COMMANDS, grant.replace(APP_ROLE, "ROLE")):
        assert f"`{command}`" in readme, f"the README no longer gives `{command}`"
    assert steps == [README_COMMANDS[0], grant, README_COMMANDS[1]], steps
    assert _service("web")["depends_on"] == {"migrate": {"condition": "service_completed_successfully"},
                                             "redis": {"condition": "service_healthy"}}
    assert _service("migrate").get("restart") == "no"
    web_steps = _command_steps("web")
    assert len(web_steps) == 1, web_steps
    server = shlex.split(web_steps[0])
    assert server[:2] == ["exec", "gunicorn"], "gunicorn must replace the shell, so it receives docker's SIGTERM"
    assert _uses_gunicorn_conf(server), web_steps[0]
    assert GUNICORN_CONF.is_file(), "gunicorn.conf.py is missing at the repository root"
    assert re.search(r"""^wsgi_app\s*=\s*["']run:app["']""", GUNICORN_CONF.read_text(encoding="utf-8"), re.M)
    assert (REPO / "run.py").is_file()


def test_dockerfile_serves_gunicorn_as_a_non_root_user():
    """Is the image python:3.11-slim with the pinned requirements installed, the app, its
    migrations and gunicorn.conf.py copied (and nothing secret), port 8000 exposed and bound,
    a health check, and does it switch to a non-root USER before its CMD runs gunicorn with
    gunicorn.conf.py?"""
    instructions = _dockerfile()
    keywords = [keyword for keyword, _ in instructions]

    assert instructions[0] == ("FROM", "python:3.11-slim")
    requirements = [line for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
                    if line.strip() and not line.startswith("#")]
    assert requirements and all(re.fullmatch(r"[A-Za-z0-9_.\[\],-]+==[A-Za-z0-9_.+-]+", line) for line in requirements)
    assert any("pip install" in arguments and "-r requirements.txt" in arguments
               for arguments in _instruction_arguments("RUN"))

    sources = []
    for arguments in _instruction_arguments("COPY"):
        words = [word for word in arguments.split() if not word.startswith("--")]
        sources += [word.rstrip("/") for word in words[:-1]]  # the last word is the destination
    for needed in ("requirements.txt", "app", "migrations", "run.py", "gunicorn.conf.py"):
        assert needed in sources, f"the Dockerfile does not copy {needed}"
    for forbidden in ("", ".", ".env", "instance", "tests"):
        assert forbidden not in sources, f"the Dockerfile copies {forbidden or '/'!r} into the image"

    assert _instruction_arguments("EXPOSE") == ["8000"]
    bind = _dockerfile_env().get("BIND")
    assert bind == "0.0.0.0:8000", "gunicorn must listen on all interfaces of the container, port 8000"
    assert "BIND" in _variables_read_by([GUNICORN_CONF]), "gunicorn.conf.py no longer reads BIND"

    assert "HEALTHCHECK" in keywords
    cmd_index = len(keywords) - 1 - keywords[::-1].index("CMD")
    users = [arguments for keyword, arguments in instructions[:cmd_index] if keyword == "USER"]
    assert users, "no USER before CMD: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"the last USER before CMD is {users[-1]}"
    command = _exec_form(instructions[cmd_index][1])
    assert command[0] == "gunicorn" and _uses_gunicorn_conf(command), command


# ---------------------------------------------------------------------------------------------
# Services
# ---------------------------------------------------------------------------------------------


def test_db_is_postgres_with_a_health_check_and_migrate_waits_until_it_is_healthy():
    """Is `db` postgres:15 keeping its data on a named volume, checked with pg_isready, not
    published on the host, and does `migrate` start only once `db` is healthy?"""
    db_service, web = _service("db"), _service("migrate")

    assert db_service["image"] == "postgres:15"
    test = db_service.get("healthcheck", {}).get("test")
    assert test and "pg_isready" in (" ".join(test) if isinstance(test, list) else test)
    volumes = [volume if isinstance(volume, str) else f"{volume['source']}:{volume['target']}"
               for volume in db_service.get("volumes", [])]
    named = [volume.split(":")[0] for volume in volumes if volume.split(":")[1] == "/var/lib/postgresql/data"]
    assert named and not named[0].startswith((".", "/")), "the data directory must be a named volume"
    assert named[0] in (_compose().get("volumes") or {}), f"volume {named[0]} is not declared"
    assert "ports" not in db_service, "the database must not be published on the host"

    depends = web.get("depends_on")
    assert isinstance(depends, dict), "use the long depends_on form with a condition"
    assert depends.get("db", {}).get("condition") == "service_healthy"


def test_web_counts_request_rate_limits_in_the_redis_service():
    """Do web's gunicorn workers share one count per client, by default the `redis` service
    (health-checked, unpublished, keeping nothing on disk), rather than memory://, which
    production refuses behind several workers (OWASP ASVS 11.1.4)?"""
    redis_service = _service("redis")
    storage = _references(_environment(_service("web"))["RATELIMIT_STORAGE_URI"])

    assert len(storage) == 1 and storage[0].group("name") == "RATELIMIT_STORAGE_URI"
    assert storage[0].group("op") == ":-" and storage[0].group("arg") == "redis://redis:6379"
    assert redis_service["image"].startswith("redis:")
    assert "redis-cli" in " ".join(redis_service["healthcheck"]["test"])
    assert "ports" not in redis_service and "volumes" not in redis_service
    assert redis_service["command"][redis_service["command"].index("--save") + 1] == ""
    assert redis_service["command"][redis_service["command"].index("--appendonly") + 1] == "no"


def test_db_creates_the_application_role_without_privileges_of_its_own():
    """Does `db` run deploy/postgres/10-create-app-role.sh at first start, creating the role the
    web service connects as (login only: no superuser, no CREATEDB or CREATEROLE) with the password
    from APP_DB_PASSWORD, and taking CREATE on the schema away from everyone else?"""
    volumes = _service("db").get("volumes", [])
    assert "./deploy/postgres:/docker-entrypoint-initdb.d:ro" in volumes
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    assert INIT_SCRIPT.stat().st_mode & 0o111, "the postgres image runs only executable *.sh files"
    assert f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE" in script
    assert '--set=app_password="$APP_DB_PASSWORD"' in script and "ON_ERROR_STOP=1" in script
    assert "REVOKE CREATE ON SCHEMA public FROM PUBLIC;" in script
    assert "GRANT" not in script.replace(f'GRANT CONNECT ON DATABASE :"DBNAME" TO {APP_ROLE};', "")


@pytest.mark.parametrize("entry", [".venv", "instance", ".git", "*.db", ".env", "reports", ".pytest_cache",
                                   ".hypothesis", "**/__pycache__"])
def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image(entry):
    """Does .dockerignore keep this local file or folder (virtualenv, data, history, secrets,
    reports, caches) out of the build context?"""
    lines = {line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()}

    assert entry in lines
