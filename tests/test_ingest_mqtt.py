"""MQTT → store through the real broker and database, published by third-party clients."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import UTC, datetime

import psycopg
import pytest

from tests.hubproc import RunningHub
from tests.support import mqtt_client, wait_for

pytestmark = pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub (mosquitto-clients) not installed")


def _rows(db_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute(sql, params).fetchall()


def test_mosquitto_pub_telemetry_lands_as_exact_rows(fresh_db_url, broker, demo_registry_path):
    payload = {"ts": "2026-11-23T08:00:00.250Z", "floor": 7, "running": True, "speed": 1.5,
               "door_state": "closed_locked", "direction": 1}
    with RunningHub(fresh_db_url, broker.url, demo_registry_path) as hub:
        subprocess.run(
            ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1",
             "-t", "facility/demo/el-b1-1/telemetry", "-m", json.dumps(payload)],
            check=True, timeout=10,
        )
        wait_for(lambda: hub.pipeline.stats.readings >= 5, message="5 readings")
    rows = _rows(fresh_db_url, """SELECT r.ts, d.device_id, r.metric, r.value, r.text_value, r.quality
                                   FROM readings r JOIN devices d ON d.id = r.device_id ORDER BY r.metric""")
    ts = datetime(2026, 11, 23, 8, 0, 0, 250000, tzinfo=UTC)
    assert rows == [
        (ts, "el-b1-1", "direction", 1.0, "up", 0),
        (ts, "el-b1-1", "door_state", 0.0, "closed_locked", 0),
        (ts, "el-b1-1", "floor", 7.0, None, 0),
        (ts, "el-b1-1", "running", 1.0, None, 0),
        (ts, "el-b1-1", "speed", 1.5, None, 0),
    ]
    status = _rows(fresh_db_url, "SELECT online FROM device_status s JOIN devices d ON d.id = s.device_id WHERE d.device_id = 'el-b1-1'")
    assert status == [(True,)]


def test_malformed_inputs_are_dead_lettered_and_ingest_continues(fresh_db_url, broker, demo_registry_path):
    now = datetime.now(UTC)
    cases = {
        "bad json": ("facility/demo/el-b1-1/telemetry", b'{"floor": 3,'),
        "unknown device": ("facility/demo/no-such-lift/telemetry", b'{"floor": 3}'),
        "bad ts": ("facility/demo/el-b1-1/telemetry", b'{"ts": "yesterday", "floor": 3}'),
        "string for number": ("facility/demo/el-b1-1/telemetry", b'{"speed": "fast"}'),
        "1 MB payload": ("facility/demo/el-b1-1/telemetry", b'{"floor": 3, "pad": "' + b"x" * (1024 * 1024) + b'"}'),
    }
    expected_reason = {
        "bad json": "bad JSON", "unknown device": "unknown device demo/no-such-lift",
        "bad ts": "bad timestamp", "string for number": "field 'speed': expected a number",
        "1 MB payload": "payload too large",
    }
    with RunningHub(fresh_db_url, broker.url, demo_registry_path) as hub:
        client = mqtt_client(broker.host, broker.port)
        for topic, payload in cases.values():
            client.publish(topic, payload, qos=1).wait_for_publish(5)
        good = {"ts": now.isoformat(), "floor": 4}
        client.publish("facility/demo/el-b1-2/telemetry", json.dumps(good), qos=1).wait_for_publish(5)
        wait_for(lambda: hub.pipeline.stats.dead_letters >= 5 and hub.pipeline.stats.readings >= 1, message="dead letters and the good reading")
        client.disconnect()
    dead = _rows(fresh_db_url, "SELECT topic, payload, reason FROM dead_letters ORDER BY id")
    assert len(dead) == 5
    by_payload = {bytes(p): (t, r) for t, p, r in dead}
    for name, (topic, payload) in cases.items():
        assert payload in by_payload, f"{name} not dead-lettered with its raw bytes"
        got_topic, reason = by_payload[payload]
        assert got_topic == topic
        assert expected_reason[name] in reason, (name, reason)
    assert _rows(fresh_db_url, "SELECT metric, value FROM readings") == [("floor", 4.0)]


def test_duplicate_and_flood_of_garbage_mixed_with_good(fresh_db_url, broker, demo_registry_path):
    """Duplicated messages store once; 2,000 garbage messages do not stop 2,000 good ones."""
    base = datetime.now(UTC)
    with RunningHub(fresh_db_url, broker.url, demo_registry_path) as hub:
        client = mqtt_client(broker.host, broker.port, max_inflight=500)
        last = None
        for i in range(2000):
            ts = int(base.timestamp() * 1000) - i * 100
            good = json.dumps({"ts": ts, "floor": i % 18, "speed": 1.0}).encode()
            client.publish("facility/demo/el-b2-1/telemetry", good, qos=1)
            if i % 10 == 0:
                client.publish("facility/demo/el-b2-1/telemetry", good, qos=1)  # duplicate
            last = client.publish("facility/demo/el-b2-1/telemetry", b"\xff\xfe garbage %d" % i, qos=1)
        assert last is not None
        last.wait_for_publish(30)
        wait_for(lambda: hub.pipeline.stats.messages >= 4200, 60, message="all messages processed")
        client.disconnect()
    (readings,) = _rows(fresh_db_url, "SELECT count(*) FROM readings")[0]
    (dead,) = _rows(fresh_db_url, "SELECT count(*) FROM dead_letters")[0]
    assert readings == 4000
    assert dead == 2000


def test_cli_migrate_and_doctor(fresh_db_url, broker, demo_registry_path, tmp_path):
    import os
    import sys

    env = {**os.environ, "HUB_DATABASE_URL": fresh_db_url, "HUB_MQTT_URL": broker.url, "HUB_REGISTRY": str(demo_registry_path)}
    out = subprocess.run([sys.executable, "-m", "hub", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "schema up to date" in out.stdout and "TimescaleDB features" in out.stdout
    doc = subprocess.run([sys.executable, "-m", "hub", "doctor"], env=env, capture_output=True, text=True, timeout=60)
    lines = doc.stdout.splitlines()
    names = [line.split()[1] for line in lines]
    assert {"config", "registry", "database", "schema", "timescale", "broker", "modbus"} <= set(names)
    # the demo's Modbus simulators are not running in this test, so that check fails, and says so
    assert doc.returncode == 1
    assert next(line for line in lines if line.split()[1] == "modbus").startswith("FAIL")
    assert next(line for line in lines if line.split()[1] == "broker").startswith("ok")
    env["HUB_MQTT_URL"] = "mqtt://127.0.0.1:1"
    bad = subprocess.run([sys.executable, "-m", "hub", "doctor"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert any(line.startswith("FAIL") and " broker " in line for line in bad.stdout.splitlines())


def test_acknowledged_messages_are_not_redelivered_after_clean_restart(fresh_db_url, broker, demo_registry_path):
    """Acks reach the broker: a restart with the same persistent session gets nothing again."""
    base = int(datetime.now(UTC).timestamp() * 1000)
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-ack-test") as hub:
        client = mqtt_client(broker.host, broker.port)
        for i in range(3000):
            info = client.publish("facility/demo/el-b1-2/telemetry", json.dumps({"ts": base - i, "floor": 1}), qos=1)
        info.wait_for_publish(30)
        wait_for(lambda: hub.pipeline.stats.messages >= 3000, 30, message="3000 messages")
        client.disconnect()
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-ack-test") as hub:
        time.sleep(2.0)
        assert hub.pipeline.stats.messages == 0, "acknowledged messages were redelivered"
    assert _rows(fresh_db_url, "SELECT count(*) FROM readings")[0][0] == 3000


def test_buffered_client_delivers_every_message_in_order_and_keeps_per_topic_callbacks(broker):
    """The hub's paho client reads the socket in chunks and skips paho's topic matcher: a burst of
    small and large messages still arrives whole and in order, and a per-topic callback, once
    added, still takes its topic's messages away from `on_message`."""
    import threading

    from drivers.mqtt.connection import MqttConnection, MqttOptions
    from hub.config import parse_mqtt_url

    got: list[tuple[str, bytes]] = []
    special: list[bytes] = []
    done = threading.Event()
    conn = MqttConnection(parse_mqtt_url(broker.url), MqttOptions(client_id="buffered-test", clean_session=True),
                          subscriptions=[("buffered/#", 1)],
                          on_message=lambda topic, payload, token, redelivered: got.append((topic, payload)))
    with conn:
        conn.client.message_callback_add("buffered/special", lambda c, u, m: (special.append(m.payload), done.set()))
        pub = mqtt_client(broker.host, broker.port)
        sizes = [1, 100, 70_000, 5, 200_000, 3] * 300   # crosses the 64 KiB read chunks both ways
        for i, size in enumerate(sizes):
            pub.publish(f"buffered/{i % 7}", (b"%06d" % i) + b"x" * size, qos=1)
        pub.publish("buffered/special", b"only for the callback", qos=1)
        wait_for(lambda: len(got) == len(sizes) and done.is_set(), 30, message="every message")
        pub.disconnect()
    assert [int(p[:6]) for _, p in got] == list(range(len(sizes)))
    assert [len(p) - 6 for _, p in got] == sizes
    assert [t for t, _ in got] == [f"buffered/{i % 7}" for i in range(len(sizes))]
    assert special == [b"only for the callback"]
