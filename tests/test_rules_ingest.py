"""Rules over real ingest: MQTT publish → broker → hub ingest → commit → rule engine → alarms.

One hub (with the rules component) per module; each test uses its own devices of the demo
site. Durations are short so the suite stays quick; timestamps are real time.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import psycopg
import pytest

from hub.store.migrate import migrate
from rules import alarms
from rules.component import RulesComponent
from tests.hubproc import RunningHub
from tests.support import ROOT, create_database, drop_database, mqtt_client, wait_for

DEMO = ROOT / "examples" / "sites" / "demo.yaml"


def rules_text() -> str:
    local = datetime.now(ZoneInfo("Asia/Shanghai"))
    later = (local + timedelta(hours=3)).strftime("%H:00")
    much_later = (local + timedelta(hours=4)).strftime("%H:00")
    return f"""
watchlists:
  cards: ["C-666"]
  plates: ["沪A12345"]
maintenance:
  - scope: {{kinds: [elevator]}}
    condition: {{metric: service_mode, in: [inspection]}}
rules:
  - id: hot
    kind: threshold
    title: "{{name}} hot {{temperature}}"
    scope: {{devices: [smoke-b1-f1, smoke-b2-f1, smoke-b3-f1]}}
    condition: {{metric: temperature, op: ">", value: 57, clear: 50}}
    for: 1 s
    flap_count: 3
    flap_clear_for: 30 s
  - id: trapped
    kind: composite
    title: "trapped in {{name}}"
    severity: critical
    alarm: entrapment
    scope: {{kinds: [elevator]}}
    all:
      - {{metric: passenger, op: "==", value: 1}}
      - {{metric: door_state, in: [closed_locked]}}
      - {{metric: running, op: "==", value: 0}}
    for: 2 s
  - id: offline
    kind: offline
    title: "{{name}} offline"
    condition: {{metric: online, op: "==", value: 0}}
    for: 1 s
    suppress_in_maintenance: false
    group: {{by: building, min_devices: 3, window: 2 min, alarm: power_loss, title: "{{count}} offline in {{group}}"}}
  - id: tamper
    kind: state
    title: "{{name}} tamper"
    scope: {{kinds: [gate]}}
    condition: {{metric: tamper, op: "==", value: 1}}
  - id: tamper-at-night-only
    kind: state
    title: "{{name}} tamper (scheduled)"
    scope: {{kinds: [gate]}}
    condition: {{metric: tamper, op: "==", value: 1}}
    schedule: {{start: "{later}", end: "{much_later}"}}
  - id: pressure-drop
    kind: rate
    title: "pressure dropping"
    scope: {{kinds: [fire_module]}}
    condition: {{metric: pressure, op: "<", value: -0.05, rate: true}}
  - id: lane-silent
    kind: missing
    title: "{{name}} silent"
    scope: {{devices: [lane-out]}}
    after: 2 s
  - id: denied
    kind: count
    title: "{{count}} denied"
    scope: {{kinds: [gate]}}
    codes: [denied]
    count: 3
    window: 10 s
  - id: lift-faults
    kind: event
    title: "fault {{code}}"
    scope: {{kinds: [elevator]}}
    codes: ["01", "11"]
    clear_codes: ["40"]
  - id: revoked
    kind: watchlist
    title: "card {{value}}"
    scope: {{kinds: [gate]}}
    codes: [granted]
    field: card
    watchlist: cards
  - id: plate
    kind: watchlist
    title: "plate {{value}}"
    scope: {{kinds: [parking_lane]}}
    codes: [entry]
    field: plate
    watchlist: plates
  - id: fire
    kind: correlation
    title: "fire in {{group}}"
    severity: critical
    scope: {{kinds: [fire_detector]}}
    condition: {{metric: fire_alarm, op: "==", value: 1}}
    group_by: zone
    min_devices: 2
    window: 2 min
