"""Every panel's SQL, macros expanded, against a real database filled with simulated demo data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from dashboards.macros import QueryContext, expand
from dashboards.queries import BY_KEY, PANELS, REPORT_PANELS, VARIABLES, PanelQuery
from dashboards.report import day_bounds
from hub.config import TimescaleSettings
from hub.registry import load_registry
from hub.store.migrate import migrate
from rules.alarms import OWN_INCIDENT
from tests.dashboards_fill import Expected, fill_demo
from tests.support import ROOT, create_database, drop_database

BY_KEY_REPORT = {p.key: p for p in REPORT_PANELS}
NOW = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)  # a Wednesday, 10:00 in Asia/Shanghai
ALL_VARS = {
    "site": ["demo"], "building": ["b1", "b2", "b3", "garage", "-"], "grid": ["north", "south", "-"],
    "kind": ["elevator", "gate", "fire_panel", "fire_detector", "fire_module", "parking_lane", "parking_meter"],
}


@dataclass
class Filled:
    url: str
    expected: Expected
    timescale: bool


def _fill(url: str) -> Expected:
    registry = load_registry(ROOT / "examples" / "sites" / "demo.yaml")
    with psycopg.connect(url) as conn:
        return fill_demo(conn, registry, now=NOW)


@pytest.fixture(scope="module", params=["plain", "timescale"])
def filled(request: pytest.FixtureRequest, pg_server: Any) -> Iterator[Filled]:
    mode = request.param
    if mode == "timescale":
        with psycopg.connect(pg_server.admin_url) as c:
            row = c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        if row is None:
            pytest.skip("TimescaleDB extension not installed on this PostgreSQL server "
                        "(not packaged for this machine; see docs/dashboards.md)")
    name, url = create_database(pg_server.admin_url, "hub_dash")
    try:
        report = migrate(url, TimescaleSettings(mode="on" if mode == "timescale" else "off"))
        yield Filled(url, _fill(url), report.timescale)
    finally:
        drop_database(pg_server.admin_url, name)


def run(url: str, panel: PanelQuery, ctx: QueryContext, *, user: str | None = None) -> list[dict[str, Any]]:
    sql, params = expand(panel.sql, ctx)
    kwargs = {"user": user} if user else {}
    with psycopg.connect(url, **kwargs) as conn:
        cur = conn.execute(sql.encode(), params)
        assert cur.description is not None
        names = [c.name for c in cur.description]
        assert tuple(names) == panel.columns, f"{panel.key}: columns {names} != {panel.columns}"
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def ctx(hours: float = 8, interval: timedelta = timedelta(minutes=5), **variables: list[str]) -> QueryContext:
    return QueryContext(NOW - timedelta(hours=hours), NOW, interval, ALL_VARS | variables)


@pytest.mark.parametrize("panel", REPORT_PANELS, ids=[p.key for p in REPORT_PANELS])
def test_every_report_section_returns_its_columns(filled: Filled, panel: PanelQuery) -> None:
    start, stop = day_bounds(date(2026, 11, 18), "Asia/Shanghai")
    rows = run(filled.url, panel, QueryContext(start, stop, timedelta(hours=1), {"site": ["demo"]}))
    assert rows, f"{panel.key} returned nothing for the filled day"


@pytest.mark.parametrize("panel", PANELS, ids=[p.key for p in PANELS])
def test_every_panel_returns_its_columns_as_the_grafana_role(filled: Filled, panel: PanelQuery) -> None:
    rows = run(filled.url, panel, ctx(), user="hub_grafana")
    assert rows, f"{panel.key} returned nothing over simulated data"


def test_overview_numbers_match_what_was_ingested(filled: Filled) -> None:
    exp = filled.expected
    [site] = run(filled.url, BY_KEY["overview.sites"], ctx())
    assert (site["site"], site["devices"], site["online"], site["offline"]) == ("demo", exp.devices, exp.online, 1)
    # Incidents: shelved and closed alarms do not count, nor the three alarms grouped under the
    # open entrapment (tests/dashboards_fill.py `_alarms`); counting every open alarm gives 8.
    assert site["active_alarms"] == 5
    assert run(filled.url, BY_KEY["overview.devices_online"], ctx()) == [{"online": exp.online, "total": exp.devices}]
    sev = {r["severity"]: r["alarms"] for r in run(filled.url, BY_KEY["overview.alarms_by_severity"], ctx())}
    assert sev == {"critical": 2, "major": 2, "minor": 1, "warning": 0}  # every open alarm: 3, 4, 1
    by_kind = {r["kind"]: (r["online"], r["offline"]) for r in run(filled.url, BY_KEY["overview.online_by_kind"], ctx())}
    assert by_kind["gate"] == (2, 1) and by_kind["elevator"] == (4, 0)
    assert sum(a + b for a, b in by_kind.values()) == exp.devices
    active = run(filled.url, BY_KEY["overview.active_alarms"], ctx())
    assert [a["severity"] for a in active] == ["critical", "critical", "major", "major", "minor"]
    assert active[1]["device"] == "el-b1-2" and active[1]["age_min"] == 19


def test_active_alarms_are_incidents_with_their_grouped_children(filled: Filled) -> None:
    """One row per incident (`OWN_INCIDENT`), most severe first, then oldest; `grouped` counts the
    open children an open root explains. Without the filter the list has eight rows."""
    ids = filled.expected.alarm_ids
    active = run(filled.url, BY_KEY["overview.active_alarms"], ctx(), user="hub_grafana")
    assert [(a["alarm"], a["kind"], a["state"], a["grouped"]) for a in active] == [
        (ids["rescued-fault"], "elevator_fault", "active", 0),      # left up by its rescued root
        (ids["entrapment"], "entrapment", "active", 3),             # fault 01, button, outside the zone
        (ids["rescued-button"], "alarm_button", "cleared_unack", 0),  # its root closed; waits for an ack
        (ids["fire_fault"], "fire_fault", "acknowledged", 0),
        (ids["offline"], "device_offline", "active", 0),
    ]
    # Every active alarm is a row or counted in exactly one row's `grouped`.
    with psycopg.connect(filled.url) as conn:
        row = conn.execute("SELECT count(*) FROM alarms WHERE closed_at IS NULL AND state <> 'shelved'").fetchone()
    assert row == (len(active) + sum(a["grouped"] for a in active),) == (8,)
    # The children stay grouped whatever the filters: a lift-only view lists the lifts' incidents.
    lifts = run(filled.url, BY_KEY["overview.active_alarms"], ctx(kind=["elevator"]))
    assert [(a["alarm"], a["grouped"]) for a in lifts] == [(ids["rescued-fault"], 0), (ids["entrapment"], 3),
                                                           (ids["rescued-button"], 0)]
    # The three panels that count active alarms use the same rule, word for word.
    for key in ("overview.sites", "overview.alarms_by_severity", "overview.active_alarms"):
        assert OWN_INCIDENT in BY_KEY[key].sql, key


def test_filters_narrow_the_overview(filled: Filled) -> None:
    only_lifts = run(filled.url, BY_KEY["overview.devices_online"], ctx(kind=["elevator"]))
    assert only_lifts == [{"online": 4, "total": 4}]
    south = run(filled.url, BY_KEY["overview.devices_online"], ctx(grid=["south"]))
    assert south[0]["total"] == 6  # b3 (lift, gate, detector) and garage (two lanes, meter)
    assert run(filled.url, BY_KEY["overview.sites"], ctx(site=["nowhere"])) == []


def test_staff_on_duty_follows_the_roster_in_site_time(filled: Filled) -> None:
    on_duty = {r["staff"] for r in run(filled.url, BY_KEY["overview.staff_on_duty"], ctx())}
    assert on_duty == {"sup-li", "butler-wang", "butler-zhao", "tech-liu", "tech-sun", "lift-co"}
    night = QueryContext(NOW - timedelta(hours=1), NOW + timedelta(hours=13), variables=ALL_VARS)  # 23:00
    at_night = {r["staff"]: r for r in run(filled.url, BY_KEY["overview.staff_on_duty"], night)}
    assert set(at_night) == {"butler-chen", "tech-zhou", "lift-co", "tech-liu"}


def test_staff_on_duty_shows_attendance_and_load_as_dispatch_sees_them(filled: Filled) -> None:
    now = {r["staff"]: r for r in run(filled.url, BY_KEY["overview.staff_on_duty"], ctx(), user="hub_grafana")}
    # butler-wang and tech-liu badged in; butler-chen badged out at 07:55 and is off shift: not listed.
    assert {k: r["attendance"] for k, r in now.items() if r["attendance"] != "unknown"} == {
        "butler-wang": "in", "tech-liu": "in"}
    assert {k: r["open_orders"] for k, r in now.items() if r["open_orders"]} == {
        "butler-zhao": 1, "tech-sun": 1, "lift-co": 1}
    assert all(r["on_shift"] and r["available"] and not r["on_leave"] for r in now.values())
    night = QueryContext(NOW - timedelta(hours=1), NOW + timedelta(hours=13), variables=ALL_VARS)  # 23:00
    at_night = {r["staff"]: r for r in run(filled.url, BY_KEY["overview.staff_on_duty"], night)}
    # Rostered but badged out this morning: listed, not available. Checked in at 08:10 and never
    # out (within the 16 h a check-in counts): present although off shift.
    assert (at_night["butler-chen"]["on_shift"], at_night["butler-chen"]["attendance"],
            at_night["butler-chen"]["available"]) == (True, "out", False)
    assert (at_night["tech-liu"]["on_shift"], at_night["tech-liu"]["attendance"]) == (False, "in")
    assert at_night["tech-zhou"]["open_orders"] == 1 and at_night["tech-zhou"]["available"]


@pytest.mark.parametrize("hours,tier", [(0.5, "raw"), (4, "1m"), (8, "1h"), (24 * 7, "1h")])
def test_reporting_devices_come_from_the_tier_that_fits_the_range(filled: Filled, hours: float, tier: str) -> None:
    with psycopg.connect(filled.url) as conn:
        row = conn.execute("SELECT hub_tier(%s, %s)", (NOW - timedelta(hours=hours), NOW)).fetchone()
    assert row == (tier,)
    interval = timedelta(hours=1) if hours > 6 else timedelta(minutes=5)
    rows = run(filled.url, BY_KEY["overview.devices_reporting"], ctx(hours=hours, interval=interval))
    assert rows and max(r["reporting"] for r in rows) == filled.expected.devices
    assert all(0 < r["reporting"] <= filled.expected.devices for r in rows)


def test_elevator_panels(filled: Filled) -> None:
    exp = filled.expected
    board = {r["device"]: r for r in run(filled.url, BY_KEY["elevators.status_board"], ctx())}
    assert set(board) == {"el-b1-1", "el-b1-2", "el-b2-1", "el-b3-1"}
    assert board["el-b3-1"]["service_mode"] == "out_of_service"
    assert board["el-b1-1"]["service_mode"] == "normal"
    assert all(r["floor"] is not None and -2 <= r["floor"] <= 18 for r in board.values())
    faults = {r["code"]: r["events"] for r in run(filled.url, BY_KEY["elevators.faults"], ctx())}
    assert faults == exp.fault_events
    assert run(filled.url, BY_KEY["elevators.entrapments"], ctx()) == [
        {"entrapments": 1, "active_entrapment_alarms": 1}]
    oos = {r["device"]: r["minutes_out"] for r in run(filled.url, BY_KEY["elevators.out_of_service"], ctx())}
    assert oos == {"el-b1-1": 0, "el-b1-2": 0, "el-b2-1": 0, "el-b3-1": exp.out_of_service_minutes}
    trips = run(filled.url, BY_KEY["elevators.trips"], ctx())
    assert sum(r["trips"] for r in trips) > 0 and all(r["trips"] >= 0 for r in trips)


def test_fire_panels(filled: Filled) -> None:
    [panel] = run(filled.url, BY_KEY["fire.panel_states"], ctx())
    assert (panel["device"], panel["fault"], panel["fire_alarm"], panel["points_shielded"]) == ("fire-panel-1", 1, 0, 1)
    assert run(filled.url, BY_KEY["fire.detectors"], ctx()) == [
        {"detectors": 4, "in_alarm": 0, "in_fault": 1, "shielded": 1}]
    pressure = run(filled.url, BY_KEY["fire.pressure"], ctx())
    assert pressure and all(0.4 < r["pressure"] < 0.5 for r in pressure)


def test_access_panels(filled: Filled) -> None:
    exp = filled.expected
    flow = run(filled.url, BY_KEY["access.passes"], ctx())
    assert sum(r["granted"] for r in flow) == exp.granted and sum(r["denied"] for r in flow) == exp.denied
    doors = {r["device"]: r for r in run(filled.url, BY_KEY["access.doors"], ctx())}
    assert doors["gate-south"]["forced"] == 1 and doors["door-b2-lobby"]["held_open"] == 1
    assert doors["gate-north"]["denied"] == exp.denied
    assert run(filled.url, BY_KEY["access.visitor_passes"], ctx()) == [
        {"visitor_entries": exp.visitor_entries, "passes_used": exp.visitor_passes}]


def test_parking_panels(filled: Filled) -> None:
    exp = filled.expected
    [occ] = run(filled.url, BY_KEY["parking.occupancy"], ctx())
    assert occ["free_spaces"] + occ["occupied_spaces"] == 300 and 0 <= occ["occupancy_pct"] <= 100
    flows = run(filled.url, BY_KEY["parking.flows"], ctx())
    assert (sum(r["entries"] for r in flows), sum(r["exits"] for r in flows)) == (exp.entries, exp.exits)
    assert run(filled.url, BY_KEY["parking.fees"], ctx()) == [{"fees": Decimal(str(exp.fees)), "paid_exits": exp.exits}]
    barriers = {r["device"]: r for r in run(filled.url, BY_KEY["parking.barrier_faults"], ctx())}
    assert barriers["lane-out"]["barrier_fault_now"] == 1 and barriers["lane-out"]["fault_events"] == 1
    assert barriers["lane-in"]["barrier_fault_now"] == 0
    free = run(filled.url, BY_KEY["parking.free_spaces"], ctx())
    assert {r["device"] for r in free} == {"lane-in", "lane-out", "meter-garage"}


def test_variable_queries_list_the_demo_registry(filled: Filled) -> None:
    values = {}
    for name, sql in VARIABLES.items():
        text, params = expand(sql, ctx())
        with psycopg.connect(filled.url, user="hub_grafana") as conn:
            values[name] = [r[0] for r in conn.execute(text.encode(), params)]
    assert values["site"] == ["demo"]
    assert values["building"] == ["b1", "b2", "b3", "garage"]
    assert values["grid"] == ["north", "south"]
    assert set(values["kind"]) == set(ALL_VARS["kind"])


def test_grafana_role_is_read_only_and_cannot_see_secrets(filled: Filled) -> None:
    with psycopg.connect(filled.url, user="hub_grafana", autocommit=True) as conn:
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("DELETE FROM alarms")
        # The session default is only the first guard: without it, privileges still refuse.
        conn.execute("SET default_transaction_read_only = off")
        for statement in ("DELETE FROM alarms", "INSERT INTO sites (id, timezone) VALUES ('x', 'UTC')",
                          "SELECT * FROM audit_log", "SELECT phone FROM staff", "SELECT * FROM dead_letters",
                          # notification targets are webhook URLs (may carry tokens) and payloads
                          "SELECT target FROM notifications", "SELECT payload FROM notifications",
                          "SELECT card FROM staff_badges", "SELECT reason FROM staff_leave",
                          "SELECT reporter FROM work_orders", "SELECT description FROM work_orders",
                          "SELECT location FROM work_orders", "SELECT rating_comment FROM work_orders",
                          "SELECT assignment FROM work_orders", "SELECT * FROM work_orders",
                          "SELECT note FROM work_order_transitions", "SELECT ref FROM work_order_evidence",
                          "UPDATE work_orders SET state = 'closed'"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        # What the work-order panels read is readable.
        for relation in ("wo_kpi_orders", "wo_kpi_daily", "wo_kpi_site_daily", "wo_kpi_grid_daily",
                         "wo_kpi_person_daily", "wo_kpi_kind_daily", "wo_kpi_backlog", "wo_kpi_satisfaction",
                         "staff_duty_now", "attendance"):
            conn.execute(SQL("SELECT count(*) FROM {}").format(Identifier(relation)))
        assert conn.execute("SELECT count(*) FROM staff_duty_at(now())").fetchone() != (0,)
        assert conn.execute("SELECT count(title) FROM work_orders").fetchone() == (11,)


def _wo(filled: Filled, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    return run(filled.url, BY_KEY[key], ctx(interval=timedelta(hours=1), **kwargs), user="hub_grafana")


def test_open_work_orders_and_the_sla_countdown(filled: Filled) -> None:
    """Open now (B, C, F and the live Z); B, C and F are past a running clock's due time."""
    wo = filled.expected.work_orders
    assert wo is not None
    assert _wo(filled, "overview.open_work_orders") == [{"open_orders": 4, "sla_breached": 3}]
    queue = _wo(filled, "overview.work_order_queue")
    assert [(q["work_order"], q["due_step"], q["state"], q["assignee"]) for q in queue] == [
        (wo.ids["F"], "accept", "assigned", "butler-zhao"),     # accept due 09:30 local
        (wo.ids["B"], "accept", "assigned", "tech-sun"),        # accept due 10:13
        (wo.ids["C"], "resolve", "on_site", "lift-co"),         # on site; resolve due 11:41
        (wo.ids["Z"], "accept", "assigned", "tech-zhou"),       # the live one
    ]
    assert queue[0]["due_at"] == NOW - timedelta(minutes=30)
    assert queue[2]["due_at"] == NOW + timedelta(minutes=101)  # raised -19, p1 entrapment: 2 h
    assert all(q["minutes_left"] < 0 for q in queue[:3])
    assert 58 <= queue[3]["minutes_left"] <= 60  # p3 repair: accept within an hour of now
    assert (queue[1]["title"], queue[1]["priority"], queue[1]["kind"]) == ("Fire panel reports a fault", "p2", "alarm")


