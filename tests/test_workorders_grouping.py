"""One incident, one order, over a real database with the packaged policy: no order for an alarm
grouped under a root cause that is up; `hold` waits before dispatching a likely symptom (and
then only if it is still ungrouped); a child its root left up when clearing gets its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from hub.dispatch.engine import dispatch_alarm, dispatch_missed
from hub.dispatch.policy import load_policy
from hub.workorders import ManualClock
from rules import alarms
from tests.workorders_support import clear_alarm, raise_alarm, seed

MON_10 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)   # Monday 10:00 in Shanghai: day shifts on
POLICY = load_policy()
SYMPTOMS = ["elevator_fault", "alarm_button", "stopped_outside_door_zone"]


@pytest.fixture
def db(fresh_db_url):
    ids = seed(fresh_db_url)
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        yield conn, ids


def _orders(conn: psycopg.Connection) -> dict[int, tuple[Any, ...]]:
    """alarm id → (policy rule, priority, sla_start, accept_due, assignee) of every order."""
    rows = conn.execute("SELECT alarm_id, policy_rule, priority, sla_start, accept_due, assignee FROM work_orders").fetchall()
    return {r[0]: r[1:] for r in rows}


def _lift_alarm(conn: psycopg.Connection, pk: int, kind: str, at: datetime, *, code: str = "",
                parent: int | None = None) -> int:
    severity = {"entrapment": "critical", "elevator_fault": "critical"}.get(kind, "major")
    scope = f"demo/el-b1-1{'#' + code if code else ''}"
    return raise_alarm(conn, pk, raised_at=at, kind=kind, severity=severity, rule_id=f"test.{kind}", scope=scope,
                       parent=parent)


def test_no_order_for_an_alarm_under_a_root_cause_that_is_up(db):
    conn, ids = db
    lift = ids[("demo", "el-b1-1")]
    root = _lift_alarm(conn, lift, "entrapment", MON_10)
    child = _lift_alarm(conn, lift, "stopped_outside_door_zone", MON_10 + timedelta(seconds=25), parent=root)
    clock = ManualClock(MON_10 + timedelta(minutes=1))
    assert dispatch_alarm(conn, child, policy=POLICY, clock=clock) is None
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 1
    assert list(_orders(conn)) == [root]
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 0     # and the sweep leaves the child alone
    # The same kind, ungrouped (another lift, nobody inside): an order of its own at once.
    other = raise_alarm(conn, ids[("demo", "el-b2-1")], raised_at=MON_10, kind="stopped_outside_door_zone",
                        severity="major", rule_id="test.outside")
    assert dispatch_alarm(conn, other, policy=POLICY, clock=clock) is not None
    assert _orders(conn)[other][:2] == ("equipment-major", "p2")


def test_a_held_alarm_is_dispatched_by_the_sweep_once_old_enough(db):
    conn, ids = db
    button = _lift_alarm(conn, ids[("demo", "el-b1-1")], "alarm_button", MON_10, code="90")
    clear_alarm(conn, button, at=MON_10)     # momentary: cleared_unack, open until acknowledged
    clock = ManualClock(MON_10 + timedelta(seconds=10))
    assert dispatch_alarm(conn, button, policy=POLICY, clock=clock) is None
    clock.set(MON_10 + timedelta(seconds=29, microseconds=999_000))
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 0
    assert _orders(conn) == {}
    clock.set(MON_10 + timedelta(seconds=30))
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 1
    # Nobody trapped as far as the hub knows, but someone pressed the button: the contractor goes.
    # The clocks run from the press: the hold does not extend the SLA.
    assert _orders(conn)[button] == ("elevator-alarm-button", "p1", MON_10, MON_10 + timedelta(minutes=5), "lift-co")


def test_the_entrapment_sequence_opens_one_order_and_a_lone_fault_still_gets_its_own(db):
    conn, ids = db
    lift = ids[("demo", "el-b1-1")]
    clock = ManualClock(MON_10)
    # The terminal's safety circuit and the alarm button come first …
    fault = _lift_alarm(conn, lift, "elevator_fault", MON_10, code="01")
    button = _lift_alarm(conn, lift, "alarm_button", MON_10 + timedelta(seconds=1), code="90")
    clear_alarm(conn, button, at=MON_10 + timedelta(seconds=1))
    lone = raise_alarm(conn, ids[("demo", "el-b2-1")], raised_at=MON_10, kind="elevator_fault", severity="critical",
                       rule_id="test.elevator_fault", scope="demo/el-b2-1#01")
    for alarm in (fault, button, lone):
        assert dispatch_alarm(conn, alarm, policy=POLICY, clock=clock) is None   # held
    # … the entrapment 20 s later adopts them (what the rules store does when it writes the root).
    clock.set(MON_10 + timedelta(seconds=20))
    root = _lift_alarm(conn, lift, "entrapment", MON_10 + timedelta(seconds=20))
    adopted = alarms.adopt_symptoms(conn, root_id=root, device_id=lift, scope_key="demo/el-b1-1", kinds=SYMPTOMS,
                                    since=MON_10 + timedelta(seconds=20) - timedelta(minutes=2))
    assert adopted == sorted([fault, button])
    assert dispatch_alarm(conn, root, policy=POLICY, clock=clock) is not None
    clock.set(MON_10 + timedelta(minutes=3))
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 1           # the lone fault only
    orders = _orders(conn)
    assert set(orders) == {root, lone}
    assert orders[root][:2] == ("entrapment", "p1") and orders[lone][:2] == ("elevator-fault-critical", "p1")
    assert orders[lone][2] == MON_10


def test_a_child_its_root_left_up_becomes_an_incident_of_its_own(db):
    conn, ids = db
    lift = ids[("demo", "el-b1-1")]
    clock = ManualClock(MON_10)
    root = _lift_alarm(conn, lift, "entrapment", MON_10)
    fault = _lift_alarm(conn, lift, "elevator_fault", MON_10, code="01", parent=root)
    button = _lift_alarm(conn, lift, "alarm_button", MON_10, code="90", parent=root)
    clear_alarm(conn, button, at=MON_10)
    outside = _lift_alarm(conn, lift, "stopped_outside_door_zone", MON_10 + timedelta(seconds=45), parent=root)
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 1
    clock.set(MON_10 + timedelta(minutes=9))
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 0
    # The rescue: the car moves (outside the door zone clears), then level with doors open
    # (the entrapment clears). The safety circuit stays open: the lift still needs a technician.
    rescued = MON_10 + timedelta(minutes=10)
    clear_alarm(conn, outside, at=rescued - timedelta(seconds=30))
    clear_alarm(conn, root, at=rescued)
    clock.set(rescued + timedelta(seconds=5))
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 1
    orders = _orders(conn)
    assert set(orders) == {root, fault}
    # Its clocks start when it became an incident of its own, not when it was raised 10 min ago
    # (which would breach the 5 min accept at once).
    assert orders[fault][:4] == ("elevator-fault-critical", "p1", rescued, rescued + timedelta(minutes=5))
    # The children that recovered with their root stay covered by the root's order.
    assert dispatch_alarm(conn, button, policy=POLICY, clock=clock) is None
    assert dispatch_alarm(conn, outside, policy=POLICY, clock=clock) is None
    assert dispatch_missed(conn, policy=POLICY, clock=clock) == 0
