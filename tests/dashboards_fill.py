"""Fill a migrated database with simulated demo-site data through the ingest path.

Telemetry comes from `simulators.basic.sample` for every device of the demo registry (plus a
small space-counter sample for the Modbus parking meter, which basic.py does not cover), encoded
as contract MQTT payloads, decoded by `hub.ingest.decode` and written by the ingest `BatchWriter`.
A few scripted incidents on top make every panel have something to show; `Expected` records them
so tests can compare panel results with what was put in. Work orders, their SLA steps, ratings and
attendance are made by the work-order feature's own functions (`fill_work_orders`), never as
hand-made rows; only alarms are inserted directly, as the rule engine does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
import psycopg
from psycopg.types.json import Jsonb

from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch, Limits, decode_message
from hub.ingest.writer import BatchWriter
from hub.registry import Registry
from hub.store.registry_sync import sync_registry
from hub.store.rollups import refresh_rollups_now
from simulators.basic import sample

OUT_OF_SERVICE_LIFT = "el-b3-1"
OFFLINE_DEVICE = "door-b2-lobby"


@dataclass
class Expected:
    devices: int = 0
    online: int = 0
    granted: int = 0
    denied: int = 0
    visitor_entries: int = 0
    visitor_passes: int = 0
    entries: int = 0
    exits: int = 0
    fees: float = 0.0
    fault_events: dict[str, int] = field(default_factory=dict)
    out_of_service_minutes: int = 0
    ids: dict[tuple[str, str], int] = field(default_factory=dict)
    alarm_ids: dict[str, int] = field(default_factory=dict)
    work_orders: WorkOrderFill | None = None


def _meter_sample(state: dict[str, float], rng: random.Random) -> dict[str, object]:
    occupied = max(0, min(300, int(state.get("occupied", 150)) + rng.choice((-2, -1, 0, 1, 2))))
    state["occupied"] = occupied
    state["fees"] = state.get("fees", 0.0) + rng.random() * 5
    return {"free_spaces": 300 - occupied, "occupied_spaces": occupied,
            "fees_today": round(state["fees"], 2), "barrier_fault": False}


def fill_demo(conn: psycopg.Connection, registry: Registry, *, now: datetime, hours: float = 8,
              step_s: int = 60, seed: int = 7, work_orders: bool = True) -> Expected:
    """Write `hours` of telemetry ending at `now`, scripted events, status and alarms."""
    ids = sync_registry(conn, registry)
    conn.commit()
    catalog = DeviceCatalog(registry, ids)
    limits = Limits(max_age=timedelta(days=3650))
    rng = random.Random(seed)
    exp = Expected(ids=ids)
    batch = Batch()
    start = now - timedelta(hours=hours)
    states: dict[tuple[str, str], dict[str, float]] = {k: {} for k in registry.devices}
    steps = int(hours * 3600 // step_s)
    oos_from = now - timedelta(minutes=30)

    def publish(site: str, device: str, channel: str, obj: object, at: datetime) -> None:
        decode_message(f"facility/{site}/{device}/{channel}", orjson.dumps(obj), at, catalog, limits, batch)

    for i in range(steps + 1):
        ts = start + timedelta(seconds=i * step_s)
        for key, ref in registry.devices.items():
            if ref.model.kind == "parking_meter":
                values: dict[str, object] | None = _meter_sample(states[key], rng)
            else:
                values = sample(ref, states[key], rng)
            if values is None:
                continue
            if key[1] == OUT_OF_SERVICE_LIFT and ts > oos_from:
                values["service_mode"] = 0
                exp.out_of_service_minutes += 1
            if key[1] == "smoke-b2-f1" and i == steps:
                values["fault"] = True
            if key[1] == "smoke-b3-f1" and i == steps:
                values["shielded"] = True
            if key[1] == "fire-panel-1" and i == steps:
                values |= {"fault": True, "points_shielded": 1}
            if key[1] == "lane-out" and i == steps:
                values["barrier_fault"] = True
            publish(key[0], key[1], "telemetry", {"ts": ts.isoformat(), **values}, ts)

    def event(device: str, code: str, at: datetime, data: dict[str, object] | None = None) -> None:
        publish("demo", device, "event", {"ts": at.isoformat(), "code": code, "data": data}, at)

    # Lift faults: two door-close faults and one entrapment.
    for minutes, device, code in ((90, "el-b1-1", "02"), (45, "el-b2-1", "02"), (20, "el-b1-2", "11")):
        event(device, code, now - timedelta(minutes=minutes))
        exp.fault_events[code] = exp.fault_events.get(code, 0) + 1
    # Gates: grants every 10 minutes at both gates, a few denials, visitor passes, incidents.
    for i in range(int(hours * 6)):
        at = start + timedelta(minutes=10 * i + 3)
        for gate in ("gate-north", "gate-south"):
            event(gate, "granted", at + timedelta(seconds=1 if gate == "gate-north" else 2),
                  {"method": "card", "card": f"c{i % 17}"})
            exp.granted += 1
        if i % 7 == 0:
            event("gate-north", "denied", at + timedelta(seconds=30), {"reason": "unknown card"})
            exp.denied += 1
    for n, pass_id in enumerate(("v-100", "v-100", "v-200")):
        event("gate-south", "granted", now - timedelta(minutes=50 - n), {"method": "visitor_pass", "pass_id": pass_id})
        exp.granted += 1
        exp.visitor_entries += 1
    exp.visitor_passes = 2
    event("gate-south", "door_forced_open", now - timedelta(minutes=70))
    event(OFFLINE_DEVICE, "door_held_open", now - timedelta(minutes=65))
    # Parking: an entry every 15 minutes, an exit with a fee every 20 minutes, one barrier fault.
    for i in range(int(hours * 4)):
        event("lane-in", "entry", start + timedelta(minutes=15 * i + 1), {"plate": f"沪A{i:05d}", "colour": "blue"})
        exp.entries += 1
    for i in range(int(hours * 3)):
        fee = 5.0 + (i % 4) * 2.5
        event("lane-out", "exit", start + timedelta(minutes=20 * i + 2), {"plate": f"沪A{i:05d}", "fee": fee})
        exp.exits += 1
        exp.fees += fee
    event("lane-out", "barrier_fault", now - timedelta(minutes=5), {"detail": "barrier stuck"})
    # Status: every device online, one door controller went offline at the end.
    for site, device in registry.devices:
        publish(site, device, "status", "online", start)
    publish("demo", OFFLINE_DEVICE, "status", "offline", now)
    assert not batch.dead, batch.dead[:3]

    BatchWriter(conn).write(batch)
    conn.commit()
    exp.devices = len(registry.devices)
    exp.online = exp.devices - 1
    exp.alarm_ids = _alarms(conn, ids, now)
    refresh_rollups_now(conn, start - timedelta(hours=1), now + timedelta(minutes=1))
    conn.commit()
    if work_orders:
        exp.work_orders = fill_work_orders(conn, exp.alarm_ids, now=now)
    return exp


def _alarms(conn: psycopg.Connection, ids: dict[tuple[str, str], int], now: datetime) -> dict[str, int]:
    """Open alarms of three severities, one shelved and one closed (neither counts as active),
    and two lift incidents grouped under their root cause (`parent_id`, as the rules store links
    them, docs/rules.md):

    - el-b1-2, trapped now: the entrapment (-19) is the parent of the terminal's fault 01 and the
      alarm button (both -20, adopted; the button momentary, `cleared_unack`) and of "stopped
      outside the door zone" (-19, born its child). One incident: one row, 3 grouped.
    - el-b1-1, rescued: an entrapment raised -100, cleared -90 and acknowledged -85 (closed). Its
      fault 01 (-101) is still up after the rescue: an incident of its own (its root cleared
      while it is up). Its alarm button (-101, cleared at once) still waits for an
      acknowledgement: its root has closed, so it is listed on its own rather than on no list.

    What the rule engine writes (0100's contract). The forced-door alarm is inserted open and
    closed by `fill_work_orders` after dispatch has opened its order, as it happens live."""
    def m(minutes: float) -> datetime:
        return now - timedelta(minutes=minutes)

    lift_a, lift_b = ids[("demo", "el-b1-1")], ids[("demo", "el-b1-2")]
    # key (= rule id), scope, device, kind, severity, state, title, raised, cleared, closed, parent key
    rows: list[tuple[str, str, int, str, str, str, str, datetime, datetime | None, datetime | None, str | None]] = [
        ("entrapment", "demo/el-b1-2", lift_b, "entrapment", "critical", "active",
         "Passenger trapped in Building 1 lift B", m(19), None, None, None),
        ("entrapment-fault", "demo/el-b1-2#01", lift_b, "elevator_fault", "critical", "active",
         "Building 1 lift B: fault 01 safety circuit open", m(20), None, None, "entrapment"),
        ("entrapment-button", "demo/el-b1-2#90", lift_b, "alarm_button", "major", "cleared_unack",
         "Building 1 lift B: alarm button", m(20), m(20), None, "entrapment"),
        ("entrapment-outside", "demo/el-b1-2", lift_b, "stopped_outside_door_zone", "major", "active",
         "Building 1 lift B stopped outside the door zone", m(19), None, None, "entrapment"),
        ("fire_fault", "demo/fire-panel-1", ids[("demo", "fire-panel-1")], "fire_fault", "major",
         "acknowledged", "Fire panel reports a fault", m(2), None, None, None),
        ("offline", "demo/door-b2-lobby", ids[("demo", OFFLINE_DEVICE)], "device_offline", "minor",
         "active", "Building 2 lobby door offline", now, None, None, None),
        ("held", "demo/gate-north", ids[("demo", "gate-north")], "door_held_open", "warning",
         "shelved", "Gate held open", m(120), None, None, None),
        ("forced", "demo/gate-south", ids[("demo", "gate-south")], "door_forced_open", "major",
         "active", "Gate forced open", m(70), None, None, None),
        ("rescued", "demo/el-b1-1", lift_a, "entrapment", "critical", "cleared",
         "Passenger trapped in Building 1 lift A", m(100), m(90), m(85), None),
        ("rescued-fault", "demo/el-b1-1#01", lift_a, "elevator_fault", "critical", "active",
         "Building 1 lift A: fault 01 safety circuit open", m(101), None, None, "rescued"),
        ("rescued-button", "demo/el-b1-1#90", lift_a, "alarm_button", "major", "cleared_unack",
         "Building 1 lift A: alarm button", m(101), m(101), None, "rescued"),
    ]
    alarm_ids: dict[str, int] = {}
    with conn.transaction():
        for rule, scope, device, kind, severity, state, title, raised, cleared, closed, parent in rows:
            row = conn.execute(
                """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, state, title,
                                       detail, raised_at, cleared_at, acknowledged_at, closed_at, parent_id)
                   VALUES (%s, 'demo', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
                (rule, device, scope, kind, severity, state, title, Jsonb({}), raised, cleared, closed, closed,
                 alarm_ids[parent] if parent else None),
            ).fetchone()
            assert row is not None
            alarm_ids[rule] = int(row[0])
    return alarm_ids


