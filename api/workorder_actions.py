"""Who may move a work order, checked and applied in one transaction on a sync connection.

The hub.workorders functions do the work (state machine, closing rule, audit_log, outbox); this
module adds the API's caller rules in front of them, under the same row lock, so the check and
the change cannot be split by a concurrent request. Rules (docs/api.md, "Work orders"):

* visible: the order's site is in the caller's scope, or the order is assigned to the caller's
  staff member; anything else is 404 exactly like a missing order;
* accept / arrive / resolve: only the assignee (the API user linked to that staff id);
* verify / cancel / close: admin, operator, or a user acting as a supervisor of the order's site;
  praise may also be closed by its assignee;
* reopen: admin, operator, supervisor, and a butler for resident-raised orders;
* evidence: anyone who sees the order; rating: admin/operator/butler, resident orders only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import psycopg

from api.errors import ApiError, forbidden, not_found
from api.scope import Principal, Role
from hub import workorders
from hub.workorders import store
from hub.workorders.errors import NotFound
from hub.workorders.model import FINAL_STATES, RESIDENT_KINDS, WorkOrder

# The assignee's own steps, and what the step is called in messages.
ASSIGNEE_STEPS = {"accepted": "accept", "on_site": "arrive at", "resolved": "resolve"}
# Repeating one of these by the assignee returns the order unchanged (a retried tap on a phone).
IDEMPOTENT_STEPS = frozenset({"accepted", "on_site"})
DESK_ROLES = frozenset({Role.admin, Role.operator})


def visible(user: Principal, site_id: str, assignee: str | None) -> bool:
    return user.sees(site_id) or (user.staff_id is not None and assignee == user.staff_id)


def origin_of(ip: str) -> str:
    """Where a change came from, as work_order_transitions and audit_log record it."""
    return f"api:{ip}"


def load_visible(conn: psycopg.Connection, user: Principal, order_id: int, *, lock: bool = False) -> WorkOrder:
    try:
        order = store.fetch_order(conn, order_id, lock=lock)
    except NotFound:
        raise not_found("work order") from None
    if not visible(user, order.site_id, order.assignee):
        raise not_found("work order")
    return order


def is_supervisor(conn: psycopg.Connection, user: Principal, site_id: str) -> bool:
    if user.staff_id is None:
        return False
    row = conn.execute("SELECT 1 FROM staff WHERE id = %s AND active AND role = 'supervisor' AND %s = ANY(sites)",
                       (user.staff_id, site_id)).fetchone()
    return row is not None


def check_step(conn: psycopg.Connection, user: Principal, order: WorkOrder, to_state: str) -> None:
    """403 unless this caller may take the order to `to_state` (the state machine is checked later)."""
    if to_state in ASSIGNEE_STEPS:
        if user.staff_id is None:
            raise forbidden("your user is not linked to a staff member (hub users add --staff)")
        if order.assignee != user.staff_id:
            raise forbidden(f"only the assignee may {ASSIGNEE_STEPS[to_state]} this order")
        return
    desk = user.role in DESK_ROLES or is_supervisor(conn, user, order.site_id)
    if to_state in ("verified", "cancelled") and desk:
        return
    own = user.staff_id is not None and user.staff_id == order.assignee
    if to_state == "closed" and (desk or (order.kind == "praise" and own)):
        return
    if to_state == "reopened" and (desk or (user.role is Role.butler and order.kind in RESIDENT_KINDS)):
        return
    if to_state == "assigned" and user.role in DESK_ROLES:
        return
    raise forbidden(f"role {user.role.value} may not move this order to {to_state}")


def step(conn: psycopg.Connection, user: Principal, order_id: int, to_state: str, *, ip: str,
         note: str | None = None, override_reason: str | None = None, assignee: str | None = None) -> WorkOrder:
    with conn.transaction():
        order = load_visible(conn, user, order_id, lock=True)
        check_step(conn, user, order, to_state)
        if to_state in IDEMPOTENT_STEPS and order.state == to_state:
            return order
        return workorders.transition(conn, order_id, to_state, user.username, origin_of(ip), note, override_reason,
                                     assignee=assignee)


def update(conn: psycopg.Connection, user: Principal, order_id: int, changes: dict[str, str | None], *,
           ip: str) -> WorkOrder:
    """Edit an order's descriptive fields (not its state, priority or assignee), audited before/after."""
    with conn.transaction():
        order = load_visible(conn, user, order_id, lock=True)
        if order.state in FINAL_STATES:
            raise ApiError(409, "conflict", f"the order is {order.state}; reopen it to change it")
        changes = {k: v for k, v in changes.items() if getattr(order, k) != v}
        if not changes:
            return order
        store.update_order(conn, order_id, changes)
        store.audit(conn, actor=user.username, origin=origin_of(ip), action="work_order.update",
                    target=f"work_order:{order_id}", before={k: getattr(order, k) for k in changes}, after=changes)
        return store.fetch_order(conn, order_id)


@dataclass(frozen=True)
class NewOrder:
    site_id: str
    kind: str
    title: str
    priority: str | None = None
    description: str | None = None
    device_id: int | None = None
    building_id: str | None = None
    grid_id: str | None = None
    location: str | None = None
    reporter: str | None = None
    skill: str | None = None


def create(conn: psycopg.Connection, user: Principal, new: NewOrder, *, ip: str) -> WorkOrder:
    return workorders.create_order(
        conn, site_id=new.site_id, kind=new.kind, title=new.title, actor=user.username, origin=origin_of(ip),
        priority=new.priority, description=new.description, device_id=new.device_id, building_id=new.building_id,
        grid_id=new.grid_id, location=new.location, reporter=new.reporter, skill=new.skill)


