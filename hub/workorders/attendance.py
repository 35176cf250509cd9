"""Attendance and on-duty status (员工考勤与在岗状态): check-in/out, badges, leave.

Check-ins come from the API (`check_in`, `check_out`) or from a staff badge at a gate: a gate
or door event whose data carries `staff_id`, or `card` registered in `staff_badges`
(`badge_sink` runs inside the ingest transaction). A badge at a device tagged
`attendance: out` checks the person out; at any other gate or door it checks them in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from hub.workorders import store
from hub.workorders.clock import SYSTEM_CLOCK, Clock
from hub.workorders.errors import BadInput, NotFound

BADGE_DEVICE_KINDS = frozenset({"gate", "door"})
BADGE_CODES = frozenset({"granted", "badge", "access_granted"})


def _staff_site(conn: psycopg.Connection, staff_id: str, site_id: str) -> None:
    row = conn.execute("SELECT active, %s = ANY(sites) FROM staff WHERE id = %s", (site_id, staff_id)).fetchone()
    if row is None or not row[0]:
        raise NotFound(f"staff {staff_id!r} not found")
    if not row[1]:
        raise BadInput(f"staff {staff_id!r} does not work at site {site_id!r}")


def _record(conn: psycopg.Connection, kind: str, staff_id: str, site_id: str, *, actor: str, origin: str,
            at: datetime | None, clock: Clock) -> int:
    when = at or clock.now()
    if when.tzinfo is None:
        raise BadInput("attendance time must carry a time zone")
    with conn.transaction():
        _staff_site(conn, staff_id, site_id)
        row = conn.execute(
            """INSERT INTO attendance (staff_id, site_id, kind, at, source, actor, origin)
               VALUES (%s, %s, %s, %s, 'api', %s, %s) RETURNING id""",
            (staff_id, site_id, kind, when, actor, origin)).fetchone()
        assert row is not None
        store.audit(conn, actor=actor, origin=origin, action=f"attendance.{kind}", target=f"staff:{staff_id}",
                    after={"site": site_id, "at": when}, at=clock.now())
        return int(row[0])


def check_in(conn: psycopg.Connection, staff_id: str, site_id: str, *, actor: str, origin: str,
             at: datetime | None = None, clock: Clock = SYSTEM_CLOCK) -> int:
    return _record(conn, "in", staff_id, site_id, actor=actor, origin=origin, at=at, clock=clock)


def check_out(conn: psycopg.Connection, staff_id: str, site_id: str, *, actor: str, origin: str,
              at: datetime | None = None, clock: Clock = SYSTEM_CLOCK) -> int:
    return _record(conn, "out", staff_id, site_id, actor=actor, origin=origin, at=at, clock=clock)


def add_leave(conn: psycopg.Connection, staff_id: str, *, starts_at: datetime, ends_at: datetime, actor: str,
              origin: str, reason: str | None = None, clock: Clock = SYSTEM_CLOCK) -> int:
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise BadInput("leave start and end must carry a time zone")
    if ends_at <= starts_at:
        raise BadInput("leave must end after it starts")
    with conn.transaction():
        if conn.execute("SELECT 1 FROM staff WHERE id = %s", (staff_id,)).fetchone() is None:
            raise NotFound(f"staff {staff_id!r} not found")
        row = conn.execute(
            """INSERT INTO staff_leave (staff_id, starts_at, ends_at, reason, created_by)
               VALUES (%s, %s, %s, %s, %s) RETURNING id""", (staff_id, starts_at, ends_at, reason, actor)).fetchone()
        assert row is not None
        store.audit(conn, actor=actor, origin=origin, action="staff.leave", target=f"staff:{staff_id}",
                    after={"id": row[0], "starts_at": starts_at, "ends_at": ends_at, "reason": reason}, at=clock.now())
        return int(row[0])


def cancel_leave(conn: psycopg.Connection, leave_id: int, *, actor: str, origin: str, clock: Clock = SYSTEM_CLOCK) -> None:
    with conn.transaction():
        row = conn.execute("UPDATE staff_leave SET cancelled_at = %s WHERE id = %s AND cancelled_at IS NULL RETURNING staff_id",
                           (clock.now(), leave_id)).fetchone()
        if row is None:
            raise NotFound(f"leave {leave_id} not found or already cancelled")
        store.audit(conn, actor=actor, origin=origin, action="staff.leave_cancel", target=f"staff:{row[0]}",
                    after={"id": leave_id}, at=clock.now())


def leaves(conn: psycopg.Connection, staff_id: str, *, include_cancelled: bool = False) -> list[dict[str, Any]]:
    """A person's leave records, newest first."""
    rows = conn.execute(
        """SELECT id, staff_id, starts_at, ends_at, reason, created_by, created_at, cancelled_at
             FROM staff_leave WHERE staff_id = %s AND (%s OR cancelled_at IS NULL)
            ORDER BY starts_at DESC""", (staff_id, include_cancelled)).fetchall()
    names = ("id", "staff_id", "starts_at", "ends_at", "reason", "created_by", "created_at", "cancelled_at")
    return [dict(zip(names, r, strict=True)) for r in rows]