"""


class Env:
    def __init__(self, url: str, hub: RunningHub, component: RulesComponent, client, rules_path: Path) -> None:
        self.url, self.hub, self.component, self.client, self.rules_path = url, hub, component, client, rules_path

    def send(self, device: str, channel: str = "telemetry", payload: object = None, **values: object) -> None:
        body = payload if payload is not None else {"ts": datetime.now(UTC).isoformat(), **values}
        data = body if isinstance(body, bytes | str) else json.dumps(body)
        self.client.publish(f"facility/demo/{device}/{channel}", data, qos=1).wait_for_publish(5)

    def alarms(self, rule: str, scope: str | None = None) -> list[tuple]:
        with psycopg.connect(self.url) as c:
            sql = "SELECT id, state, scope_key, title, raised_at, cleared_at, detail, severity FROM alarms WHERE rule_id = %s"
            params: list[object] = [rule]
            if scope:
                sql += " AND scope_key = %s"
                params.append(scope)
            return c.execute(sql + " ORDER BY id", params).fetchall()

    def wait_alarm(self, rule: str, scope: str | None = None, state: str | None = None, timeout: float = 10) -> tuple:
        def found():
            rows = self.alarms(rule, scope)
            return [r for r in rows if state is None or r[1] == state]
        try:
            return wait_for(found, timeout, message=f"alarm {rule} {scope} {state}")[-1]  # type: ignore[index]
        except AssertionError as exc:
            eng = self.component.engine
            groups = {k: (g.members, g.active) for k, g in eng.gtrk.items()} if eng else None
            raise AssertionError(f"{exc}; rows {self.alarms(rule)}; stats {self.component.stats}; groups {groups};"
                                 f" late {eng.late_rows if eng else None}") from None


@pytest.fixture(scope="module")
def env(pg_server, broker, tmp_path_factory):
    name, url = create_database(pg_server.admin_url)
    migrate(url)
    rules_path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules_path.write_text(rules_text(), encoding="utf-8")
    component = RulesComponent(rules_path=rules_path, tick_s=0.1, grace_s=0.3, poll_s=0.3)
    client = mqtt_client(broker.host, broker.port)
    try:
        with RunningHub(url, broker.url, DEMO, components=[component], client_id="hub-rules-test") as hub:
            yield Env(url, hub, component, client, rules_path)
    finally:
        client.disconnect()
        with contextlib.suppress(psycopg.Error):
            drop_database(pg_server.admin_url, name)


def test_threshold_exactly_at_value_then_above_then_hysteresis(env):
    env.send("smoke-b1-f1", temperature=57.0)
    time.sleep(1.6)
    assert env.alarms("hot", "demo/smoke-b1-f1") == []
    sent = datetime.now(UTC)
    env.send("smoke-b1-f1", temperature=58.5)
    row = env.wait_alarm("hot", "demo/smoke-b1-f1")
    assert row[1] == "active" and row[3] == "smoke-b1-f1 hot 58.5"
    assert abs((row[4] - sent).total_seconds() - 1.0) < 0.3  # raised at since + 1 s, data time
    env.send("smoke-b1-f1", temperature=52.0)  # between clear and value: stays
    time.sleep(1.0)
    assert env.alarms("hot", "demo/smoke-b1-f1")[-1][1] == "active"
    env.send("smoke-b1-f1", temperature=49.0)
    env.wait_alarm("hot", "demo/smoke-b1-f1", "cleared_unack")


def test_flapping_around_the_threshold_is_one_alarm(env):
    for i in range(8):
        env.send("smoke-b2-f1", temperature=60.0 if i % 2 == 0 else 45.0)
        time.sleep(1.3)
    rows = env.alarms("hot", "demo/smoke-b2-f1")
    assert len(rows) == 1, rows
    assert rows[0][6].get("flapping") is True
    assert rows[0][1] == "active"  # flapping: recovery must hold 30 s before it clears


def test_out_of_order_and_late_data(env):
    t = datetime.now(UTC)
    # One message, out of order: in time order 60 then 40 half a second later: no 1 s episode.
    env.send("smoke-b3-f1", payload=[{"ts": (t + timedelta(seconds=0.5)).isoformat(), "temperature": 40.0},
                                     {"ts": t.isoformat(), "temperature": 60.0}])
    time.sleep(2.0)
    assert env.alarms("hot", "demo/smoke-b3-f1") == []
    env.send("smoke-b3-f1", temperature=70.0)
    env.wait_alarm("hot", "demo/smoke-b3-f1", "active")
    # A late reading from before the episode, showing recovery, does not clear the alarm.
    env.send("smoke-b3-f1", payload={"ts": (t - timedelta(seconds=30)).isoformat(), "temperature": 20.0})
    time.sleep(1.0)
    assert env.alarms("hot", "demo/smoke-b3-f1")[-1][1] == "active"
    with psycopg.connect(env.url) as c:  # it was stored all the same
        assert c.execute("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
                         " WHERE d.device_id = 'smoke-b3-f1' AND r.value = 20").fetchone() == (1,)


def test_entrapment_raises_after_its_delay_and_clears_when_doors_open(env):
    sent = datetime.now(UTC)
    env.send("el-b1-1", passenger=1, door_state="closed_locked", running=0, floor=3)
    row = env.wait_alarm("trapped", "demo/el-b1-1")
    assert row[7] == "critical" and row[3] == "trapped in Building 1 lift A"
    assert abs((row[4] - sent).total_seconds() - 2.0) < 0.3
    env.send("el-b1-1", door_state="open")
    env.wait_alarm("trapped", "demo/el-b1-1", "cleared_unack")


def test_device_offline_during_the_window_and_offline_alarm(env):
    env.send("el-b1-2", passenger=1, door_state="closed_locked", running=0)
    time.sleep(0.5)
    env.send("el-b1-2", channel="status", payload="offline")
    env.wait_alarm("offline", "demo/el-b1-2", "active")
    time.sleep(2.5)
    assert env.alarms("trapped", "demo/el-b1-2") == []  # stale state raises nothing
    env.send("el-b1-2", passenger=1, door_state="closed_locked", running=0)  # back: a fresh window
    env.wait_alarm("offline", "demo/el-b1-2", "cleared_unack")
    env.wait_alarm("trapped", "demo/el-b1-2", "active", timeout=5)


def test_inspection_mode_suppresses_then_condition_raises_after_it(env):
    env.send("el-b2-1", service_mode="inspection", passenger=1, door_state="closed_locked", running=0)
    time.sleep(3.0)
    assert env.alarms("trapped", "demo/el-b2-1") == []
    env.send("el-b2-1", service_mode="normal")
    env.wait_alarm("trapped", "demo/el-b2-1", "active")


def test_state_schedule_and_maintenance_table(env):
    env.send("gate-north", tamper=1)
    env.wait_alarm("tamper", "demo/gate-north", "active")
    time.sleep(0.5)
    assert env.alarms("tamper-at-night-only") == []  # outside its schedule now
    with psycopg.connect(env.url, autocommit=True) as c:
        d = c.execute("SELECT id FROM devices WHERE device_id = 'gate-south'").fetchone()[0]
        alarms.start_maintenance(c, d, "tech-zhou", reason="test")
        time.sleep(0.8)  # the component polls maintenance windows
        env.send("gate-south", tamper=1)
        time.sleep(1.0)
        assert env.alarms("tamper", "demo/gate-south") == []
        alarms.end_maintenance(c, d, "tech-zhou")
    env.send("gate-south", tamper=1)
    env.wait_alarm("tamper", "demo/gate-south", "active")


def test_rate_of_change(env):
    env.send("sprinkler-b1", pressure=1.0)
    time.sleep(1.0)
    env.send("sprinkler-b1", pressure=0.98)  # about -0.02/s: fine
    time.sleep(0.5)
    assert env.alarms("pressure-drop") == []
    time.sleep(0.5)
    env.send("sprinkler-b1", pressure=0.5)
    env.wait_alarm("pressure-drop", "demo/sprinkler-b1", "active")


def test_missing_data(env):
    env.send("lane-out", free_spaces=10)
    time.sleep(1.0)
    assert env.alarms("lane-silent") == []
    env.wait_alarm("lane-silent", "demo/lane-out", "active", timeout=5)
    env.send("lane-out", free_spaces=9)
    env.wait_alarm("lane-silent", "demo/lane-out", "cleared_unack")


def test_count_event_codes_and_watchlists(env):
    for _ in range(3):
        env.send("door-b2-lobby", channel="event", payload={"code": "denied", "data": {"card": "C-1"}})
    env.wait_alarm("denied", "demo/door-b2-lobby", "active")
    env.send("el-b3-1", channel="event", payload={"code": "11"})
    env.wait_alarm("lift-faults", "demo/el-b3-1#11", "active")
    env.send("el-b3-1", channel="event", payload={"code": "40"})
    env.wait_alarm("lift-faults", "demo/el-b3-1#11", "cleared_unack")
    env.send("gate-north", channel="event", payload={"code": "granted", "data": {"card": "C-666"}})
    env.wait_alarm("revoked", "demo/gate-north#C-666", "cleared_unack")  # momentary, needs an ack
    env.send("lane-in", channel="event", payload={"code": "entry", "data": {"plate": "沪A12345"}})
    env.wait_alarm("plate", "demo/lane-in#沪A12345")


def test_two_detectors_in_a_zone_confirm_a_fire_and_alarm_is_published(env, broker):
    got: list[tuple[str, dict]] = []
    sub = mqtt_client(broker.host, broker.port)
    subscribed: list[bool] = []
    sub.on_message = lambda c, u, m: got.append((m.topic, orjson.loads(m.payload)))
    sub.on_subscribe = lambda *a: subscribed.append(True)
    sub.subscribe("facility/demo/alarms/#", qos=1)
    wait_for(lambda: subscribed, 5, message="SUBACK")
    try:
        env.send("smoke-b1-f2", fire_alarm=1)
        time.sleep(0.8)
        assert env.alarms("fire") == []
        env.send("sprinkler-b1", pressure=0.5)  # unrelated noise
        # smoke-b1-f1 is in the same zone (b1-z1)
        env.send("smoke-b1-f1", fire_alarm=1)
        row = env.wait_alarm("fire", "demo/zone:b1-z1", "active")
        wait_for(lambda: any(t == f"facility/demo/alarms/{row[0]}" for t, _ in got), 5, message=f"alarm on MQTT {env.component.stats} {got}")
        msg = next(p for t, p in got if t == f"facility/demo/alarms/{row[0]}")
        assert msg["rule_id"] == "fire" and msg["state"] == "active" and msg["severity"] == "critical"
    finally:
        sub.disconnect()


def test_rules_reload_without_restart(env):
    before = env.component.stats["reloads"]
    text = env.rules_path.read_text(encoding="utf-8")
    env.rules_path.write_text(text + """
  - id: new-rule
    kind: state
    title: "{name} locked"
    scope: {devices: [door-b2-lobby]}
    condition: {metric: locked, op: "==", value: 1}
