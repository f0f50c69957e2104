"""The tables' time format (app/models.py: format_utc_minute, the `utc_minute` Jinja filter)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.models import format_utc_minute


@pytest.mark.parametrize("moment, shown", [
    (datetime(2026, 1, 2, 3, 4, 59, 999999, tzinfo=timezone.utc), "2026-01-02 03:04"),
    (datetime(2026, 12, 31, 23, 59, tzinfo=timezone.utc), "2026-12-31 23:59"),
    (datetime(987, 6, 5, 4, 3, tzinfo=timezone.utc), "0987-06-05 04:03"),
    # Naive values are UTC already (SQLite hands them back so).
    (datetime(2026, 1, 2, 3, 4), "2026-01-02 03:04"),
    # Another offset is shown in UTC: 00:30 at +02:00 is 22:30 the day before.
    (datetime(2026, 3, 1, 0, 30, tzinfo=timezone(timedelta(hours=2))), "2026-02-28 22:30"),
])
def test_times_are_shown_to_the_minute_in_utc(moment, shown):
    assert format_utc_minute(moment) == shown


def test_no_time_is_an_empty_cell():
    assert format_utc_minute(None) == ""


def test_the_filter_is_registered_for_the_templates(app):
    assert app.jinja_env.filters["utc_minute"] is format_utc_minute