def attendance_log(conn: psycopg.Connection, staff_id: str, *, since: datetime, until: datetime | None = None) -> list[dict[str, Any]]:
    """Check-ins and check-outs of a person in a period, oldest first (source: api or badge)."""
    rows = conn.execute(
        """SELECT a.id, a.site_id, a.kind, a.at, a.source, d.device_id, a.actor
             FROM attendance a LEFT JOIN devices d ON d.id = a.device_id
            WHERE a.staff_id = %s AND a.at >= %s AND (%s::timestamptz IS NULL OR a.at < %s)
            ORDER BY a.at, a.id""", (staff_id, since, until, until)).fetchall()
    names = ("id", "site_id", "kind", "at", "source", "device", "actor")
    return [dict(zip(names, r, strict=True)) for r in rows]


def register_badge(conn: psycopg.Connection, card: str, staff_id: str, *, actor: str, origin: str) -> None:
    card = card.strip()
    if not card or len(card) > 128:
        raise BadInput("card must be 1–128 characters")
    with conn.transaction():
        if conn.execute("SELECT 1 FROM staff WHERE id = %s", (staff_id,)).fetchone() is None:
            raise NotFound(f"staff {staff_id!r} not found")
        conn.execute("""INSERT INTO staff_badges (card, staff_id) VALUES (%s, %s)
                        ON CONFLICT (card) DO UPDATE SET staff_id = EXCLUDED.staff_id""", (card, staff_id))
        store.audit(conn, actor=actor, origin=origin, action="staff.badge", target=f"staff:{staff_id}",
                    after={"card_suffix": card[-4:]})


@dataclass(frozen=True, slots=True)
class BadgeHit:
    staff_id: str
    site_id: str
    device_id: int
    kind: str
    at: datetime


def badge_hits(conn: psycopg.Connection, events: list[tuple[datetime, int, str, Any]]) -> list[BadgeHit]:
    """Which of these gate events are staff badges, and whether each checks in or out."""
    wanted = [(ts, dev, data) for ts, dev, code, data in events
              if code in BADGE_CODES and isinstance(data, dict) and (data.get("staff_id") or data.get("card"))]
    if not wanted:
        return []
    devices = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
        "SELECT id, site_id, kind, spec -> 'tags' ->> 'attendance' FROM devices WHERE id = ANY(%s)",
        ([d for _, d, _ in wanted],))}
    cards = [str(data["card"]) for _, _, data in wanted if data.get("card")]
    by_card: dict[str, str] = dict(conn.execute("SELECT card, staff_id FROM staff_badges WHERE card = ANY(%s)", (cards,)).fetchall()) if cards else {}
    hits = []
    for ts, dev, data in wanted:
        site_kind = devices.get(dev)
        if site_kind is None or site_kind[1] not in BADGE_DEVICE_KINDS:
            continue
        staff_id = data.get("staff_id") or by_card.get(str(data.get("card")))
        if not staff_id:
            continue  # a resident's card, not a staff badge
        hits.append(BadgeHit(str(staff_id), site_kind[0], dev, "out" if site_kind[2] == "out" else "in", ts))
    return hits


def badge_sink(conn: psycopg.Connection, batch: Any) -> None:
    """Ingest sink: record staff badges seen in this batch's gate events (same transaction)."""
    hits = badge_hits(conn, batch.events)
    for hit in hits:
        conn.execute(
            """INSERT INTO attendance (staff_id, site_id, kind, at, source, device_id, actor, origin)
               SELECT %s, %s, %s, %s, 'badge', %s, %s, 'badge'
                WHERE EXISTS (SELECT 1 FROM staff WHERE id = %s AND active AND %s = ANY(sites))
               ON CONFLICT DO NOTHING""",
            (hit.staff_id, hit.site_id, hit.kind, hit.at, hit.device_id, f"badge:{hit.device_id}",
             hit.staff_id, hit.site_id))


@dataclass(frozen=True, slots=True)
class Duty:
    staff_id: str
    role: str
    site_id: str
    on_shift: bool
    shifts: tuple[str, ...]
    attendance: str
    on_leave: bool
    open_orders: int
    available: bool


def on_duty(conn: psycopg.Connection, site_id: str, *, at: datetime | None = None,
            attendance_valid: timedelta = timedelta(hours=16), clock: Clock = SYSTEM_CLOCK) -> list[Duty]:
    """Who is on duty where (for the E-control centre): the same snapshot dispatch decides on."""
    from hub.dispatch.engine import load_candidates

    when = at or clock.now()
    return [Duty(c.staff_id, c.role, site_id, c.on_shift, c.shifts, c.attendance, c.on_leave, c.open_orders,
                 c.available)
            for c in sorted(load_candidates(conn, site_id, when, attendance_valid=attendance_valid),
                            key=lambda c: c.staff_id)]
