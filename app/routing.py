"""URL converters shared by every blueprint."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # the largest value of a BIGINT / SQLite INTEGER primary key


class IdConverter(IntegerConverter):
    """`<id:name>`: a database id, 1 to 2**63 - 1 in plain digits. Anything else (0, a sign,
    an id too large for the database) does not match the route, so it is a 404, never a 500."""

    def __init__(self, map, **kwargs) -> None:  # noqa: A002 - Werkzeug's parameter name
        super().__init__(map, min=1, max=MAX_ID)
