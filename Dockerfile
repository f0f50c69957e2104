# The bank's web service: gunicorn serving run:app (gunicorn.conf.py) as an unprivileged user.
# The database is a separate service (compose.yaml runs postgres:15 next to it). Configuration
# comes only from the environment at run time (APP_ENV, SECRET_KEY, AUDIT_HMAC_KEY, DATABASE_URL,
# ...; see .env.example): no secret is baked into the image, and .dockerignore keeps .env,
# instance/ and local databases out of the build context.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BIND=0.0.0.0:8000

WORKDIR /srv/bank

# A system user with no login shell and no write access to the code.
RUN groupadd --system --gid 10001 bank \
 && useradd --system --uid 10001 --gid bank --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bank

# Dependencies first (a cached layer while requirements.txt is unchanged). Every package,
# transitive ones included, is pinned to an exact version there; `pip check` fails the build
# if they do not fit together.
COPY requirements.txt ./
RUN python -m pip install -r requirements.txt \
 && python -m pip check

# The application: code, committed migrations, entry point and server settings (owned by root,
# read-only for the service user).
COPY app ./app
COPY migrations ./migrations
COPY run.py gunicorn.conf.py ./

# Numeric, so a runtime (e.g. Kubernetes runAsNonRoot) can tell it is not root.
USER 10001:10001

EXPOSE 8000

# Alive = gunicorn answers the login page (it needs no database, so a database outage shows
# as 503 pages rather than a restart loop).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/auth/login', timeout=4).status == 200 else 1)"]

# Workers from WEB_CONCURRENCY, listening on BIND (0.0.0.0:8000 above); compose.yaml applies the
# migrations and seeds the administrator before starting this.
CMD ["gunicorn", "--config", "gunicorn.conf.py"]
