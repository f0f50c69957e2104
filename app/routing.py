"""URL converters shared by every blueprint."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

# The largest id: the primary keys are INTEGER, 32-bit on PostgreSQL. A larger number bound
# against them is an error there ("integer out of range"), so no id outside 1..MAX_ID may reach a query.
MAX_ID = 2**31 - 1


def parse_id(raw: str | int | None) -> int | None:
    """`raw` as a database id (int, 1..MAX_ID) when it is one in plain ASCII digits (or an int in
    range), else None: a sign, spaces, other digits, 0 or a number too large all give None."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw if 0 < raw <= MAX_ID else None
    if not isinstance(raw, str) or not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None


class IdConverter(IntegerConverter):
    """`<id:name>`: a database id, 1 to MAX_ID in plain digits. Anything else (0, a sign, an id
    too large for the database) does not match the route, so it is a 404, never a 500.

    Plain digits means ASCII 0-9 without a leading zero: Werkzeug's own pattern matches any
    script's digits (`٢`, `２`) and zero-padded numbers, so one object had many URLs. The id is
    spelled one way, as parse_id requires of the ids in query strings."""

    regex = r"[1-9][0-9]{0,9}"

    def __init__(self, map, **kwargs) -> None:  # noqa: A002 - Werkzeug's parameter name
        super().__init__(map, min=1, max=MAX_ID)
