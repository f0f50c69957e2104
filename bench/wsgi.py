"""WSGI entry point of the benchmark: `gunicorn -c gunicorn.conf.py bench.wsgi:app`.

The same gunicorn configuration as production; only the app adds the ceiling routes
(bench/app.py). Refuses to start with APP_ENV=production.
"""

from bench.app import create_bench_app

app = create_bench_app()