def add_evidence(conn: psycopg.Connection, user: Principal, order_id: int, *, kind: str, ref: str | None,
                 note: str | None, ip: str) -> dict[str, Any]:
    with conn.transaction():
        load_visible(conn, user, order_id, lock=True)
        evidence_id = workorders.add_evidence(conn, order_id, kind=kind, ref=ref, note=note, actor=user.username,
                                              origin=origin_of(ip))
        row = conn.execute("SELECT id, at, actor, kind, ref, note FROM work_order_evidence WHERE id = %s",
                           (evidence_id,)).fetchone()
        assert row is not None
        return dict(zip(("id", "at", "actor", "kind", "ref", "note"), row, strict=True))


def rate(conn: psycopg.Connection, user: Principal, order_id: int, *, rating: int, comment: str | None,
         ip: str) -> WorkOrder:
    with conn.transaction():
        order = load_visible(conn, user, order_id, lock=True)
        if order.kind not in RESIDENT_KINDS:
            raise ApiError(422, "not_rateable",
                           f"only resident-raised orders ({', '.join(sorted(RESIDENT_KINDS))}) take a rating; "
                           f"this one is {order.kind}")
        return workorders.rate_order(conn, order_id, rating=rating, comment=comment, actor=user.username,
                                     origin=origin_of(ip))


def detail(conn: psycopg.Connection, user: Principal, order_id: int) -> tuple[WorkOrder, list[Any], list[dict[str, Any]]]:
    order = load_visible(conn, user, order_id)
    return order, store.transitions_of(conn, order_id), workorders.evidence_of(conn, order_id)


# ---- attendance ------------------------------------------------------------------------------

def _staff_visible(conn: psycopg.Connection, user: Principal, staff_id: str) -> None:
    """404 unless the staff member exists and works at one of the caller's sites (or is the caller)."""
    row = conn.execute("SELECT sites FROM staff WHERE id = %s AND active", (staff_id,)).fetchone()
    if row is None or not (staff_id == user.staff_id or any(user.sees(s) for s in row[0])):
        raise not_found("staff member")


def check_attendance_access(conn: psycopg.Connection, user: Principal, staff_id: str) -> None:
    """Everyone may record and read their own attendance; admins and operators anyone's in scope."""
    if staff_id != user.staff_id and user.role not in DESK_ROLES:
        raise forbidden("you may only check yourself in and out")
    _staff_visible(conn, user, staff_id)


def attend(conn: psycopg.Connection, user: Principal, staff_id: str, kind: str, *, site_id: str,
           at: datetime | None, ip: str) -> dict[str, Any]:
    with conn.transaction():
        check_attendance_access(conn, user, staff_id)
        if not user.sees(site_id):
            raise forbidden("site outside your scope")
        record = workorders.check_in if kind == "in" else workorders.check_out
        record_id = record(conn, staff_id, site_id, actor=user.username, origin=origin_of(ip), at=at)
        row = conn.execute("SELECT id, staff_id, site_id, kind, at, source FROM attendance WHERE id = %s",
                           (record_id,)).fetchone()
        assert row is not None
        return dict(zip(("id", "staff_id", "site_id", "kind", "at", "source"), row, strict=True))


def attendance_log(conn: psycopg.Connection, user: Principal, staff_id: str, *, since: datetime,
                   until: datetime | None) -> list[dict[str, Any]]:
    check_attendance_access(conn, user, staff_id)
    return [r for r in workorders.attendance_log(conn, staff_id, since=since, until=until)
            if user.sees(r["site_id"]) or staff_id == user.staff_id]


def record_leave(conn: psycopg.Connection, user: Principal, staff_id: str, *, starts_at: datetime, ends_at: datetime,
                 reason: str | None, ip: str) -> dict[str, Any]:
    with conn.transaction():
        _staff_visible(conn, user, staff_id)
        leave_id = workorders.add_leave(conn, staff_id, starts_at=starts_at, ends_at=ends_at, actor=user.username,
                                        origin=origin_of(ip), reason=reason)
        return next(r for r in workorders.leaves(conn, staff_id) if r["id"] == leave_id)


def leave_list(conn: psycopg.Connection, user: Principal, staff_id: str) -> list[dict[str, Any]]:
    check_attendance_access(conn, user, staff_id)
    return workorders.leaves(conn, staff_id, include_cancelled=True)


def cancel_leave(conn: psycopg.Connection, user: Principal, leave_id: int, *, ip: str) -> None:
    with conn.transaction():
        row = conn.execute("SELECT staff_id FROM staff_leave WHERE id = %s FOR UPDATE", (leave_id,)).fetchone()
        if row is None:
            raise not_found("leave")
        try:
            _staff_visible(conn, user, row[0])
        except ApiError:
            raise not_found("leave") from None
        workorders.cancel_leave(conn, leave_id, actor=user.username, origin=origin_of(ip))


def shown_target(channel: str, target: str) -> str:
    """MQTT topics as they are; webhook URLs only as scheme://host (their paths may carry tokens)."""
    if channel != "webhook":
        return target
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.hostname or ''}"


def notifications(conn: psycopg.Connection, user: Principal, order_id: int) -> list[dict[str, Any]]:
    load_visible(conn, user, order_id)
    return [{**n, "target": shown_target(n["channel"], n["target"])} for n in workorders.delivery_status(conn, order_id)]
