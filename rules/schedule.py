"""Schedule windows in a site's local time (e.g. 22:00–06:00, past midnight). Pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rules.model import Schedule

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def window_start(schedule: Schedule, tz: ZoneInfo, t: float) -> float | None:
    """Start (epoch s) of the schedule window holding `t`, or None if `t` is outside."""
    local = datetime.fromtimestamp(t, tz)
    tod = local.time()
    start, end = schedule.start, schedule.end
    if start <= end:
        if start <= tod < end and WEEKDAYS[local.weekday()] in schedule.days:
            return datetime.combine(local.date(), start, tz).timestamp()
        return None
    if tod >= start:
        day = local.date()
    elif tod < end:
        day = local.date() - timedelta(days=1)
    else:
        return None
    if WEEKDAYS[day.weekday()] not in schedule.days:
        return None
    return datetime.combine(day, start, tz).timestamp()


def window_end(schedule: Schedule, tz: ZoneInfo, start: float) -> float:
    """End (epoch s) of the window that starts at `start`."""
    local = datetime.fromtimestamp(start, tz)
    day = local.date() if schedule.start < schedule.end else local.date() + timedelta(days=1)
    return datetime.combine(day, schedule.end, tz).timestamp()


def in_schedule(schedule: Schedule, tz: ZoneInfo, t: float) -> bool:
    return window_start(schedule, tz, t) is not None