@dataclass(frozen=True)
class WorkOrderFill:
    """Ids of the orders `fill_work_orders` made, by their letter in its docstring."""

    ids: dict[str, int]
    live_order_created: datetime


def fill_work_orders(conn: psycopg.Connection, alarm_ids: dict[str, int], *, now: datetime) -> WorkOrderFill:
    """Real work orders through `hub.dispatch` and `hub.workorders`, step by step in time order.

    On the site-local day of `now` (10:00 Wednesday in Shanghai), minutes before `now`:
    A  gate-south forced (alarm -70) dispatched -69 to tech-sun; accepted -60, on site -30,
       resolved -20, verified -15, closed -10 (all on time)
    B  fire-panel-1 fault (alarm -2) dispatched -1 to tech-sun; left assigned
    C  el-b1-2 entrapment (alarm -19) dispatched -18 to lift-co; accepted -16, on site -5
    D  repair in b1 created -200 (butler-chen, night shift); accepted -190, on site -150,
       resolved -20, rated 4
    E  complaint in b3 created -100 (butler-zhao); accepted -40 (late), on site -30, resolved -10, rated 2
    F  repair in the garage created -90 (butler-zhao); left assigned (accept overdue at -30)
    G  praise in b2 created -50 (butler-wang); closed -45
    H  repair in b2 created -60 (butler-wang); cancelled -55
    I  repair in b2 created -150 (butler-chen); accepted -140, cancelled -130
    The previous day: Y repair in b3 created -1800 (butler-chen); accepted -1680 (late), on site
    -1620, resolved -1500, rated 5. Attendance: butler-chen in -845 (the evening before), out
    -125; butler-wang in -130, out +600; tech-liu in -110 (never out). Now (the wall clock): Z a
    repair in b3 assigned by hand to tech-zhou, its accept clock running (due in an hour).
    """
    from hub.dispatch.engine import dispatch_alarm
    from hub.dispatch.policy import load_policy
    from hub.workorders import (
        ManualClock,
        check_in,
        check_out,
        create_order,
        rate_order,
        transition,
    )

    policy = load_policy()
    clock = ManualClock(now)
    ids: dict[str, int] = {}

    def at(minutes: int) -> ManualClock:
        clock.set(now + timedelta(minutes=minutes))
        return clock

    def request(key: str, minutes: int, kind: str, building: str) -> None:
        ids[key] = create_order(conn, site_id="demo", kind=kind, title=f"{kind} in {building}", actor="resident-1",
                                origin="app", building_id=building, reporter="resident-1", policy=policy,
                                clock=at(minutes)).id

    def step(key: str, minutes: int, state: str, actor: str = "staff") -> None:
        transition(conn, ids[key], state, actor, "app", policy=policy, clock=at(minutes))

    def dispatch(key: str, minutes: int, rule: str) -> None:
        order = dispatch_alarm(conn, alarm_ids[rule], policy=policy, clock=at(minutes))
        assert order is not None, f"no order for alarm {rule}"
        ids[key] = order

    request("Y", -1800, "repair", "b3")
    step("Y", -1680, "accepted")
    step("Y", -1620, "on_site")
    step("Y", -1500, "resolved")
    rate_order(conn, ids["Y"], rating=5, actor="resident-1", origin="app", clock=at(-1490))
    check_in(conn, "butler-chen", "demo", actor="badge", origin="test", at=now - timedelta(minutes=845))
    request("D", -200, "repair", "b1")
    step("D", -190, "accepted")
    request("I", -150, "repair", "b2")
    step("D", -150, "on_site")
    step("I", -140, "accepted")
    step("I", -130, "cancelled", "butler-chen")
    check_in(conn, "butler-wang", "demo", actor="badge", origin="test", at=now - timedelta(minutes=130))
    check_out(conn, "butler-chen", "demo", actor="badge", origin="test", at=now - timedelta(minutes=125))
    check_in(conn, "tech-liu", "demo", actor="badge", origin="test", at=now - timedelta(minutes=110))
    request("E", -100, "complaint", "b3")
    request("F", -90, "repair", "garage")
    dispatch("A", -69, "forced")
    step("A", -60, "accepted")
    conn.execute("""UPDATE alarms SET state = 'cleared', cleared_at = %s, closed_at = %s, updated_at = %s
                     WHERE id = %s""", (clock.now(), clock.now(), clock.now(), alarm_ids["forced"]))
    conn.commit()
    request("H", -60, "repair", "b2")
    step("H", -55, "cancelled", "sup-li")
    request("G", -50, "praise", "b2")
    step("G", -45, "closed", "butler-wang")
    step("E", -40, "accepted")
    step("A", -30, "on_site")
    step("E", -30, "on_site")
    step("A", -20, "resolved")
    step("D", -20, "resolved")
    dispatch("C", -18, "entrapment")
    step("C", -16, "accepted")
    step("A", -15, "verified", "sup-li")
    rate_order(conn, ids["D"], rating=4, actor="resident-1", origin="app", clock=at(-15))
    step("A", -10, "closed", "sup-li")
    step("E", -10, "resolved")
    step("C", -5, "on_site")
    rate_order(conn, ids["E"], rating=2, actor="resident-1", origin="app", clock=at(-5))
    dispatch("B", -1, "fire_fault")
    check_out(conn, "butler-wang", "demo", actor="badge", origin="test", at=now + timedelta(minutes=600))
    live = ManualClock()
    ids["Z"] = create_order(conn, site_id="demo", kind="repair", title="repair in b3", actor="resident-2",
                            origin="app", building_id="b3", auto_assign=False, policy=policy, clock=live).id
    transition(conn, ids["Z"], "assigned", "sup-li", "api", assignee="tech-zhou", policy=policy, clock=live)
    conn.commit()
    return WorkOrderFill(ids, live.now())


@contextmanager
def filled_database(admin_url: str, *, now: datetime, work_orders: bool = True,
                    prefix: str = "hub_dash") -> Iterator[str]:
    """A migrated (plain PostgreSQL) database of its own with the demo data; dropped afterwards."""
    from hub.config import TimescaleSettings
    from hub.registry import load_registry
    from hub.store.migrate import migrate
    from tests.support import ROOT, create_database, drop_database

    name, url = create_database(admin_url, prefix)
    try:
        migrate(url, TimescaleSettings(mode="off"))
        with psycopg.connect(url) as conn:
            fill_demo(conn, load_registry(ROOT / "examples" / "sites" / "demo.yaml"), now=now,
                      work_orders=work_orders)
        yield url
    finally:
        drop_database(admin_url, name)