def test_work_order_kpis_match_the_orders_made_through_dispatch(filled: Filled) -> None:
    """Nine orders in the 8-hour range; the numbers follow from the steps in `fill_work_orders`."""
    # accept: A C D I on time, B E F late -> 4/7; arrive: A C D E / B F -> 4/6; resolve: A D E / B C F -> 3/6.
    assert _wo(filled, "workorders.on_time") == [{"orders": 9, "accept_on_time_pct": Decimal("57.1"),
                                                  "arrive_on_time_pct": Decimal("66.7"),
                                                  "resolve_on_time_pct": Decimal("50.0")}]
    times = {r["kind"]: r for r in _wo(filled, "workorders.times")}
    assert {k: r["orders"] for k, r in times.items()} == {"alarm": 3, "complaint": 1, "praise": 1, "repair": 4}
    # Alarms: response 10 min (A) and 3 min (C), on site after 40 and 14 min, A resolved after 50.
    assert [times["alarm"][c] for c in ("response_mean_min", "response_p90_min", "arrive_mean_min",
                                        "arrive_p90_min", "resolution_mean_min", "resolution_p90_min")] == [
        Decimal("6.5"), Decimal("9.3"), Decimal("27.0"), Decimal("37.4"), Decimal("50.0"), Decimal("50.0")]
    assert (times["repair"]["response_mean_min"], times["repair"]["resolution_mean_min"]) == (
        Decimal("10.0"), Decimal("180.0"))
    assert (times["complaint"]["response_mean_min"], times["complaint"]["arrive_mean_min"]) == (
        Decimal("60.0"), Decimal("70.0"))
    assert times["praise"]["response_mean_min"] is None
    grids = {r["grid"]: r for r in _wo(filled, "workorders.by_grid")}
    assert {g: (r["orders"], r["open_orders"], r["accept_on_time_pct"], r["arrive_on_time_pct"],
                r["resolve_on_time_pct"], r["resolution_mean_min"], r["rating"]) for g, r in grids.items()} == {
        "north": (6, 2, Decimal("75.0"), Decimal("66.7"), Decimal("33.3"), Decimal("180.0"), Decimal("4.00")),
        "south": (3, 1, Decimal("33.3"), Decimal("66.7"), Decimal("66.7"), Decimal("70.0"), Decimal("2.00")),
    }
    assert [r["grid"] for r in _wo(filled, "workorders.by_grid", grid=["south"])] == ["south"]
    people = _wo(filled, "workorders.by_person")
    assert [(r["staff"], r["orders"], r["open_orders"]) for r in people] == [
        ("butler-chen", 2, 0), ("butler-wang", 2, 0), ("butler-zhao", 2, 1), ("tech-sun", 2, 1), ("lift-co", 1, 1)]
    by = {r["staff"]: r for r in people}
    assert (by["butler-zhao"]["name"], by["butler-zhao"]["accept_on_time_pct"], by["butler-zhao"]["rating"]) == (
        "Zhao Min", Decimal("0.0"), Decimal("2.00"))
    assert (by["lift-co"]["response_mean_min"], by["lift-co"]["resolve_on_time_pct"]) == (Decimal("3.0"), Decimal("0.0"))
    assert by["butler-wang"]["accept_on_time_pct"] is None  # praise closed, repair cancelled: nothing to judge
    sat = _wo(filled, "workorders.satisfaction")
    assert [(r["time"], r["rating"], r["ratings"], r["satisfied_pct"]) for r in sat] == [
        (NOW - timedelta(hours=4), Decimal("4.00"), 1, Decimal("100.0")),   # D raised 06:40 local
        (NOW - timedelta(hours=2), Decimal("2.00"), 1, Decimal("0.0")),     # E raised 08:20 local
    ]
    assert _wo(filled, "workorders.backlog") == [
        {"state": "assigned", "orders": 3, "overdue": 2, "escalated": 0},
        {"state": "on_site", "orders": 1, "overdue": 1, "escalated": 0},
    ]


