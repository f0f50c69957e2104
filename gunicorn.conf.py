"""Gunicorn settings for serving the bank in production-like runs (`make serve`, the container).

Read by `gunicorn -c gunicorn.conf.py`. The application's own settings (APP_ENV, DATABASE_URL,
SECRET_KEY, ...) come from the environment as usual (DESIGN.md section 7); only how the
process serves HTTP is decided here. Each worker builds its own app, engine and connection pool.
"""

import os

from app.config import ConfigurationError, check_rate_limit_storage

# The WSGI callable: `app` in run.py, the same factory call `flask --app run.py` uses.
wsgi_app = "run:app"

# Address to listen on, from BIND (e.g. "0.0.0.0:8000" in a container). Loopback by default, so
# a local run is not reachable from the network; put an HTTPS proxy in front in production.
bind = [os.environ.get("BIND") or "127.0.0.1:8000"]

# Worker processes, from WEB_CONCURRENCY (the variable gunicorn and most platforms use); by
# default one per CPU core. Threads per process from WEB_THREADS; by default 2 (gthread workers)
# on PostgreSQL and 1 (gunicorn's sync worker) on SQLite, the database DATABASE_URL names (none:
# the development default, SQLite). Both chosen by measurement (the workers x threads sweep of
# `make bench`, on each database: bench/results.md). On this 2-core machine one process per core
# served transfers and pages fastest on both (4 x 4 and 8 x 1 some 15-25% slower with two to
# three times the POST p99), since more processes or threads only add switching between them.
# On PostgreSQL, between 2 x 1 and 2 x 2 the runs disagree, each ahead by about a tenth in one
# run and behind in another; 2 x 2 keeps a second thread in each process, so one slow request
# (a lock wait, a 100 ms password hash) doesn't stop its process answering others, and its
# gthread workers keep connections alive. On SQLite a second thread costs transfers 14 to 18%
# of their rate (2 x 1: 293 and 222 transfers/s, POST p99 45 and 56 ms, in two sweeps; 2 x 2:
# 240 and 191/s, 82 and 87 ms; transactions page 1 alike): SQLite lets one writer in at a time,
# and a writer holding that lock shares its process's GIL with the other thread, so every other
# writer waits longer for the lock.
# A stuck request blocks one thread, and gunicorn's timeout still ends a worker that stops
# answering.
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)


# Flask-Limiter's default storage, memory://, counts requests in one process: behind several
# workers each limit would be multiplied by their number. With the limits on and more than one
# worker, production refuses to start unless RATELIMIT_STORAGE_URI is shared (redis://), and
# development starts with a warning (app/config.py check_rate_limit_storage, OWASP ASVS 11.1.4).
def on_starting(server) -> None:
    """Gunicorn hook, run once in the master before any worker starts.

    Checks the request rate limits' storage against the final number of workers (this file's,
    or `--workers` on the command line). Logs the warning in development; in production logs
    the error and exits with status 1 before any worker is started.
    """
    try:
        warning = check_rate_limit_storage(server.cfg.workers, os.environ)
    except ConfigurationError as exc:
        server.log.error("refusing to start: %s", exc)
        raise SystemExit(1) from None
    if warning:
        server.log.warning("%s", warning)


def _serves_sqlite(database_url: str) -> bool:
    """True when DATABASE_URL names SQLite, or is unset (the development default)."""
    return not database_url or database_url.startswith("sqlite")


threads = int(os.environ.get("WEB_THREADS") or (1 if _serves_sqlite(os.environ.get("DATABASE_URL", "")) else 2))
worker_class = "gthread" if threads > 1 else "sync"
# How many connections a gthread worker holds open at once (gunicorn's default, 1000); past it
# the worker stops accepting and leaves new connections to the others. It also bounds the idle
# keep-alive connections a worker keeps (this value minus the threads; past that, an answer
# closes its connection). `make bench` sets it to each worker's share of its 16 clients, so its
# keep-alive connections split evenly between the workers (bench/README.md); a deployment keeps
# the default.
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS") or 1000)

# Each worker's connection pool holds exactly what the worker can use at once: one connection
# per thread, no overflow (no request ever needs a second connection), so workers x threads
# connections in all, well under PostgreSQL's max_connections. An explicit DATABASE_POOL_SIZE or
# DATABASE_MAX_OVERFLOW in the environment wins. Set in the workers' environment (app/config.py).
raw_env = [f"{name}={value}" for name, value in (("DATABASE_POOL_SIZE", threads), ("DATABASE_MAX_OVERFLOW", 0))
           if not os.environ.get(name)]

# Every worker imports the app itself (no preload), so no database connection or pool is ever
# created in the master and shared across fork().
preload_app = False

# A worker silent for 60 s is killed and replaced. The longest legitimate request waits on the
# database: SQLite's busy timeout (SQLITE_BUSY_TIMEOUT_MS, 15 s) or PostgreSQL's lock_timeout
# (10 s), at most TRANSFER_MAX_RETRIES (3) times before answering "please try again"; 60 s
# lets those finish while still bounding a hung worker.
timeout = 60

# On SIGTERM (deploy, `docker stop`) workers get 30 s to finish the request in hand; a
# transfer is committed or rolled back as a whole either way.
graceful_timeout = 30

# Workers' heartbeat files on a RAM disk where there is one: on a disk-backed /tmp (common in
# containers) the per-request heartbeat write can stall a worker long enough to be killed.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Gunicorn trusts no X-Forwarded-* header itself: the app decides through TRUSTED_PROXY_COUNT
# (Werkzeug's ProxyFix, DESIGN.md section 5b), so a client can't claim HTTPS or another path.
forwarded_allow_ips = ""

# No runtime control socket: its default path is shared by every gunicorn of the same user
# (two instances would fight over it), and nothing here needs to resize workers at runtime.
control_socket_disable = True

# Access log to stdout, one line per request. `%(U)s` is the path WITHOUT the query string
# (`%(r)s` would log the raw request line, whose query string can carry data such as a `next`
# URL or search filters); no referer either, for the same reason. `%(p)s` is the worker's pid,
# so the log shows how requests were spread over the workers; `%(M)s` the time in milliseconds.
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms %(p)s'

# Error log (gunicorn's own messages) to stderr, INFO and above.
errorlog = "-"
loglevel = "info"

# The application's warnings and errors (e.g. "transfer retried after 40P01 (attempt 2)" from
# app/extensions.py, "unhandled error" from app/errors.py) go to stderr too, stamped like
# gunicorn's own lines with time, pid, level and logger; libraries' INFO chatter is left out.
# Access lines stay on stdout, unprefixed.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING", "handlers": ["error_console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access_console"], "propagate": False},
    },
    "handlers": {
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
        "access_console": {"class": "logging.StreamHandler", "formatter": "access", "stream": "ext://sys.stdout"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]"},
        "access": {"format": "%(message)s"},
    },
}
