"""Scenarios end to end: simulators → real broker → the hub's ingest → PostgreSQL."""

from __future__ import annotations

import uuid

import orjson
import psycopg
import pytest

from hub.config import parse_mqtt_url
from hub.registry import load_registry
from simulators.runner import SimOptions, Simulation
from tests.hubproc import RunningHub
from tests.sims_support import (
    clean_broker,  # noqa: F401  (fixture)
    until,
)

pytestmark = pytest.mark.usefixtures("clean_broker")


def rows(db_url, sql, *params):
    with psycopg.connect(db_url) as c:
        return c.execute(sql, params).fetchall()


def events_of(db_url, device):
    return rows(db_url, """SELECT e.code, e.data, e.ts FROM events e JOIN devices d ON d.id = e.device_id
                           WHERE d.device_id = %s ORDER BY e.ts, e.code""", device)


def opts(**kw):
    return SimOptions(modbus=False, client_prefix=f"h{uuid.uuid4().hex[:6]}", **kw)


@pytest.fixture(scope="module")
def demo(demo_registry_path):
    return load_registry(demo_registry_path)


async def test_entrapment_lands_in_the_store(fresh_db_url, broker, demo, demo_registry_path):
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id=f"hub-{uuid.uuid4().hex[:6]}") as hub:
        async with Simulation(demo, parse_mqtt_url(broker.url), options=opts(speed=20, scenario="entrapment")):
            await until(lambda: any(c == "04" for c, _, _ in events_of(fresh_db_url, "el-b1-1")), within=30,
                        what="stopped-outside-door-zone event in the store")
            online = rows(fresh_db_url, "SELECT count(*) FROM device_status WHERE online")
            assert online[0][0] == 14     # every MQTT device said online (Modbus is not simulated here)
        await until(lambda: hub.pipeline.queue_depth == 0, what="queue drained")
    codes = [(c, (d or {}).get("active")) for c, d, _ in events_of(fresh_db_url, "el-b1-1")]
    assert ("01", True) in codes and ("90", None) in codes and ("11", True) in codes and ("04", True) in codes
    trapped = next(d for c, d, _ in events_of(fresh_db_url, "el-b1-1") if c == "11")
    assert trapped["between_floors"] is True
    stuck = rows(fresh_db_url, """SELECT r.metric, r.value FROM readings r JOIN devices d ON d.id = r.device_id
                                  WHERE d.device_id = 'el-b1-1' AND r.ts = (SELECT max(ts) FROM readings r2 WHERE r2.device_id = r.device_id)""")
    latest = dict(stuck)
    assert latest["running"] == 0 and latest["door_zone"] == 0 and latest["passenger"] == 1 and latest["door_state"] == 0
    assert rows(fresh_db_url, "SELECT reason FROM dead_letters WHERE reason NOT LIKE 'unknown device%%'") == []
    # A clean stop says offline for every device.
    assert rows(fresh_db_url, "SELECT count(*) FROM device_status WHERE online") == [(0,)]


async def test_fire_prealarm_then_confirmation_lands_in_the_store(fresh_db_url, broker, demo, demo_registry_path):
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id=f"hub-{uuid.uuid4().hex[:6]}") as hub:
        async with Simulation(demo, parse_mqtt_url(broker.url), options=opts(speed=20, scenario="fire")):
            await until(lambda: any(c == "fire_confirmed" for c, _, _ in events_of(fresh_db_url, "fire-panel-1")),
                        within=30, what="fire confirmation in the store")
            await until(lambda: rows(fresh_db_url, """SELECT 1 FROM readings r JOIN devices d ON d.id = r.device_id
                                      WHERE d.device_id = 'fire-panel-1' AND metric = 'detectors_in_alarm' AND value = 2"""),
                        what="panel reading two detectors in alarm")
        await until(lambda: hub.pipeline.queue_depth == 0, what="queue drained")
    panel = events_of(fresh_db_url, "fire-panel-1")
    alarms = [(d["point"], ts) for c, d, ts in panel if c == "fire_alarm"]
    assert [p for p, _ in alarms] == ["smoke-b1-f1", "smoke-b1-f2"]
    confirmed = [(d, ts) for c, d, ts in panel if c == "fire_confirmed"]
    assert confirmed[0][0] == {"zone": "b1-z1", "detectors": 2} and confirmed[0][1] >= alarms[1][1]
    smoke = rows(fresh_db_url, """SELECT max(value) FROM readings r JOIN devices d ON d.id = r.device_id
                                  WHERE d.device_id = 'smoke-b1-f1' AND metric = 'smoke'""")
    assert smoke[0][0] >= 0.15
    assert [c for c, _, _ in events_of(fresh_db_url, "smoke-b1-f1")].count("fire_alarm") == 1
    assert rows(fresh_db_url, "SELECT reason FROM dead_letters WHERE reason NOT LIKE 'unknown device%%'") == []