def test_work_order_panels_agree_with_the_kpi_views_over_one_day(filled: Filled) -> None:
    """Over the site's local day the range panels give what `wo_kpi_site_daily` says."""
    day = QueryContext(NOW - timedelta(hours=10), NOW + timedelta(hours=14), timedelta(hours=1), ALL_VARS)
    [rates] = run(filled.url, BY_KEY["workorders.on_time"], day)
    with psycopg.connect(filled.url) as conn:
        row = conn.execute("""SELECT orders, accept_on_time_rate, arrive_on_time_rate, resolve_on_time_rate
                                FROM wo_kpi_site_daily WHERE site_id = 'demo' AND day = '2026-11-18'""").fetchone()
    assert row is not None
    assert rates["orders"] == row[0]
    assert [float(rates[c]) for c in ("accept_on_time_pct", "arrive_on_time_pct", "resolve_on_time_pct")] == [
        round(100 * r, 1) for r in row[1:]]


def _report(filled: Filled, key: str, day: date) -> list[dict[str, Any]]:
    start, stop = day_bounds(day, "Asia/Shanghai")
    return run(filled.url, BY_KEY_REPORT[key], QueryContext(start, stop, timedelta(hours=1), {"site": ["demo"]}))


def test_report_work_order_sections_for_a_day_and_the_day_before(filled: Filled) -> None:
    today, before = date(2026, 11, 18), date(2026, 11, 17)
    states = {r["state"]: r["orders"] for r in _report(filled, "report.work_orders", today)}
    assert states == {"assigned": 2, "cancelled": 2, "closed": 2, "resolved": 2, "on_site": 1}
    assert _report(filled, "report.work_orders", before) == [{"state": "resolved", "orders": 1}]
    [on_time] = _report(filled, "report.on_time", today)
    assert on_time == {"orders": 9, "open_orders": 3, "accept_on_time_pct": Decimal("57.1"),
                       "arrive_on_time_pct": Decimal("66.7"), "resolve_on_time_pct": Decimal("50.0"),
                       "response_mean_min": Decimal("18.6"), "response_p90_min": Decimal("40.0"),
                       "resolution_mean_min": Decimal("106.7"), "resolution_p90_min": Decimal("162.0")}
    [y] = _report(filled, "report.on_time", before)  # Y: accepted after 2 h (late), resolved after 5 h
    assert (y["orders"], y["accept_on_time_pct"], y["resolve_on_time_pct"], y["response_mean_min"]) == (
        1, Decimal("0.0"), Decimal("100.0"), Decimal("120.0"))
    assert _report(filled, "report.on_time", date(2026, 11, 16)) == []
    people = {r["staff"]: r["orders"] for r in _report(filled, "report.people", today)}
    assert people == {"butler-chen": 2, "butler-wang": 2, "butler-zhao": 2, "tech-sun": 2, "lift-co": 1}
    assert _report(filled, "report.ratings", today) == [
        {"ratings": 2, "mean_rating": Decimal("3.00"), "satisfied_pct": Decimal("50.0"), "complaints": 1, "praise": 1}]
    assert _report(filled, "report.ratings", before) == [
        {"ratings": 1, "mean_rating": Decimal("5.00"), "satisfied_pct": Decimal("100.0"), "complaints": 0, "praise": 0}]


def test_report_attendance_from_check_ins_and_outs(filled: Filled) -> None:
    att = {r["staff"]: r for r in _report(filled, "report.attendance", date(2026, 11, 18))}
    assert list(att) == ["butler-chen", "butler-wang", "tech-liu"]  # by role, then name
    # In since the evening before (19:55), out at 07:55: counted from midnight.
    assert (att["butler-chen"]["first_in"], att["butler-chen"]["last_out"], att["butler-chen"]["hours"]) == (
        None, NOW - timedelta(minutes=125), Decimal("7.9"))
    assert (att["butler-wang"]["first_in"], att["butler-wang"]["hours"]) == (NOW - timedelta(minutes=130), Decimal("12.2"))
    assert (att["tech-liu"]["last_out"], att["tech-liu"]["hours"]) == (None, Decimal("15.8"))  # never out: to midnight
    assert _report(filled, "report.attendance", date(2026, 11, 17)) == [
        {"staff": "butler-chen", "name": "Chen Jing (night)", "role": "butler",
         "first_in": NOW - timedelta(minutes=845), "last_out": None, "hours": Decimal("4.1")}]


