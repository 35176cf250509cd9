"""Work orders over a real database: states, audit, closure rule, evidence, rating, dispatch rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hub.dispatch.engine import dispatch_alarm, sla_check
from hub.dispatch.policy import load_policy
from hub.workorders import (
    BadInput,
    ClosureRefused,
    InvalidTransition,
    ManualClock,
    add_evidence,
    add_leave,
    check_in,
    check_out,
    create_order,
    history,
    on_duty,
    rate_order,
    transition,
)
from tests.workorders_support import clear_alarm, raise_alarm, seed

# Monday 2026-11-23 10:00 in Shanghai: the demo's day shifts are on, sup-li is on duty.
MON_10 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
POLICY = load_policy()


@pytest.fixture
def db(fresh_db_url):
    ids = seed(fresh_db_url)
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        yield conn, ids


def test_repair_goes_to_the_on_shift_butler_of_the_grid_and_every_step_is_recorded(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    order = create_order(conn, site_id="demo", kind="repair", title="Leaking pipe in b3 lobby", actor="resident:r17",
                         origin="app", building_id="b3", reporter="r17", clock=clock)
    assert (order.grid_id, order.assignee, order.state) == ("south", "butler-zhao", "assigned")
    assert "butler of grid south" in (order.assigned_reason or "")
    assert order.accept_due == MON_10 + timedelta(hours=1)  # p3 default SLA
    for state, actor in (("accepted", "butler-zhao"), ("on_site", "butler-zhao"), ("resolved", "butler-zhao"),
                         ("verified", "sup-li"), ("closed", "sup-li")):
        clock.advance(minutes=5)
        order = transition(conn, order.id, state, actor, "app", note=f"{state} note", clock=clock)
    steps = [(t.from_state, t.to_state, t.actor, t.origin) for t in history(conn, order.id)]
    assert steps == [
        (None, "created", "resident:r17", "app"), ("created", "assigned", "dispatch", "app"),
        ("assigned", "accepted", "butler-zhao", "app"), ("accepted", "on_site", "butler-zhao", "app"),
        ("on_site", "resolved", "butler-zhao", "app"), ("resolved", "verified", "sup-li", "app"),
        ("verified", "closed", "sup-li", "app"),
    ]
    audit = conn.execute("SELECT action, actor FROM audit_log WHERE target = %s ORDER BY id",
                         (f"work_order:{order.id}",)).fetchall()
    assert [a for a, _ in audit] == ["work_order.create", "work_order.assign", "work_order.accepted",
                                     "work_order.on_site", "work_order.resolved", "work_order.verified",
                                     "work_order.closed"]
    assert order.closed_at == MON_10 + timedelta(minutes=25)
    with pytest.raises(InvalidTransition, match="cannot go from closed to accepted"):
        transition(conn, order.id, "accepted", "butler-zhao", "app", clock=clock)
    notified = conn.execute("SELECT target, event FROM notifications WHERE order_id = %s ORDER BY id",
                            (order.id,)).fetchall()
    assert notified == [("facility/demo/staff/butler-zhao/notify", "assigned")]


def test_alarm_order_resolves_only_after_the_alarm_clears_or_with_override(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    alarm = raise_alarm(conn, ids[("demo", "el-b1-1")], raised_at=MON_10)
    order_id = dispatch_alarm(conn, alarm, policy=POLICY, clock=clock)
    assert order_id is not None
    for state in ("accepted", "on_site"):
        transition(conn, order_id, state, "lift-co", "app", clock=clock)
    with pytest.raises(ClosureRefused, match=f"alarm {alarm} has not cleared"):
        transition(conn, order_id, "resolved", "lift-co", "app", clock=clock)
    with pytest.raises(ClosureRefused):
        transition(conn, order_id, "resolved", "lift-co", "app", override_reason="   ", clock=clock)
    # With a reason, an operator may resolve anyway (e.g. sensor stuck); the reason is kept.
    done = transition(conn, order_id, "resolved", "sup-li", "api", override_reason="terminal stuck, car checked",
                      clock=clock)
    assert done.override_reason == "terminal stuck, car checked"
    reopened = transition(conn, order_id, "reopened", "sup-li", "api", note="sensor fixed, recheck", clock=clock)
    assert reopened.resolved_at is None and reopened.reopen_count == 1
    transition(conn, order_id, "assigned", "sup-li", "api", assignee="tech-liu", clock=clock)
    transition(conn, order_id, "accepted", "tech-liu", "app", clock=clock)
    transition(conn, order_id, "on_site", "tech-liu", "app", clock=clock)
    clear_alarm(conn, alarm, at=MON_10 + timedelta(minutes=3))
    ok = transition(conn, order_id, "resolved", "tech-liu", "app", clock=clock)
    assert ok.state == "resolved"
    last = history(conn, order_id)[-1]
    assert (last.to_state, last.override_reason) == ("resolved", None)


def test_one_order_per_alarm_and_unmatched_alarms_open_none(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    alarm = raise_alarm(conn, ids[("demo", "el-b1-1")], raised_at=MON_10)
    first = dispatch_alarm(conn, alarm, policy=POLICY, clock=clock)
    assert first is not None
    assert dispatch_alarm(conn, alarm, policy=POLICY, clock=clock) is None
    minor = raise_alarm(conn, ids[("demo", "gate-north")], raised_at=MON_10, kind="door_held_open",
                        severity="minor", rule_id="test.held")
    assert dispatch_alarm(conn, minor, policy=POLICY, clock=clock) is None
    assert conn.execute("SELECT count(*) FROM work_orders").fetchone() == (1,)


def test_entrapment_goes_to_contractor_and_fire_to_fire_technician(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    lift = dispatch_alarm(conn, raise_alarm(conn, ids[("demo", "el-b2-1")], raised_at=MON_10), policy=POLICY, clock=clock)
    fire = dispatch_alarm(conn, raise_alarm(conn, ids[("demo", "smoke-b1-f1")], raised_at=MON_10, kind="fire_confirmed",
                                            rule_id="test.fire"), policy=POLICY, clock=clock)
    rows = dict(conn.execute("SELECT id, assignee FROM work_orders").fetchall())
    assert rows == {lift: "lift-co", fire: "tech-sun"}
    lift_row = conn.execute("SELECT skill, priority, arrive_due, assigned_reason FROM work_orders WHERE id = %s",
                            (lift,)).fetchone()
    assert lift_row[:3] == ("elevator", "p1", MON_10 + timedelta(minutes=30))
    assert "contractor with skill elevator: lift-co" in lift_row[3]


def test_leave_checkout_and_night_roster_change_the_assignee(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    add_leave(conn, "tech-sun", starts_at=MON_10 - timedelta(hours=1), ends_at=MON_10 + timedelta(days=1),
              actor="sup-li", origin="api", reason="sick", clock=clock)
    fire = dispatch_alarm(conn, raise_alarm(conn, ids[("demo", "smoke-b1-f1")], raised_at=MON_10, kind="fire_confirmed",
                                            rule_id="test.fire"), policy=POLICY, clock=clock)
    # tech-sun (the only fire technician) is on leave: the supervisor gets it, with the reason.
    assignee, reason = conn.execute("SELECT assignee, assigned_reason FROM work_orders WHERE id = %s", (fire,)).fetchone()
    assert assignee == "sup-li" and "tech-sun on leave" in reason
    # Night (Mon 21:00 local): the night butler covers both grids; a checked-out butler is skipped.
    night = ManualClock(MON_10 + timedelta(hours=11))
    order = create_order(conn, site_id="demo", kind="complaint", title="Noise", actor="r1", origin="app",
                         building_id="b1", clock=night)
    assert order.assignee == "butler-chen"
    check_out(conn, "butler-chen", "demo", actor="butler-chen", origin="api", clock=night)
    order2 = create_order(conn, site_id="demo", kind="complaint", title="Noise again", actor="r1", origin="app",
                          building_id="b1", clock=night)
    assert order2.assignee == "sup-li"  # nobody on shift for grid north: the supervisor
    from hub.workorders import attendance_log, cancel_leave, leaves

    assert [r["kind"] for r in attendance_log(conn, "butler-chen", since=MON_10)] == ["out"]
    (leave,) = leaves(conn, "tech-sun")
    assert leave["reason"] == "sick"
    cancel_leave(conn, leave["id"], actor="sup-li", origin="api", clock=night)
    assert leaves(conn, "tech-sun") == []
    duty = {d.staff_id: d for d in on_duty(conn, "demo", clock=night)}
    assert duty["butler-chen"].attendance == "out" and not duty["butler-chen"].available
    assert duty["tech-zhou"].on_shift and duty["tech-zhou"].available


def test_checked_in_person_preferred_over_less_loaded_colleague(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    # Two butlers cover grid north in the day: add butler-chen to the day shift via the DB roster.
    conn.execute("INSERT INTO shifts (staff_id, site_id, days, start_time, end_time) VALUES "
                 "('butler-chen', 'demo', '{mon,tue,wed,thu,fri,sat,sun}', '08:00', '20:00')")
    first = create_order(conn, site_id="demo", kind="repair", title="A", actor="r", origin="app", building_id="b1",
                         clock=clock)
    assert first.assignee == "butler-chen"  # both 0 open orders, no check-ins: id order
    second = create_order(conn, site_id="demo", kind="repair", title="B", actor="r", origin="app", building_id="b1",
                          clock=clock)
    assert second.assignee == "butler-wang"  # least loaded
    check_in(conn, "butler-chen", "demo", actor="butler-chen", origin="api", clock=clock)
    third = create_order(conn, site_id="demo", kind="repair", title="C", actor="r", origin="app", building_id="b1",
                         clock=clock)
    assert third.assignee == "butler-chen"  # checked in beats equally loaded, not checked in


def test_evidence_rating_and_bad_input(db):
    conn, _ = db
    clock = ManualClock(MON_10)
    order = create_order(conn, site_id="demo", kind="repair", title="Broken light", actor="r", origin="app",
                         building_id="b2", clock=clock)
    with pytest.raises(BadInput, match="once resolved"):
        rate_order(conn, order.id, rating=5, actor="r", origin="app", clock=clock)
    add_evidence(conn, order.id, kind="photo", ref="s3://evidence/wo-1/before.jpg", actor="butler-wang",
                 origin="app", clock=clock)
    with pytest.raises(BadInput, match="needs ref"):
        add_evidence(conn, order.id, kind="photo", note="no ref", actor="butler-wang", origin="app", clock=clock)
    for state in ("accepted", "on_site", "resolved"):
        transition(conn, order.id, state, "butler-wang", "app", clock=clock)
    with pytest.raises(BadInput, match="1 to 5"):
        rate_order(conn, order.id, rating=6, actor="r", origin="app", clock=clock)
    rated = rate_order(conn, order.id, rating=4, comment="quick, thanks", actor="r", origin="app", clock=clock)
    assert (rated.rating, rated.rating_comment) == (4, "quick, thanks")
    with pytest.raises(BadInput, match="unknown kind"):
        create_order(conn, site_id="demo", kind="wish", title="x", actor="r", origin="app", clock=clock)
    with pytest.raises(BadInput, match="title is required"):
        create_order(conn, site_id="demo", kind="repair", title=" ", actor="r", origin="app", clock=clock)
    with pytest.raises(BadInput, match="does not work at site"):
        conn.execute("INSERT INTO sites (id, timezone) VALUES ('other', 'UTC')")
        conn.execute("INSERT INTO staff (id, name, role, sites) VALUES ('x-tech', 'X', 'technician', '{other}')")
        transition(conn, order.id, "reopened", "sup-li", "api", clock=clock)
        transition(conn, order.id, "assigned", "sup-li", "api", assignee="x-tech", clock=clock)


def test_sla_reminder_and_escalations_each_happen_once(db):
    conn, ids = db
    clock = ManualClock(MON_10)
    order_id = dispatch_alarm(conn, raise_alarm(conn, ids[("demo", "el-b1-1")], raised_at=MON_10),
                              policy=POLICY, clock=clock)
    assert sla_check(conn, policy=POLICY, clock=clock) == (0, 0)
    clock.advance(minutes=3, seconds=30)  # accept due at 5 min: the 2-min reminder
    assert sla_check(conn, policy=POLICY, clock=clock) == (1, 0)
    assert sla_check(conn, policy=POLICY, clock=clock) == (0, 0)
    clock.advance(minutes=2)  # 5:30 → accept breached
    assert sla_check(conn, policy=POLICY, clock=clock) == (0, 1)
    rows = conn.execute("""SELECT event, staff_id FROM notifications WHERE order_id = %s AND channel = 'mqtt'
                           ORDER BY id""", (order_id,)).fetchall()
    assert rows == [("assigned", "lift-co"), ("reminder", "lift-co"), ("escalation", "lift-co"),
                    ("escalation", "sup-li")]
    transition(conn, order_id, "accepted", "lift-co", "app", clock=clock)
    clock.advance(minutes=30)  # arrive (30 min) breached too, accept clock stopped
    assert sla_check(conn, policy=POLICY, clock=clock) == (0, 1)
    events = conn.execute("SELECT clock, step, action FROM work_order_sla_events WHERE order_id = %s ORDER BY at, clock",
                          (order_id,)).fetchall()
    assert events == [("accept", 0, "reminder"), ("accept", 1, "escalation"), ("arrive", 1, "escalation")]
    level = conn.execute("SELECT escalation_level FROM work_orders WHERE id = %s", (order_id,)).fetchone()
    assert level == (2,)


def test_listing_evidence_and_delivery_status_for_the_api(db):
    from hub.workorders import delivery_status, evidence_of, list_orders

    conn, _ = db
    clock = ManualClock(MON_10)
    a = create_order(conn, site_id="demo", kind="repair", title="A", actor="r", origin="app", building_id="b1", clock=clock)
    b = create_order(conn, site_id="demo", kind="praise", title="Thanks to Zhao", actor="r", origin="app",
                     building_id="b3", clock=clock)
    transition(conn, b.id, "closed", "butler-zhao", "app", note="thanked the resident", clock=clock)
    assert [o.id for o in list_orders(conn, site_id="demo")] == [a.id, b.id]
    assert [o.id for o in list_orders(conn, site_id="demo", open_only=True)] == [a.id]
    assert [o.id for o in list_orders(conn, assignee="butler-zhao", state="closed")] == [b.id]
    add_evidence(conn, a.id, kind="note", note="water off at 10:05", actor="butler-wang", origin="app", clock=clock)
    assert [(e["kind"], e["note"]) for e in evidence_of(conn, a.id)] == [("note", "water off at 10:05")]
    status = delivery_status(conn, a.id)
    assert [(s["event"], s["channel"], s["staff_id"], s["status"]) for s in status] == [
        ("assigned", "mqtt", "butler-wang", "pending")]  # no deliverer runs in this test