async def test_power_loss_marks_devices_offline_in_the_store(fresh_db_url, broker, demo, demo_registry_path):
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id=f"hub-{uuid.uuid4().hex[:6]}"):
        async with Simulation(demo, parse_mqtt_url(broker.url), options=opts(speed=10, scenario="power_loss")):
            def offline():
                return {d for (d,) in rows(fresh_db_url, """SELECT d.device_id FROM device_status s
                        JOIN devices d ON d.id = s.device_id WHERE NOT s.online""")}
            await until(lambda: {"el-b1-1", "gate-north", "smoke-b1-f1"} <= offline(), within=30, what="offline rows")
            assert "lane-in" not in offline()


async def test_garbage_and_duplicates_from_the_simulator_are_handled_by_ingest(fresh_db_url, broker, demo, demo_registry_path):
    from simulators.faults import GARBAGE, FaultPlan

    faults = FaultPlan(garbage=0.2, duplicate=0.2)
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id=f"hub-{uuid.uuid4().hex[:6]}") as hub:
        async with Simulation(demo, parse_mqtt_url(broker.url), options=opts(speed=10, faults=faults, record=True)) as sim:
            await until(lambda: sim.ticks >= 20, what="ticks")
            sent = [m for m in sim.messages if m.channel == "telemetry"]
        await until(lambda: hub.pipeline.queue_depth == 0, what="queue drained")
    dead = rows(fresh_db_url, "SELECT payload, reason FROM dead_letters WHERE reason NOT LIKE 'unknown device%%'")
    assert dead and all(bytes(p) in GARBAGE for p, _ in dead)
    # Every stored reading is one the engine produced; duplicates did not double them.
    stored = rows(fresh_db_url, """SELECT d.device_id, r.ts, count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                                   WHERE r.metric = 'fault' OR r.metric = 'fire_alarm' OR r.metric = 'running'
                                      OR r.metric = 'door_open' OR r.metric = 'barrier_state' OR r.metric = 'free_spaces'
                                   GROUP BY 1, 2""")
    produced = {(m.device, orjson.loads(m.payload)["ts"]) for m in sent}
    assert stored
    for device, ts, _ in stored:
        assert (device, int(ts.timestamp() * 1000)) in produced


async def test_the_hub_ingests_a_scaled_fleet_from_the_written_registry(fresh_db_url, broker, demo, tmp_path):
    from simulators.fleet import write_scaled_registry

    path = write_scaled_registry(demo, 3, tmp_path / "fleet.yaml")
    with RunningHub(fresh_db_url, broker.url, path, client_id=f"hub-{uuid.uuid4().hex[:6]}") as hub:
        async with Simulation(demo, parse_mqtt_url(broker.url), options=opts(speed=5, scale=3)):
            await until(lambda: rows(fresh_db_url, "SELECT count(DISTINCT device_id) FROM readings")[0][0] >= 42,
                        within=30, what="readings from 3 × 14 MQTT devices")
        await until(lambda: hub.pipeline.queue_depth == 0, what="queue drained")
    names = {d for (d,) in rows(fresh_db_url, "SELECT DISTINCT d.device_id FROM readings r JOIN devices d ON d.id = r.device_id")}
    assert {"el-b1-1-c01", "el-b1-1-c02", "el-b1-1-c03", "lane-out-c03"} <= names
    assert rows(fresh_db_url, "SELECT count(*) FROM dead_letters WHERE reason LIKE 'unknown device%%' AND topic LIKE '%%-c0_/%%'") == [(0,)]
