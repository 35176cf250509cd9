"""Dispatch: alarms → work orders → the right person, and the SLA clocks that follow them.

Every function takes a psycopg connection and runs in one transaction of its own, so two
dispatchers working on the same alarm cannot create two orders (the unique index on
`work_orders.alarm_id` decides) and two assignments in one site cannot both pick the same
"least loaded" person (a per-site advisory lock serialises them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from hub.dispatch import outbox
from hub.dispatch.policy import Policy, Sla, Step
from hub.dispatch.roster import (
    Candidate,
    Choice,
    Need,
    ShiftRule,
    attendance_state,
    choose_assignee,
    on_shift,
)
from hub.workorders import store
from hub.workorders.clock import SYSTEM_CLOCK, Clock
from hub.workorders.model import OPEN_STATES, Transition, WorkOrder

log = logging.getLogger(__name__)
ACTOR = "dispatch"


# -- pure helpers --------------------------------------------------------------------------
def sla_dues(start: datetime, sla: Sla) -> dict[str, datetime | None]:
    return {
        "accept_due": start + sla.accept if sla.accept else None,
        "arrive_due": start + sla.arrive if sla.arrive else None,
        "resolve_due": start + sla.resolve if sla.resolve else None,
    }


def running_clocks(order: WorkOrder) -> dict[str, datetime]:
    """Clocks still ticking: accept until accepted, arrive until on site, resolve until resolved."""
    if order.state not in OPEN_STATES:
        return {}
    clocks: dict[str, datetime] = {}
    if order.accept_due and order.accepted_at is None:
        clocks["accept"] = order.accept_due
    if order.arrive_due and order.on_site_at is None:
        clocks["arrive"] = order.arrive_due
    if order.resolve_due and order.resolved_at is None:
        clocks["resolve"] = order.resolve_due
    return clocks


@dataclass(frozen=True, slots=True)
class DueStep:
    clock: str
    index: int
    step: Step
    due: datetime


def due_steps(order: WorkOrder, steps: list[Step], now: datetime, done: set[tuple[str, int]]) -> list[DueStep]:
    """Steps whose time has come and that were not taken yet; a reminder after the due is moot."""
    out = []
    for clock, due in running_clocks(order).items():
        for i, step in enumerate(steps):
            if clock not in step.clocks or (clock, i) in done or now < due + step.at:
                continue
            if step.action == "reminder" and now >= due:
                continue
            out.append(DueStep(clock, i, step, due))
    return out


# -- the roster at one instant ---------------------------------------------------------------
def site_timezone(conn: psycopg.Connection, site_id: str) -> ZoneInfo:
    row = conn.execute("SELECT timezone FROM sites WHERE id = %s", (site_id,)).fetchone()
    return ZoneInfo(row[0] if row else "UTC")


def load_candidates(conn: psycopg.Connection, site_id: str, at: datetime, *, attendance_valid: timedelta) -> list[Candidate]:
    """Everyone of the site, with shift, attendance, leave and load as of `at`."""
    tz = site_timezone(conn, site_id)
    shifts: dict[str, list[ShiftRule]] = {}
    for staff_id, days, start, end in conn.execute(
            "SELECT staff_id, days, start_time, end_time FROM shifts WHERE site_id = %s", (site_id,)):
        shifts.setdefault(staff_id, []).append(ShiftRule(tuple(days), start, end))
    rows = conn.execute(
        """SELECT s.id, s.role, s.grids, s.skills, s.supervisor, att.kind, att.at,
                  EXISTS (SELECT 1 FROM staff_leave l WHERE l.staff_id = s.id AND l.cancelled_at IS NULL
                            AND l.starts_at <= %(at)s AND l.ends_at > %(at)s),
                  (SELECT count(*) FROM work_orders w WHERE w.assignee = s.id
                            AND w.state = ANY(%(open)s))
             FROM staff s
             LEFT JOIN LATERAL (SELECT a.kind, a.at FROM attendance a
                                 WHERE a.staff_id = s.id AND a.site_id = %(site)s AND a.at <= %(at)s
                                 ORDER BY a.at DESC, a.id DESC LIMIT 1) att ON true
            WHERE s.active AND %(site)s = ANY(s.sites)""",
        {"site": site_id, "at": at, "open": sorted(OPEN_STATES)},
    ).fetchall()
    out = []
    for sid, role, grids, skills, supervisor, att_kind, att_at, on_leave, load in rows:
        covering = [s for s in shifts.get(sid, []) if on_shift(s, tz, at)]
        out.append(Candidate(
            staff_id=sid, role=role, grids=tuple(grids), skills=tuple(skills), supervisor=supervisor,
            shifts=tuple(s.text() for s in covering), on_shift=bool(covering),
            attendance=attendance_state(att_kind, att_at, at, attendance_valid),
            on_leave=bool(on_leave), open_orders=int(load)))
    return out


def _lock_site(conn: psycopg.Connection, site_id: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"hub-dispatch:{site_id}",))


def need_for(order: WorkOrder, policy: Policy) -> Need:
    roles: list[str] | None = None
    if order.kind == "alarm" and order.policy_rule:
        rule = next((r for r in policy.alarms if r.id == order.policy_rule), None)
        roles = list(rule.assign_to) if rule else None
    elif order.kind == "maintenance" and order.policy_rule:
        sched = next((m for m in policy.maintenance if m.id == order.policy_rule), None)
        roles = list(sched.assign_to) if sched else None
    if roles is None:
        roles = list(policy.request(order.kind).assign_to)
    return Need(tuple(roles), order.skill, order.grid_id)


def steps_for(order: WorkOrder, policy: Policy) -> list[Step]:
    own: list[Step] | None = None
    if order.kind == "alarm" and order.policy_rule:
        rule = next((r for r in policy.alarms if r.id == order.policy_rule), None)
        own = rule.escalation if rule else None
    elif order.kind != "maintenance":
        own = policy.request(order.kind).escalation
    return policy.steps(own)


# -- assignment --------------------------------------------------------------------------------
def assign_order(conn: psycopg.Connection, order_id: int, *, policy: Policy, clock: Clock = SYSTEM_CLOCK,
                 actor: str = ACTOR, origin: str = "dispatch", first: bool = False) -> Choice:
    """Choose the assignee by the roster rule and record it (state → assigned), in the caller's
    transaction. With nobody to choose the order stays unassigned and, on `first`, the operators
    are told."""
    order = store.fetch_order(conn, order_id, lock=True)
    _lock_site(conn, order.site_id)
    now = clock.now()
    choice = choose_assignee(load_candidates(conn, order.site_id, now, attendance_valid=policy.attendance_valid),
                             need_for(order, policy))
    if choice.staff_id is None:
        store.update_order(conn, order_id, {"assigned_reason": choice.reason,
                                            "assignment": {"considered": choice.considered}})
        if first:
            order = store.fetch_order(conn, order_id)
            outbox.enqueue(conn, order, "unassigned", operators(conn, order.site_id, policy),
                           policy=policy, message=choice.reason)
        return choice
    store.update_order(conn, order_id, {
        "state": "assigned", "assignee": choice.staff_id, "assigned_at": now,
        "assigned_reason": choice.reason,
        "assignment": {"role": choice.role, "considered": choice.considered},
    })
    store.record_transition(conn, Transition(
        order_id=order_id, at=now, from_state=order.state, to_state="assigned", actor=actor,
        origin=origin, assignee=choice.staff_id, note=choice.reason, override_reason=None))
    store.audit(conn, actor=actor, origin=origin, action="work_order.assign", target=f"work_order:{order_id}",
                before={"state": order.state, "assignee": order.assignee},
                after={"state": "assigned", "assignee": choice.staff_id, "reason": choice.reason}, at=now)
    assigned = store.fetch_order(conn, order_id)
    outbox.enqueue(conn, assigned, "assigned", [choice.staff_id], policy=policy, message=choice.reason)
    return choice


def operators(conn: psycopg.Connection, site_id: str, policy: Policy) -> list[str]:
    """E-control staff to notify: the policy's list, else every active operator of the site."""
    if policy.operators:
        return list(policy.operators)
    rows = conn.execute("SELECT id FROM staff WHERE active AND role = 'operator' AND %s = ANY(sites) ORDER BY id",
                        (site_id,)).fetchall()
    return [r[0] for r in rows]


