"""NCRONTAB, as the Functions timer trigger reads it: ``{second} {minute} {hour} {day} {month}
{day-of-week}``, each field ``*``, a number, a range ``a-b``, a list ``a,b`` or a step ``*/n`` /
``a-b/n``. ``make run`` uses it to run the reconciler on the same ``RECONCILE_SCHEDULE`` the
timer trigger gets in Azure (month and weekday names are not supported here)."""

from __future__ import annotations

from datetime import datetime, timedelta

_BOUNDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


class ScheduleError(ValueError):
    """Not an NCRONTAB expression with six fields."""


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            start, stop = (int(x) for x in body.split("-", 1))
        else:
            start = stop = int(body)
            if step_text:
                stop = high
        if step < 1 or not low <= start <= stop <= high:
            raise ScheduleError(f"field {text!r} is out of range {low}-{high}")
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def parse(expression: str) -> tuple[frozenset[int], ...]:
    fields = expression.split()
    if len(fields) != 6:
        raise ScheduleError(f"{expression!r}: NCRONTAB takes six fields (seconds first)")
    try:
        parsed = tuple(_field(f, low, high) for f, (low, high) in zip(fields, _BOUNDS, strict=True))
    except ValueError as exc:
        raise ScheduleError(f"{expression!r}: {exc}") from exc
    return parsed


def next_run(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``expression`` names."""
    seconds, minutes, hours, days, months, weekdays = parse(expression)
    moment = after.replace(microsecond=0) + timedelta(seconds=1)
    limit = moment + timedelta(days=366 * 5)
    while moment < limit:
        if moment.month not in months:
            moment = (moment.replace(day=1, hour=0, minute=0, second=0) + timedelta(days=32)).replace(day=1)
            continue
        if moment.day not in days or (moment.isoweekday() % 7) not in weekdays:
            moment = moment.replace(hour=0, minute=0, second=0) + timedelta(days=1)
            continue
        if moment.hour not in hours:
            moment = moment.replace(minute=0, second=0) + timedelta(hours=1)
            continue
        if moment.minute not in minutes:
            moment = moment.replace(second=0) + timedelta(minutes=1)
            continue
        if moment.second not in seconds:
            moment += timedelta(seconds=1)
            continue
        return moment
    raise ScheduleError(f"{expression!r} names no time in five years")
