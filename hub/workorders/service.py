"""What the API calls: create, move through states, attach evidence, rate. Each call is one
transaction (a savepoint inside the caller's, if one is open), writes `audit_log`, and queues
the notifications it implies in the same transaction (outbox)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from hub.workorders import store
from hub.workorders.clock import SYSTEM_CLOCK, Clock
from hub.workorders.errors import BadInput, ClosureRefused, NotFound
from hub.workorders.model import (
    KINDS,
    PRIORITIES,
    RESIDENT_KINDS,
    STAMP_COLUMN,
    Transition,
    WorkOrder,
    check_transition,
)

if TYPE_CHECKING:
    from hub.dispatch.policy import Policy


def _policy(policy: Policy | None) -> Policy:
    from hub.dispatch.policy import active_policy

    return policy if policy is not None else active_policy()


def _text(value: str | None, name: str, *, required: bool = False, limit: int = 2000) -> str | None:
    if value is None or not value.strip():
        if required:
            raise BadInput(f"{name} is required")
        return None
    if len(value) > limit:
        raise BadInput(f"{name} is longer than {limit} characters")
    return value.strip()


def create_order(conn: psycopg.Connection, *, site_id: str, kind: str, title: str, actor: str, origin: str,
                 priority: str | None = None, description: str | None = None, device_id: int | None = None,
                 building_id: str | None = None, grid_id: str | None = None, location: str | None = None,
                 reporter: str | None = None, skill: str | None = None, auto_assign: bool = True,
                 policy: Policy | None = None, clock: Clock = SYSTEM_CLOCK) -> WorkOrder:
    """A resident-raised (repair 报修, complaint 投诉, praise 表扬) or manual order.

    Priority, SLA and who gets it come from the policy's `requests.<kind>`; the grid comes from
    the device or building when not given. Alarm orders are opened by dispatch, not here.
    """
    from hub.dispatch.engine import assign_order, sla_dues

    pol = _policy(policy)
    if kind not in KINDS:
        raise BadInput(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    rule = pol.request(kind)
    priority = priority or rule.priority
    if priority not in PRIORITIES:
        raise BadInput(f"unknown priority {priority!r}; one of {', '.join(PRIORITIES)}")
    title_text = _text(title, "title", required=True, limit=200)
    now = clock.now()
    with conn.transaction():
        if conn.execute("SELECT 1 FROM sites WHERE id = %s", (site_id,)).fetchone() is None:
            raise NotFound(f"site {site_id!r} not found")
        device_kind = None
        if device_id is not None:
            row = conn.execute("SELECT site_id, kind, grid_id, building_id FROM devices WHERE id = %s",
                               (device_id,)).fetchone()
            if row is None or row[0] != site_id:
                raise NotFound(f"device {device_id} not found in site {site_id!r}")
            device_kind, grid_id, building_id = row[1], grid_id or row[2], building_id or row[3]
        if grid_id is None and building_id is not None:
            row = conn.execute("SELECT id FROM grids WHERE site_id = %s AND %s = ANY(buildings) ORDER BY id LIMIT 1",
                               (site_id, building_id)).fetchone()
            grid_id = row[0] if row else None
        sla = pol.sla_for(priority, rule.sla)
        order_id = store.insert_order(conn, {
            "site_id": site_id, "kind": kind, "priority": priority, "state": "created",
            "title": title_text, "description": _text(description, "description", limit=10000),
            "policy_rule": f"request:{kind}", "skill": skill or rule.skill or pol.skill_for(device_kind),
            "device_id": device_id, "building_id": building_id, "grid_id": grid_id,
            "location": _text(location, "location", limit=500), "reporter": _text(reporter, "reporter", limit=200),
            "sla_start": now, "created_at": now, **sla_dues(now, sla),
        })
        assert order_id is not None
        store.record_transition(conn, Transition(order_id=order_id, at=now, from_state=None, to_state="created",
                                                 actor=actor, origin=origin, assignee=None, note=None,
                                                 override_reason=None))
        created = store.fetch_order(conn, order_id)
        store.audit(conn, actor=actor, origin=origin, action="work_order.create", target=f"work_order:{order_id}",
                    after=created.as_json(), at=now)
        if auto_assign:
            assign_order(conn, order_id, policy=pol, clock=clock, origin=origin, first=True)
        return store.fetch_order(conn, order_id)


def get_order(conn: psycopg.Connection, order_id: int) -> WorkOrder:
    return store.fetch_order(conn, order_id)


def list_orders(conn: psycopg.Connection, *, site_id: str | None = None, state: str | None = None,
                assignee: str | None = None, open_only: bool = False, limit: int = 200) -> list[WorkOrder]:
    from hub.workorders.model import OPEN_STATES

    where = [sql.SQL("true")]
    params: dict[str, Any] = {"limit": max(1, min(limit, 5000))}
    if site_id is not None:
        where.append(sql.SQL("site_id = %(site)s"))
        params["site"] = site_id
    if state is not None:
        where.append(sql.SQL("state = %(state)s"))
        params["state"] = state
    if assignee is not None:
        where.append(sql.SQL("assignee = %(assignee)s"))
        params["assignee"] = assignee
    if open_only:
        where.append(sql.SQL("state = ANY(%(open)s)"))
        params["open"] = sorted(OPEN_STATES)
    inner = (sql.SQL("id IN (SELECT id FROM work_orders WHERE ") + sql.SQL(" AND ").join(where)
             + sql.SQL(" ORDER BY id DESC LIMIT %(limit)s)"))
    return store.fetch_orders(conn, inner, params)


def history(conn: psycopg.Connection, order_id: int) -> list[Transition]:
    store.fetch_order(conn, order_id)
    return store.transitions_of(conn, order_id)


def transition(conn: psycopg.Connection, order_id: int, to_state: str, actor: str, origin: str,
               note: str | None = None, override_reason: str | None = None, *, assignee: str | None = None,
               policy: Policy | None = None, clock: Clock = SYSTEM_CLOCK) -> WorkOrder:
    """Move an order to `to_state`, recording who, when and where from.

    `assigned` needs `assignee` (a manual (re)assignment) unless the order already has one.
    An alarm order may become `resolved` only once its alarm has cleared, or with an
    `override_reason` saying why not (kept on the order and in the transition).
    """
    from hub.dispatch import outbox

    pol = _policy(policy)
    note = _text(note, "note")
    override = _text(override_reason, "override_reason")
    now = clock.now()
    with conn.transaction():
        order = store.fetch_order(conn, order_id, lock=True)
        check_transition(order.kind, order.state, to_state)
        changes: dict[str, Any] = {"state": to_state}
        column = STAMP_COLUMN.get(to_state)
        if column:
            changes[column] = now
        new_assignee = order.assignee
        if to_state == "assigned":
            new_assignee = assignee or order.assignee
            if new_assignee is None:
                raise BadInput("an assignee is required to assign an order")
            row = conn.execute("SELECT active, %s = ANY(sites) FROM staff WHERE id = %s",
                               (order.site_id, new_assignee)).fetchone()
            if row is None or not row[0]:
                raise BadInput(f"unknown or inactive staff {new_assignee!r}")
            if not row[1]:
                raise BadInput(f"staff {new_assignee!r} does not work at site {order.site_id!r}")
            changes.update(assignee=new_assignee, assigned_reason=f"assigned by {actor}" + (f": {note}" if note else ""),
                           accepted_at=None, on_site_at=None)
        elif assignee is not None:
            raise BadInput("assignee may only be given when assigning")
        if to_state == "resolved" and order.alarm_id is not None:
            alarm = conn.execute("SELECT state, cleared_at FROM alarms WHERE id = %s", (order.alarm_id,)).fetchone()
            cleared = alarm is not None and alarm[1] is not None
            if not cleared and override is None:
                raise ClosureRefused(
                    f"alarm {order.alarm_id} has not cleared (state {alarm[0] if alarm else 'missing'}); "
                    "resolve after it clears, or give override_reason")
            if not cleared:
                changes["override_reason"] = override
        if to_state == "reopened":
            changes.update(resolved_at=None, verified_at=None, closed_at=None, reopen_count=order.reopen_count + 1)
        store.update_order(conn, order_id, changes)
        store.record_transition(conn, Transition(order_id=order_id, at=now, from_state=order.state, to_state=to_state,
                                                 actor=actor, origin=origin, assignee=new_assignee, note=note,
                                                 override_reason=override))
        after = store.fetch_order(conn, order_id)
        store.audit(conn, actor=actor, origin=origin, action=f"work_order.{to_state}", target=f"work_order:{order_id}",
                    before={"state": order.state, "assignee": order.assignee},
                    after={"state": to_state, "assignee": new_assignee, "note": note, "override_reason": override},
                    at=now)
        notify: set[str] = set()
        if to_state == "assigned" and new_assignee:
            notify.add(new_assignee)
            if order.assignee and order.assignee != new_assignee:
                outbox.enqueue(conn, after, "unassigned", [order.assignee], policy=pol,
                               message=f"reassigned to {new_assignee} by {actor}")
        elif to_state in ("cancelled", "reopened") and order.assignee:
            notify.add(order.assignee)
        outbox.enqueue(conn, after, to_state, notify, policy=pol, message=note)
        return after


def add_evidence(conn: psycopg.Connection, order_id: int, *, kind: str, actor: str, origin: str,
                 ref: str | None = None, note: str | None = None, clock: Clock = SYSTEM_CLOCK) -> int:
    """A photo/attachment by stored reference (object key or URL), or a note."""
    if kind not in ("photo", "attachment", "note"):
        raise BadInput("evidence kind must be photo, attachment or note")
    ref, note = _text(ref, "ref", limit=1000), _text(note, "note", limit=10000)
    if kind in ("photo", "attachment") and ref is None:
        raise BadInput(f"a {kind} needs ref (its stored reference)")
    if ref is None and note is None:
        raise BadInput("give ref or note")
    now = clock.now()
    with conn.transaction():
        store.fetch_order(conn, order_id, lock=True)
        row = conn.execute(
            """INSERT INTO work_order_evidence (order_id, at, actor, kind, ref, note)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""", (order_id, now, actor, kind, ref, note)).fetchone()
        assert row is not None
        store.audit(conn, actor=actor, origin=origin, action="work_order.evidence", target=f"work_order:{order_id}",
                    after={"kind": kind, "ref": ref, "note": note}, at=now)
        return int(row[0])


def evidence_of(conn: psycopg.Connection, order_id: int) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT id, at, actor, kind, ref, note FROM work_order_evidence WHERE order_id = %s ORDER BY id",
                        (order_id,)).fetchall()
    return [dict(zip(("id", "at", "actor", "kind", "ref", "note"), r, strict=True)) for r in rows]


def rate_order(conn: psycopg.Connection, order_id: int, *, rating: int, actor: str, origin: str,
               comment: str | None = None, clock: Clock = SYSTEM_CLOCK) -> WorkOrder:
    """The resident's rating (1–5) and comment, once the work is resolved; resident orders only."""
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise BadInput("rating must be an integer from 1 to 5")
    comment = _text(comment, "comment", limit=2000)
    now = clock.now()
    with conn.transaction():
        order = store.fetch_order(conn, order_id, lock=True)
        if order.kind not in RESIDENT_KINDS:
            raise BadInput(f"only resident orders ({', '.join(sorted(RESIDENT_KINDS))}) take a rating")
        if order.state not in ("resolved", "verified", "closed"):
            raise BadInput(f"an order can be rated once resolved; this one is {order.state}")
        store.update_order(conn, order_id, {"rating": rating, "rating_comment": comment, "rated_at": now})
        store.audit(conn, actor=actor, origin=origin, action="work_order.rate", target=f"work_order:{order_id}",
                    before={"rating": order.rating}, after={"rating": rating, "comment": comment}, at=now)
        return store.fetch_order(conn, order_id)


def delivery_status(conn: psycopg.Connection, order_id: int) -> list[dict[str, Any]]:
    """The order's notifications and whether each was delivered."""
    rows = conn.execute(
        """SELECT id, event, channel, target, staff_id, status, attempts, last_error, created_at, delivered_at
             FROM notifications WHERE order_id = %s ORDER BY id""", (order_id,)).fetchall()
    names = ("id", "event", "channel", "target", "staff_id", "status", "attempts", "last_error",
             "created_at", "delivered_at")
    return [dict(zip(names, r, strict=True)) for r in rows]