def supervisors_of(conn: psycopg.Connection, order: WorkOrder) -> list[str]:
    if order.assignee:
        row = conn.execute("SELECT supervisor, role FROM staff WHERE id = %s", (order.assignee,)).fetchone()
        if row and row[0]:
            return [row[0]]
    rows = conn.execute("SELECT id FROM staff WHERE active AND role = 'supervisor' AND %s = ANY(sites) ORDER BY id",
                        (order.site_id,)).fetchall()
    return [r[0] for r in rows if r[0] != order.assignee]


def _targets(conn: psycopg.Connection, order: WorkOrder, names: list[str], policy: Policy) -> list[str]:
    people: list[str] = []
    for name in names:
        if name == "assignee" and order.assignee:
            people.append(order.assignee)
        elif name == "supervisor":
            people.extend(supervisors_of(conn, order))
        elif name == "operator":
            people.extend(operators(conn, order.site_id, policy))
        elif name.startswith("staff:"):
            people.append(name.removeprefix("staff:"))
    return sorted(set(people))


# -- alarms → orders -------------------------------------------------------------------------------
# An alarm is an incident of its own unless it is grouped under a root cause (parent_id) that is
# still up: the root's order covers it. A child whose root has cleared while it is still up (a
# lift's safety circuit still open after the rescue) is an incident of its own again; one that
# recovered with its root stays covered. `a` is the alarm, `p` its parent (LEFT JOIN).
_OWN_INCIDENT = psycopg.sql.SQL("(a.parent_id IS NULL OR (p.cleared_at IS NOT NULL AND a.cleared_at IS NULL))")