""", encoding="utf-8")
    wait_for(lambda: env.component.stats["reloads"] > before, 10, message="reload")
    env.send("door-b2-lobby", locked=1)
    env.wait_alarm("new-rule", "demo/door-b2-lobby", "active")
    # A broken file is reported and the running rules stay.
    env.rules_path.write_text(text + "\n  - id: broken\n    kind: nonsense\n", encoding="utf-8")
    time.sleep(1.0)
    assert env.component.stats["reloads"] == before + 1


def test_building_outage_is_one_parent_alarm(env):
    for device in ("lane-in", "lane-out", "meter-garage"):
        env.send(device, channel="status", payload="offline")
    parent = env.wait_alarm("offline", "demo/building:garage", "active")
    assert parent[3] == "3 offline in building:garage"
    time.sleep(1.5)
    children = [r for r in env.alarms("offline") if r[2] in ("demo/lane-in", "demo/lane-out", "demo/meter-garage")]
    with psycopg.connect(env.url) as c:
        linked = c.execute("SELECT count(*) FROM alarms WHERE parent_id = %s", (parent[0],)).fetchone()[0]
    assert len(children) == linked  # any device alarm raised before the group formed is linked to it
    assert len(children) <= 1
    for device in ("lane-in", "lane-out", "meter-garage"):
        env.send(device, channel="status", payload="online")
    env.wait_alarm("offline", "demo/building:garage", "cleared_unack")
