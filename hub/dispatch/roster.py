"""Who is on duty, and whom to assign: pure functions over a snapshot of the roster.

The rule (docs/workorders.md, "Choosing the assignee"):
1. For each role the policy names, in order (e.g. contractor, then technician): the people of
   the site with that role who fit the order — a butler must cover the order's grid, a
   technician or contractor must have the skill.
2. Skip anyone on leave, off shift, or checked out (attendance `out`).
3. Prefer people checked in (`in`) over people on shift without an attendance record
   (`unknown`); then the fewest open orders; then the staff id (so the choice is deterministic).
4. Nobody available for any role → the site's supervisor (available ones first); no
   supervisor at all → nobody, and the order waits unassigned for the operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Attendance = Literal["in", "out", "unknown"]


@dataclass(frozen=True, slots=True)
class ShiftRule:
    """A recurring shift in the site's local time; `end <= start` runs past midnight."""

    days: tuple[str, ...]
    start: time
    end: time

    def text(self) -> str:
        return f"{self.start:%H:%M}–{self.end:%H:%M}"


def on_shift(shift: ShiftRule, tz: ZoneInfo, at: datetime) -> bool:
    """Is `at` (an aware instant) inside the shift, read in the site's local time?

    The start is inclusive and the end exclusive. An overnight shift belongs to the day it
    starts on: a Friday 20:00–08:00 shift covers Saturday 07:59 but not Friday 07:59.
    """
    local = at.astimezone(tz)
    now, day = local.time().replace(tzinfo=None), WEEKDAYS[local.weekday()]
    if shift.start < shift.end:
        return day in shift.days and shift.start <= now < shift.end
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    return (day in shift.days and now >= shift.start) or (yesterday in shift.days and now < shift.end)


def attendance_state(last_kind: str | None, last_at: datetime | None, at: datetime, valid: timedelta) -> Attendance:
    """`in` after a check-in younger than `valid`, `out` after a recent check-out, else unknown."""
    if last_kind is None or last_at is None or last_at > at or at - last_at > valid:
        return "unknown"
    return "in" if last_kind == "in" else "out"


@dataclass(frozen=True, slots=True)
class Candidate:
    """One staff member of the site as seen at one instant."""

    staff_id: str
    role: str
    grids: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    supervisor: str | None = None
    shifts: tuple[str, ...] = ()          # texts of the shifts covering the instant
    on_shift: bool = False
    attendance: Attendance = "unknown"
    on_leave: bool = False
    open_orders: int = 0

    @property
    def available(self) -> bool:
        return self.on_shift and not self.on_leave and self.attendance != "out"

    def why_not(self) -> str | None:
        if self.on_leave:
            return "on leave"
        if not self.on_shift:
            return "off shift"
        if self.attendance == "out":
            return "checked out"
        return None


@dataclass(frozen=True, slots=True)
class Need:
    """What the order needs: the roles to try in order, a skill, the grid it lies in."""

    roles: tuple[str, ...]
    skill: str | None = None
    grid: str | None = None


@dataclass(frozen=True, slots=True)
class Choice:
    staff_id: str | None
    role: str | None
    reason: str
    considered: list[dict[str, object]] = field(default_factory=list)


def _fits(c: Candidate, role: str, need: Need) -> bool:
    if c.role != role:
        return False
    if role == "butler":
        return need.grid is None or need.grid in c.grids
    if role in ("technician", "contractor"):
        return need.skill is None or need.skill in c.skills
    return True


def _rank(c: Candidate) -> tuple[int, int, str]:
    return (0 if c.attendance == "in" else 1, c.open_orders, c.staff_id)


def _describe(c: Candidate) -> str:
    duty = "checked in" if c.attendance == "in" else "on shift, no check-in recorded"
    shift = f" ({', '.join(c.shifts)})" if c.shifts else ""
    return f"{duty}{shift}, {c.open_orders} open order(s)"


def _what(role: str, need: Need) -> str:
    if role == "butler":
        return f"butler of grid {need.grid}" if need.grid else "butler"
    if role in ("technician", "contractor"):
        return f"{role} with skill {need.skill}" if need.skill else role
    return role


def choose_assignee(candidates: Iterable[Candidate], need: Need) -> Choice:
    """Apply the rule in the module docstring; the reason says why this person, in words."""
    people = sorted(candidates, key=lambda c: c.staff_id)
    considered: list[dict[str, object]] = []
    skipped: list[str] = []
    for role in need.roles:
        fitting = [c for c in people if _fits(c, role, need)]
        for c in fitting:
            considered.append({"staff": c.staff_id, "role": role, "on_shift": c.on_shift,
                               "attendance": c.attendance, "on_leave": c.on_leave,
                               "open_orders": c.open_orders, "excluded": c.why_not()})
        available = sorted((c for c in fitting if c.available), key=_rank)
        if available:
            best = available[0]
            others = len(available) - 1
            reason = (f"{_what(role, need)}: {best.staff_id} is {_describe(best)}"
                      + (f"; chosen over {others} other(s) by check-in, load, then id" if others else ""))
            if skipped:
                reason += f"; none available as {', '.join(skipped)}"
            return Choice(best.staff_id, role, reason, considered)
        why = ", ".join(f"{c.staff_id} {c.why_not()}" for c in fitting) or "nobody with that role"
        skipped.append(f"{_what(role, need)} ({why})")
    supervisors = [c for c in people if c.role == "supervisor" and not c.on_leave]
    for c in supervisors:
        considered.append({"staff": c.staff_id, "role": "supervisor", "on_shift": c.on_shift,
                           "attendance": c.attendance, "on_leave": c.on_leave,
                           "open_orders": c.open_orders, "excluded": c.why_not()})
    if supervisors:
        best = sorted(supervisors, key=lambda c: (0 if c.available else 1, *_rank(c)))[0]
        state = "on duty" if best.available else "off duty, reached as the last resort"
        return Choice(best.staff_id, "supervisor",
                      f"nobody available: {'; '.join(skipped)}; supervisor {best.staff_id} ({state})",
                      considered)
    return Choice(None, None, f"nobody available and no supervisor: {'; '.join(skipped)}", considered)


def shifts_covering(shifts: Sequence[ShiftRule], tz: ZoneInfo, at: datetime) -> list[ShiftRule]:
    return [s for s in shifts if on_shift(s, tz, at)]