_ALARM_SQL = psycopg.sql.SQL("""
SELECT a.id, a.rule_id, a.site_id, a.device_id, a.kind, a.severity, a.state, a.title, a.raised_at,
       a.closed_at, d.kind, d.grid_id, d.building_id, d.name, d.device_id, d.floor, d.zone,
       {own}, p.cleared_at
  FROM alarms a LEFT JOIN devices d ON d.id = a.device_id LEFT JOIN alarms p ON p.id = a.parent_id
 WHERE a.id = %s""").format(own=_OWN_INCIDENT)

_OWN_SQL = psycopg.sql.SQL("SELECT {own} FROM alarms a LEFT JOIN alarms p ON p.id = a.parent_id WHERE a.id = %s").format(
    own=_OWN_INCIDENT)


def dispatch_alarm(conn: psycopg.Connection, alarm_id: int, *, policy: Policy, clock: Clock = SYSTEM_CLOCK) -> int | None:
    """Open the alarm's work order if a rule asks for one and none exists yet; returns its id.

    None also for an alarm grouped under a root cause that is still up, and for one its rule
    holds (`hold`) that is younger than the hold: the sweep (`dispatch_missed`) looks again.
    Safe to call any number of times from any number of workers: at most one order results.
    """
    with conn.transaction():
        row = conn.execute(_ALARM_SQL, (alarm_id,)).fetchone()
        if row is None:
            return None
        (aid, rule_id, site_id, device, kind, severity, state, title, raised_at, closed_at,
         device_kind, grid, building, device_name, device_key, floor, zone, own, root_cleared_at) = row
        if closed_at is not None or state == "shelved" or not own:
            return None
        rule = policy.match_alarm(kind=kind, rule_id=rule_id, severity=severity, device_kind=device_kind)
        if rule is None:
            return None
        now = clock.now()
        if rule.hold is not None:
            if now < raised_at + rule.hold:
                return None
            # Its root cause may be adopting it at this very moment: wait for that to commit
            # (the lock) and look again, so a held alarm never gets an order and a parent at once.
            conn.execute("SELECT 1 FROM alarms WHERE id = %s FOR SHARE", (aid,))
            again = conn.execute(_OWN_SQL, (aid,)).fetchone()
            if again is None or not again[0]:
                return None
        # The clock starts when the alarm became an incident of its own: when raised, or for a
        # child left up by its root, when the root cleared (its SLA was not running before).
        start = max(raised_at, root_cleared_at) if root_cleared_at is not None else raised_at
        sla = policy.sla_for(rule.priority, rule.sla)
        where = ", ".join(str(p) for p in (device_name or device_key, f"floor {floor}" if floor is not None else None,
                                            zone) if p)
        order_id = store.insert_order(conn, {
            "site_id": site_id, "kind": "alarm", "priority": rule.priority, "state": "created",
            "title": title, "alarm_id": aid, "policy_rule": rule.id,
            "skill": rule.skill or policy.skill_for(device_kind), "device_id": device,
            "building_id": building, "grid_id": grid, "location": where or None,
            "sla_start": start, "created_at": now, **sla_dues(start, sla),
        }, on_conflict_nothing=True)
        if order_id is None:
            return None
        store.record_transition(conn, Transition(
            order_id=order_id, at=now, from_state=None, to_state="created", actor=ACTOR, origin=f"alarm:{aid}",
            assignee=None, note=f"rule {rule.id} matched alarm {aid} ({kind}, {severity})", override_reason=None))
        store.audit(conn, actor=ACTOR, origin=f"alarm:{aid}", action="work_order.create",
                    target=f"work_order:{order_id}", after={"alarm_id": aid, "rule": rule.id}, at=now)
        assign_order(conn, order_id, policy=policy, clock=clock, origin=f"alarm:{aid}", first=True)
        return order_id


