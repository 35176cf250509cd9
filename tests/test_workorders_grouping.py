"""One incident, one order, over a real database with the packaged policy: no order for an alarm
grouped under a root cause that is up; `hold` waits before dispatching a likely symptom (and
then only if it is still ungrouped); a child its root left up when clearing gets its own; and a
building power loss, through the rule engine with the default rules, is one order however the
devices' offline alarms and the parent's grouping interleave."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from hub.dispatch.engine import dispatch_alarm, dispatch_missed
from hub.dispatch.policy import load_policy
from hub.registry import load_registry
from hub.workorders import ManualClock
from rules import alarms
from rules.devices import device_metas
from rules.engine import Engine, Rows
from rules.model import load_rules
from rules.store import apply_actions
from tests.support import ROOT
from tests.workorders_support import DEMO, clear_alarm, raise_alarm, seed

MON_10 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)   # Monday 10:00 in Shanghai: day shifts on
POLICY = load_policy()
SYMPTOMS = ["elevator_fault", "alarm_button", "stopped_outside_door_zone"]
DEFAULT_RULES = ROOT / "examples" / "rules"


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


def _offline_rule() -> Any:
    [rule] = [r for r in load_rules(DEFAULT_RULES).rules if r.alarm_kind == "device_offline"]
    return rule


def test_the_offline_hold_outlasts_the_power_loss_grouping_window():
    """The parent comes at most `window` after the first offline alarm it adopts (each alarm is
    raised `for` after its device went offline, the parent with the last of `min_devices`
    offline within `window`): the hold must be longer, with room for the hub's latency."""
    rule = _offline_rule()
    assert rule.group is not None and (rule.group.alarm, rule.group.min_devices, rule.group.window) == (
        "building_power_loss", 3, 120.0)
    for severity in ("critical", "major"):
        found = POLICY.match_alarm(kind="device_offline", rule_id=rule.id, severity=severity, device_kind="gate")
        assert found is not None and found.hold is not None
        assert found.hold >= timedelta(seconds=rule.group.window + 30), found


def test_a_power_loss_is_one_order_and_a_lone_offline_device_gets_its_own_after_the_hold(db):
    """The default rules in the rule engine, its actions written by the rules store, dispatch's
    sweep every 5 s on the same clock (as `DispatchComponent` runs it; a raise is also dispatched
    at once on its notification, which the sweep right after it stands for).

    Building 1: lift A offline at 0 s, lift B at 5 s, the north gate at 120 s (within the 2 min
    window of lift A). The lifts' own alarms are raised at 60 and 65 s, alone; the gate's 60 s at
    180 s make three: the `building_power_loss` parent is raised then and adopts the lifts'
    alarms (the gate's is represented by the parent and raises none). Building 2: the lobby door
    offline at 0 s, nothing else: its alarm (60 s) gets its order once the 150 s hold is over."""
    conn, ids = db
    ruleset = load_rules(DEFAULT_RULES)
    engine = Engine(ruleset, device_metas(load_registry(DEMO), ids))
    lift_a, lift_b, gate, door = (ids[("demo", d)] for d in ("el-b1-1", "el-b1-2", "gate-north", "door-b2-lobby"))
    t0 = MON_10.timestamp()
    status = [(0.0, lift_a, "offline"), (0.0, door, "offline"), (5.0, lift_b, "offline"), (120.0, gate, "offline"),
              (400.0, lift_a, "online"), (400.0, lift_b, "online"), (400.0, gate, "online"), (400.0, door, "online")]
    clock = ManualClock(MON_10)
    first_order: dict[int, float] = {}

    def alarm_of(device: int) -> tuple[int, int | None]:
        row = conn.execute("SELECT id, parent_id FROM alarms WHERE kind = 'device_offline' AND device_id = %s",
                           (device,)).fetchone()
        assert row is not None, f"no offline alarm for device {device}"
        return row

    done = -1.0
    for step in range(0, 121):        # 0 … 600 s, every 5 s
        t = step * 5.0
        events = [(t0 + at, d, code, None) for at, d, code in status if done < at <= t]
        actions = engine.feed(Rows.empty(), events) if events else []
        apply_actions(conn, actions + engine.advance(t0 + t), ruleset=ruleset)
        done = t
        clock.set(MON_10 + timedelta(seconds=t))
        dispatch_missed(conn, policy=POLICY, clock=clock)
        for alarm_id in _orders(conn):
            first_order.setdefault(alarm_id, t)
        if t == 175:   # the lifts' alarms are up, alone, and held: no order yet
            assert alarm_of(lift_a)[1] is None and alarm_of(lift_b)[1] is None and first_order == {}

    [(parent, parent_raised)] = conn.execute(
        "SELECT id, raised_at FROM alarms WHERE kind = 'building_power_loss' AND scope_key = 'demo/building:b1'").fetchall()
    assert parent_raised == MON_10 + timedelta(seconds=180)
    assert alarm_of(lift_a)[1] == parent and alarm_of(lift_b)[1] == parent     # adopted
    assert conn.execute("SELECT count(*) FROM alarms WHERE device_id = %s AND kind = 'device_offline'",
                        (gate,)).fetchone() == (0,)                             # represented by the parent
    lone, lone_parent = alarm_of(door)
    assert lone_parent is None
    orders = _orders(conn)
    # One order for the building (dispatched at the first sweep after the parent), one for the
    # door once its hold had passed (raised at 60 s: held until 210 s), none for the lifts, also
    # after the power came back (400 s) and everything cleared.
    assert set(orders) == {parent, lone}
    assert (orders[parent][:2], first_order[parent]) == (("equipment-critical", "p1"), 180.0)
    lone_raised = MON_10 + timedelta(seconds=60)
    assert orders[lone] == ("device-offline", "p2", lone_raised, lone_raised + timedelta(minutes=15), orders[lone][4])
    assert orders[lone][4] is not None and first_order[lone] == 210.0
    assert conn.execute("SELECT count(*) FROM alarms WHERE closed_at IS NULL AND cleared_at IS NULL").fetchone() == (0,)
