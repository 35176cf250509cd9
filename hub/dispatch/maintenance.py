"""Planned maintenance: due dates from schedules (pure), orders generated idempotently (I/O).

Due dates sit on a fixed grid so regeneration never drifts: `anchor + k × every_days`, or the
`day_of_month` of each month. Orders are created `lead_days` ahead in state `created` and are
assigned by the sweep when their due day starts in the site's local time.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from fnmatch import fnmatchcase
from zoneinfo import ZoneInfo

import psycopg

from hub.dispatch.policy import MaintenanceSchedule, Policy, Sla
from hub.workorders import store
from hub.workorders.clock import SYSTEM_CLOCK, Clock
from hub.workorders.model import Transition

ACTOR = "maintenance-planner"


def due_dates(schedule: MaintenanceSchedule, start: date, end: date) -> list[date]:
    """Due dates of the schedule within [start, end], in order."""
    if end < start:
        return []
    if schedule.every_days:
        n = schedule.every_days
        k = max(0, -(-(start - schedule.anchor).days // n))  # first k with anchor + k·n >= start
        out = []
        day = schedule.anchor + timedelta(days=k * n)
        while day <= end:
            if day >= start:
                out.append(day)
            day += timedelta(days=n)
        return out
    assert schedule.day_of_month is not None
    out = []
    year, month = start.year, start.month
    while True:
        day = date(year, month, schedule.day_of_month)
        if day > end:
            return out
        if day >= start:
            out.append(day)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def day_start(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def generate_planned(conn: psycopg.Connection, *, policy: Policy, clock: Clock = SYSTEM_CLOCK) -> int:
    """Create the orders due within each schedule's lead window; running it again creates none."""
    if not policy.maintenance:
        return 0
    now = clock.now()
    created = 0
    with conn.transaction():
        sites = conn.execute("SELECT id, timezone FROM sites ORDER BY id").fetchall()
        for site_id, tz_name in sites:
            tz = ZoneInfo(tz_name)
            today = now.astimezone(tz).date()
            devices = conn.execute(
                """SELECT id, device_id, kind, name, building_id, grid_id, floor FROM devices
                    WHERE site_id = %s AND active ORDER BY id""", (site_id,)).fetchall()
            for schedule in policy.maintenance:
                sla = schedule.sla.merged(Sla(resolve=timedelta(days=1)))
                for dev_id, dev_key, kind, name, building, grid, floor in devices:
                    if not any(fnmatchcase(kind, k) for k in schedule.device_kinds):
                        continue
                    for due in due_dates(schedule, today, today + timedelta(days=schedule.lead_days)):
                        start = day_start(due, tz)
                        order_id = store.insert_order(conn, {
                            "site_id": site_id, "kind": "maintenance", "priority": schedule.priority,
                            "state": "created", "title": f"{schedule.title}: {name or dev_key}",
                            "policy_rule": schedule.id, "skill": schedule.skill or policy.skill_for(kind),
                            "device_id": dev_id, "building_id": building, "grid_id": grid,
                            "location": ", ".join(p for p in (name or dev_key, f"floor {floor}" if floor is not None else None) if p),
                            "due_date": due, "sla_start": start, "created_at": now,
                            "accept_due": start + sla.accept if sla.accept else None,
                            "arrive_due": start + sla.arrive if sla.arrive else None,
                            "resolve_due": start + sla.resolve if sla.resolve else None,
                        }, on_conflict_nothing=True)
                        if order_id is None:
                            continue
                        created += 1
                        store.record_transition(conn, Transition(
                            order_id=order_id, at=now, from_state=None, to_state="created", actor=ACTOR,
                            origin=f"schedule:{schedule.id}", assignee=None,
                            note=f"due {due.isoformat()}", override_reason=None))
                        store.audit(conn, actor=ACTOR, origin=f"schedule:{schedule.id}",
                                    action="work_order.create", target=f"work_order:{order_id}",
                                    after={"schedule": schedule.id, "device": dev_key, "due": due}, at=now)
    return created
