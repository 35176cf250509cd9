"""KPI views, planned maintenance generation, the SQL on-duty function, policy validation."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from hub.dispatch.engine import assign_waiting, dispatch_alarm, load_candidates
from hub.dispatch.maintenance import due_dates, generate_planned
from hub.dispatch.policy import MaintenanceSchedule, load_policy
from hub.errors import ConfigError
from hub.workorders import ManualClock, create_order, rate_order, transition
from tests.workorders_support import clear_alarm, raise_alarm, seed

T = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
POLICY = load_policy()


@pytest.fixture
def db(fresh_db_url):
    ids = seed(fresh_db_url)
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        yield conn, ids


def _run(conn, ids, device, steps):
    clock = ManualClock(T)
    alarm = raise_alarm(conn, ids[("demo", device)], raised_at=T, scope=f"kpi:{device}")
    order = dispatch_alarm(conn, alarm, policy=POLICY, clock=clock)
    for minutes, state in steps:
        clock.set(T + timedelta(minutes=minutes))
        if state == "resolved":
            clear_alarm(conn, alarm, at=clock.now())
        transition(conn, order, state, "lift-co", "app", clock=clock)
    return order


def test_kpi_views_compute_on_time_rates_means_p90_backlog_and_satisfaction(db):
    conn, ids = db
    _run(conn, ids, "el-b1-1", [(2, "accepted"), (20, "on_site"), (60, "resolved")])       # all on time
    _run(conn, ids, "el-b1-2", [(10, "accepted"), (40, "on_site"), (180, "resolved")])     # all late
    _run(conn, ids, "el-b2-1", [])                                                          # never accepted
    row = conn.execute(
        """SELECT orders, open_orders, accept_measured, accept_on_time, accept_on_time_rate, arrive_on_time_rate,
                  resolve_on_time_rate, mean_response_s, p90_response_s, mean_resolution_s, p90_resolution_s
             FROM wo_kpi_site_daily WHERE site_id = 'demo' AND day = '2026-11-23'""").fetchone()
    assert row[:4] == (3, 1, 3, 1)
    assert row[4:7] == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert row[7:] == pytest.approx((360.0, 552.0, 7200.0, 10080.0))
    person = conn.execute("SELECT key, orders FROM wo_kpi_person_daily").fetchall()
    assert person == [("lift-co", 3)]
    grids = dict(conn.execute("SELECT key, orders FROM wo_kpi_grid_daily").fetchall())
    assert grids == {"north": 3}
    backlog = conn.execute("SELECT assignee, state, orders, overdue FROM wo_kpi_backlog").fetchall()
    assert backlog == [("lift-co", "assigned", 1, 1)]

    clock = ManualClock(T)
    for stars in (5, 2):
        order = create_order(conn, site_id="demo", kind="repair", title="x", actor="r", origin="app",
                             building_id="b3", clock=clock)
        for state in ("accepted", "on_site", "resolved"):
            transition(conn, order.id, state, "butler-zhao", "app", clock=clock)
        rate_order(conn, order.id, rating=stars, actor="r", origin="app", clock=clock)
    sat = conn.execute("""SELECT grid_id, kind, rated, mean_rating, satisfied_rate, rating_2, rating_5
                            FROM wo_kpi_satisfaction""").fetchall()
    assert sat == [("south", "repair", 2, 3.5, 0.5, 1, 1)]
    kind = dict(conn.execute("SELECT key, mean_rating FROM wo_kpi_kind_daily").fetchall())
    assert kind == {"alarm": None, "repair": 3.5}


def test_due_dates_on_a_fixed_grid():
    every = MaintenanceSchedule(id="e", title="E", device_kinds=["elevator"], every_days=15, anchor=date(2026, 1, 1))
    assert due_dates(every, date(2026, 11, 20), date(2026, 12, 31)) == [date(2026, 11, 27), date(2026, 12, 12),
                                                                         date(2026, 12, 27)]
    assert due_dates(every, date(2026, 1, 1), date(2026, 1, 1)) == [date(2026, 1, 1)]
    monthly = MaintenanceSchedule(id="m", title="M", device_kinds=["fire_panel"], day_of_month=1)
    assert due_dates(monthly, date(2026, 11, 2), date(2027, 1, 1)) == [date(2026, 12, 1), date(2027, 1, 1)]


def test_planned_maintenance_is_generated_once_and_assigned_on_its_day(db):
    conn, _ = db
    clock = ManualClock(datetime(2026, 11, 25, 2, 0, tzinfo=UTC))  # Wed 10:00 Shanghai: Nov 27 is in the window
    assert generate_planned(conn, policy=POLICY, clock=clock) == 4  # four elevators, due Nov 27
    assert generate_planned(conn, policy=POLICY, clock=clock) == 0
    assert assign_waiting(conn, policy=POLICY, clock=clock) == 0  # not due yet
    clock.set(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    assert generate_planned(conn, policy=POLICY, clock=clock) == 1  # the fire panel, due Dec 1
    rows = conn.execute("""SELECT policy_rule, due_date, state, count(*) FROM work_orders
                            GROUP BY 1, 2, 3 ORDER BY 1""").fetchall()
    assert rows == [("elevator-15d", date(2026, 11, 27), "created", 4), ("fire-monthly", date(2026, 12, 1), "created", 1)]
    clock.set(datetime(2026, 11, 26, 16, 30, tzinfo=UTC))  # Nov 27 00:30 in Shanghai: the elevator day has come
    assert assign_waiting(conn, policy=POLICY, clock=clock) == 4
    assignees = conn.execute("SELECT DISTINCT assignee FROM work_orders WHERE policy_rule = 'elevator-15d'").fetchall()
    assert assignees == [("lift-co",)]
    due = conn.execute("SELECT resolve_due FROM work_orders WHERE policy_rule = 'elevator-15d' LIMIT 1").fetchone()
    assert due == (datetime(2026, 11, 27, 16, 0, tzinfo=UTC),)  # end of Nov 27, Shanghai time


def test_sql_on_duty_function_agrees_with_the_python_rule(db):
    conn, _ = db
    conn.execute("INSERT INTO sites (id, timezone) VALUES ('ny', 'America/New_York')")
    conn.execute("INSERT INTO staff (id, name, role, sites) VALUES ('ny-night', 'N', 'butler', '{ny}')")
    conn.execute("INSERT INTO shifts (staff_id, site_id, days, start_time, end_time) VALUES "
                 "('ny-night', 'ny', '{fri,sat}', '22:00', '06:00')")
    conn.execute("INSERT INTO attendance (staff_id, site_id, kind, at, source, actor) VALUES "
                 "('tech-liu', 'demo', 'in', %s, 'api', 't'), ('tech-sun', 'demo', 'out', %s, 'api', 't')",
                 (T - timedelta(hours=1), T - timedelta(hours=1)))
    valid = POLICY.attendance_valid
    # Fri–Mon around the US daylight-saving change (Mar 8): every hour, on it and one second before.
    probes = [datetime(2026, 3, 6, 12, tzinfo=UTC) + timedelta(hours=h, seconds=s)
              for h in range(72) for s in (0, -1)]
    mismatches = []
    checked = 0
    for at in probes:
        sql_rows = {(r[0], r[1]): r[2:] for r in conn.execute(
            "SELECT site_id, staff_id, on_shift, attendance, available FROM staff_duty_at(%s, %s)", (at, valid))}
        for site in ("demo", "ny"):
            for c in load_candidates(conn, site, at, attendance_valid=valid):
                checked += 1
                if sql_rows[(site, c.staff_id)] != (c.on_shift, c.attendance, c.available):
                    mismatches.append((at, site, c.staff_id, sql_rows[(site, c.staff_id)], c))
    assert checked > 1000 and not mismatches, mismatches[:3]
    near = {r[0]: r[1:] for r in conn.execute(
        "SELECT staff_id, attendance, available FROM staff_duty_at(%s) WHERE site_id = 'demo'", (T,))}
    assert near["tech-liu"] == ("in", True) and near["tech-sun"] == ("out", False)


def test_policy_errors_name_file_line_and_field(tmp_path: Path):
    bad = tmp_path / "policy.yaml"
    bad.write_text(
        "sla:\n  p1: {accept: 5m}\n"
        "alarms:\n"
        "  - id: entrapment\n"
        "    match: {kinds: [entrapment]}\n"
        "    priority: urgent\n"
        "    sla: {arrive: soon}\n"
        "maintenance:\n"
        "  - {id: m, title: M, device_kinds: [elevator], every_days: 15, day_of_month: 1}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_policy(bad)
    text = str(err.value)
    assert f"{bad}:6: alarms[0].priority" in text
    assert f"{bad}:7: alarms[0].sla.arrive" in text and "30m" in text
    assert f"{bad}:9: maintenance[0]" in text and "exactly one of every_days or day_of_month" in text
    broken = tmp_path / "broken.yaml"
    broken.write_text("alarms:\n  - id: x\n   match: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{broken}:3: invalid YAML"):
        load_policy(broken)
