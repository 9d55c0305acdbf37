"""The NCRONTAB schedule make run shares with the timer trigger (pure)."""

from __future__ import annotations

from datetime import datetime

import pytest

from devtools.ncrontab import ScheduleError, next_run
from shared.settings import DEFAULT_RECONCILE_SCHEDULE

MONDAY = datetime(2026, 11, 23, 13, 7, 12)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        (DEFAULT_RECONCILE_SCHEDULE, datetime(2026, 11, 23, 13, 15, 0)),
        ("*/10 * * * * *", datetime(2026, 11, 23, 13, 7, 20)),
        ("30 5 * * * *", datetime(2026, 11, 23, 14, 5, 30)),
        ("0 0 9 * * 1", datetime(2026, 11, 30, 9, 0, 0)),  # next Monday: today's 9:00 has passed
        ("0 0 0 1 1 *", datetime(2027, 1, 1, 0, 0, 0)),
        ("0 0,30 8-9 * * *", datetime(2026, 11, 24, 8, 0, 0)),
    ],
)
def test_next_run(expression: str, expected: datetime) -> None:
    assert next_run(expression, MONDAY) == expected


def test_next_run_is_strictly_after() -> None:
    at = datetime(2026, 11, 23, 13, 15, 0)
    assert next_run(DEFAULT_RECONCILE_SCHEDULE, at) == datetime(2026, 11, 23, 13, 30, 0)


@pytest.mark.parametrize("bad", ["*/15 * * * *", "61 * * * * *", "0 0 25 * * *", "x * * * * *", "*/0 * * * * *"])
def test_bad_expressions_are_refused(bad: str) -> None:
    with pytest.raises(ScheduleError):
        next_run(bad, MONDAY)