def alarm_changed(conn: psycopg.Connection, alarm_id: int, *, policy: Policy) -> int:
    """Tell the assignee when the alarm behind an open order clears (they may now resolve it)."""
    with conn.transaction():
        row = conn.execute(
            """SELECT w.id FROM work_orders w JOIN alarms a ON a.id = w.alarm_id
                WHERE w.alarm_id = %s AND a.cleared_at IS NOT NULL AND w.assignee IS NOT NULL
                  AND w.state = ANY(%s)
                  AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.order_id = w.id
                                    AND n.event = 'alarm_cleared')""",
            (alarm_id, sorted(OPEN_STATES))).fetchone()
        if row is None:
            return 0
        order = store.fetch_order(conn, row[0])
        assert order.assignee is not None
        return len(outbox.enqueue(conn, order, "alarm_cleared", [order.assignee], policy=policy,
                                  message="the alarm has cleared; the order may be resolved"))


# -- the sweep: nothing missed across restarts, SLA steps on time ----------------------------------
@dataclass
class SweepResult:
    orders_opened: int = 0
    assigned: int = 0
    reminders: int = 0
    escalations: int = 0
    planned: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@contextmanager
def _isolated(conn: psycopg.Connection, what: str) -> Iterator[None]:
    """One bad item must not stop the sweep: log it and go on, unless the connection is gone."""
    try:
        yield
    except psycopg.OperationalError:
        raise
    except Exception:
        if conn.broken or conn.closed:
            raise
        log.exception("dispatch sweep: %s failed; will retry next sweep", what)


def dispatch_missed(conn: psycopg.Connection, *, policy: Policy, clock: Clock = SYSTEM_CLOCK, limit: int = 1000) -> int:
    """Open orders for open alarms that have none: raised while no dispatcher listened, held
    until now (`hold`), or left up by a root cause that has cleared."""
    with conn.transaction():
        ids = [r[0] for r in conn.execute(
            psycopg.sql.SQL("""SELECT a.id FROM alarms a LEFT JOIN alarms p ON p.id = a.parent_id
                WHERE a.closed_at IS NULL AND a.state <> 'shelved' AND {own}
                  AND NOT EXISTS (SELECT 1 FROM work_orders w WHERE w.alarm_id = a.id)
                ORDER BY a.raised_at LIMIT %s""").format(own=_OWN_INCIDENT), (limit,))]
    opened = 0
    for aid in ids:
        with _isolated(conn, f"alarm {aid}"):
            opened += dispatch_alarm(conn, aid, policy=policy, clock=clock) is not None
    return opened


