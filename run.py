"""Entry point: `flask --app run.py <command>`; `python run.py` serves on http://127.0.0.1:5000."""

import sys

from app import create_app
from app.config import ConfigurationError

# Exit status of a refused configuration. 3 is gunicorn's "worker failed to boot": gunicorn, whose
# workers import this file too (gunicorn.conf.py), then stops instead of starting them again.
CONFIGURATION_REFUSED = 3

try:
    app = create_app()
except ConfigurationError as exc:
    # A missing or unsafe setting (a production key unset or too short, an unreadable value):
    # one line naming it, for `flask` commands and servers alike, instead of a traceback.
    sys.stderr.write(f"Refusing to start: {exc}\n")
    raise SystemExit(CONFIGURATION_REFUSED) from None

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
