"""Roster rule: shift boundaries, overnight shifts, time zones, leave, attendance, load, fallback."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from hub.dispatch.roster import (
    Candidate,
    Need,
    ShiftRule,
    attendance_state,
    choose_assignee,
    on_shift,
)

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
ALL = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz).astimezone(UTC)  # type: ignore[misc]


def test_day_shift_start_is_inclusive_and_end_exclusive():
    day = ShiftRule(ALL, time(8), time(20))
    assert not on_shift(day, SH, local(SH, 2026, 11, 23, 7, 59, 59))
    assert on_shift(day, SH, local(SH, 2026, 11, 23, 8, 0, 0))
    assert on_shift(day, SH, local(SH, 2026, 11, 23, 19, 59, 59))
    assert not on_shift(day, SH, local(SH, 2026, 11, 23, 20, 0, 0))


def test_overnight_shift_belongs_to_the_day_it_starts():
    fri_night = ShiftRule(("fri",), time(20), time(8))
    # 2026-11-27 is a Friday.
    assert not on_shift(fri_night, SH, local(SH, 2026, 11, 27, 7, 59))   # Friday morning: Thursday's night
    assert on_shift(fri_night, SH, local(SH, 2026, 11, 27, 20, 0))
    assert on_shift(fri_night, SH, local(SH, 2026, 11, 27, 23, 59))
    assert on_shift(fri_night, SH, local(SH, 2026, 11, 28, 0, 0))         # Saturday after midnight
    assert on_shift(fri_night, SH, local(SH, 2026, 11, 28, 7, 59))
    assert not on_shift(fri_night, SH, local(SH, 2026, 11, 28, 8, 0))
    assert not on_shift(fri_night, SH, local(SH, 2026, 11, 28, 20, 0))  # no Saturday night shift


def test_shift_ending_at_midnight_runs_to_the_end_of_the_day():
    evening = ShiftRule(ALL, time(12), time(0))
    assert on_shift(evening, SH, local(SH, 2026, 11, 23, 23, 59, 59))
    assert not on_shift(evening, SH, local(SH, 2026, 11, 24, 0, 0, 0))


def test_same_utc_instant_is_read_in_each_sites_own_zone():
    day = ShiftRule(ALL, time(8), time(20))
    instant = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai, 21:00 (Sunday) in New York
    assert on_shift(day, SH, instant)
    assert not on_shift(day, NY, instant)
    weekdays = ShiftRule(("mon", "tue", "wed", "thu", "fri"), time(9), time(18))
    sunday_ny = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Sunday 20:00 in New York, Monday 09:00 in Shanghai
    assert on_shift(weekdays, SH, sunday_ny)
    assert not on_shift(weekdays, NY, sunday_ny)


def test_daylight_saving_change_keeps_local_shift_times():
    day = ShiftRule(ALL, time(8), time(20))
    # New York: 08:00 local is 13:00 UTC in winter (EST) and 12:00 UTC in summer (EDT).
    assert on_shift(day, NY, datetime(2026, 1, 15, 13, 0, tzinfo=UTC))
    assert not on_shift(day, NY, datetime(2026, 1, 15, 12, 30, tzinfo=UTC))
    assert on_shift(day, NY, datetime(2026, 7, 15, 12, 0, tzinfo=UTC))
    assert not on_shift(day, NY, datetime(2026, 7, 15, 11, 30, tzinfo=UTC))


def test_attendance_state_expires():
    now = datetime(2026, 11, 23, 10, tzinfo=UTC)
    valid = timedelta(hours=16)
    assert attendance_state(None, None, now, valid) == "unknown"
    assert attendance_state("in", now - timedelta(hours=2), now, valid) == "in"
    assert attendance_state("out", now - timedelta(hours=2), now, valid) == "out"
    assert attendance_state("in", now - timedelta(hours=17), now, valid) == "unknown"
    assert attendance_state("in", now + timedelta(minutes=1), now, valid) == "unknown"


def tech(staff_id: str, **kw: object) -> Candidate:
    base: dict[str, object] = {"role": "technician", "skills": ("elevator",), "on_shift": True}
    base.update(kw)
    return Candidate(staff_id=staff_id, **base)  # type: ignore[arg-type]


SUP = Candidate(staff_id="sup", role="supervisor", on_shift=False)


def test_contractor_first_for_entrapment_then_technician():
    people = [tech("t1"), Candidate(staff_id="lift-co", role="contractor", skills=("elevator",), on_shift=True), SUP]
    choice = choose_assignee(people, Need(("contractor", "technician"), "elevator"))
    assert (choice.staff_id, choice.role) == ("lift-co", "contractor")
    assert "contractor with skill elevator" in choice.reason
    off = [tech("t1"), Candidate(staff_id="lift-co", role="contractor", skills=("elevator",), on_shift=False), SUP]
    choice = choose_assignee(off, Need(("contractor", "technician"), "elevator"))
    assert choice.staff_id == "t1"
    assert "lift-co off shift" in choice.reason


def test_skill_checked_in_then_least_loaded_then_id():
    people = [
        tech("a", open_orders=0, skills=("fire",)),          # wrong skill
        tech("b", open_orders=3, attendance="in"),
        tech("c", open_orders=1, attendance="unknown"),
        tech("d", open_orders=2, attendance="in"),
        tech("e", open_orders=2, attendance="in"),
    ]
    choice = choose_assignee(people, Need(("technician",), "elevator"))
    assert choice.staff_id == "d"  # checked in beats unknown; 2 < 3 open; d < e by id
    assert "checked in" in choice.reason and "2 open order(s)" in choice.reason
    # Deterministic regardless of input order.
    assert choose_assignee(list(reversed(people)), Need(("technician",), "elevator")).staff_id == "d"


def test_leave_and_checkout_exclude_people():
    people = [tech("a", on_leave=True, attendance="in"), tech("b", attendance="out"), tech("c", open_orders=9), SUP]
    choice = choose_assignee(people, Need(("technician",), "elevator"))
    assert choice.staff_id == "c"
    considered = {c["staff"]: c["excluded"] for c in choice.considered}
    assert considered["a"] == "on leave" and considered["b"] == "checked out" and considered["c"] is None


def test_nobody_on_shift_goes_to_supervisor_and_says_why():
    people = [tech("a", on_shift=False), tech("b", on_leave=True), SUP]
    choice = choose_assignee(people, Need(("technician",), "elevator"))
    assert (choice.staff_id, choice.role) == ("sup", "supervisor")
    assert "a off shift" in choice.reason and "b on leave" in choice.reason
    assert choose_assignee([tech("a", on_shift=False)], Need(("technician",), "elevator")).staff_id is None


def test_on_duty_supervisor_preferred_and_one_on_leave_skipped():
    people = [Candidate(staff_id="s1", role="supervisor", on_shift=False),
              Candidate(staff_id="s2", role="supervisor", on_shift=True),
              Candidate(staff_id="s0", role="supervisor", on_shift=True, on_leave=True)]
    assert choose_assignee(people, Need(("butler",), None, "north")).staff_id == "s2"


@pytest.mark.parametrize(("grid", "expected"), [("north", "b-north"), ("south", "b-both")])
def test_butler_must_cover_the_grid(grid, expected):
    people = [Candidate(staff_id="b-north", role="butler", grids=("north",), on_shift=True),
              Candidate(staff_id="b-both", role="butler", grids=("north", "south"), on_shift=True, open_orders=5)]
    assert choose_assignee(people, Need(("butler",), None, grid)).staff_id == expected