def assign_waiting(conn: psycopg.Connection, *, policy: Policy, clock: Clock = SYSTEM_CLOCK) -> int:
    """Retry orders that found nobody, and planned work whose due day has come (site's local day)."""
    now = clock.now()
    with conn.transaction():
        rows = conn.execute(
            """SELECT w.id FROM work_orders w JOIN sites s ON s.id = w.site_id
                WHERE w.state = 'created'
                  AND (w.due_date IS NULL OR w.due_date <= (%s AT TIME ZONE s.timezone)::date)
                ORDER BY w.id""", (now,)).fetchall()
    done = 0
    for (order_id,) in rows:
        with _isolated(conn, f"assigning order {order_id}"), conn.transaction():
            if store.fetch_order(conn, order_id, lock=True).state != "created":
                continue
            first = conn.execute("SELECT assigned_reason IS NULL FROM work_orders WHERE id = %s",
                                 (order_id,)).fetchone()
            choice = assign_order(conn, order_id, policy=policy, clock=clock, first=bool(first and first[0]))
            done += choice.staff_id is not None
    return done


def sla_check(conn: psycopg.Connection, *, policy: Policy, clock: Clock = SYSTEM_CLOCK) -> tuple[int, int]:
    """Send reminders and escalations that are due; each (order, clock, step) happens once."""
    now = clock.now()
    reminders = escalations = 0
    with conn.transaction():
        orders = store.fetch_orders(conn, psycopg.sql.SQL(
            """state = ANY(%s) AND least(CASE WHEN accepted_at IS NULL THEN accept_due END,
                                         CASE WHEN on_site_at IS NULL THEN arrive_due END,
                                         CASE WHEN resolved_at IS NULL THEN resolve_due END) <= %s"""),
            (sorted(OPEN_STATES), now + _max_lead(policy)))
    for order in orders:
        steps = steps_for(order, policy)
        with _isolated(conn, f"SLA steps of order {order.id}"), conn.transaction():
            done = {(c, s) for c, s in conn.execute(
                "SELECT clock, step FROM work_order_sla_events WHERE order_id = %s", (order.id,))}
            for due in due_steps(order, steps, now, done):
                targets = _targets(conn, order, list(due.step.notify), policy)
                inserted = conn.execute(
                    """INSERT INTO work_order_sla_events (order_id, clock, step, action, at, due, targets)
                       VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1""",
                    (order.id, due.clock, due.index, due.step.action, now, due.due, targets)).fetchone()
                if inserted is None:
                    continue  # another sweeper took this step
                late = now - due.due
                if due.step.action == "reminder":
                    reminders += 1
                    msg = f"{due.clock} due at {due.due.isoformat()} (in {-late})"
                else:
                    escalations += 1
                    msg = f"{due.clock} SLA breached at {due.due.isoformat()} ({late} late)"
                    store.update_order(conn, order.id, {"escalation_level": max(order.escalation_level, due.index + 1)})
                    store.audit(conn, actor="sla", origin="dispatch", action="work_order.escalate",
                                target=f"work_order:{order.id}",
                                after={"clock": due.clock, "step": due.index, "targets": targets}, at=now)
                outbox.enqueue(conn, order, due.step.action, targets, policy=policy, message=msg,
                               extra={"clock": due.clock, "step": due.index})
    return reminders, escalations


def _max_lead(policy: Policy) -> timedelta:
    leads = [-s.at for s in policy.escalation if s.at < timedelta(0)]
    for rule in policy.alarms:
        leads += [-s.at for s in (rule.escalation or []) if s.at < timedelta(0)]
    for req in policy.requests.values():
        leads += [-s.at for s in (req.escalation or []) if s.at < timedelta(0)]
    return max(leads, default=timedelta(0))


def sweep(conn: psycopg.Connection, *, policy: Policy, clock: Clock = SYSTEM_CLOCK, planned: bool = True) -> SweepResult:
    from hub.dispatch.maintenance import generate_planned

    result = SweepResult()
    result.orders_opened = dispatch_missed(conn, policy=policy, clock=clock)
    if planned:
        result.planned = generate_planned(conn, policy=policy, clock=clock)
    result.assigned = assign_waiting(conn, policy=policy, clock=clock)
    result.reminders, result.escalations = sla_check(conn, policy=policy, clock=clock)
    return result
