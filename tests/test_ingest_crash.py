"""Kill -9 of `hub run` under QoS 1 load, then restart: every message's rows exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from bench.loadgen import Load, publish, write_registry
from tests.support import wait_for

pytestmark = pytest.mark.slow


def _start_hub(db_url: str, broker_url: str, registry: str, log_path: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HUB_DATABASE_URL": db_url, "HUB_MQTT_URL": broker_url, "HUB_REGISTRY": registry,
        "HUB_API_ENABLED": "false", "HUB_MQTT_CLIENT_ID": "hub-crash-test", "HUB_LOG_LEVEL": "INFO",
    }
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _count(db_url: str) -> int:
    with psycopg.connect(db_url) as c:
        row = c.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


def _subscribed(log_path: str, times: int) -> bool:
    """The ingest session exists: `hub worker …` is logged after the ingest client subscribed
    (other components' MQTT clients connect earlier, so "MQTT connected" is not enough)."""
    with open(log_path, "rb") as f:
        return f.read().count(b"hub worker") >= times


def test_kill9_under_load_loses_and_duplicates_nothing(fresh_db_url, broker, tmp_path):
    if broker.kind != "mosquitto":
        pytest.skip("needs Mosquitto: the embedded amqtt broker does not redeliver a persistent session's "
                    "unacknowledged QoS 1 messages after a client crash (seen here), so it cannot show this")
    load = Load(site="crash", devices=100, messages=100_000, metrics=6)
    registry = str(write_registry(load, tmp_path / "crash.yaml"))
    log_path = str(tmp_path / "hub.log")
    hub = _start_hub(fresh_db_url, broker.url, registry, log_path)
    try:
        wait_for(lambda: _subscribed(log_path, 1), 60, message="hub subscribed")
        time.sleep(0.5)  # the SUBACK follows the subscribe by a moment
        sent = mp.get_context("fork").Value("q", 0)
        publisher = threading.Thread(target=publish, args=(broker.host, broker.port, load), kwargs={"processes": 2, "counter": sent})
        publisher.start()
        # Kill while the publisher is mid-way: some rows committed, most messages still coming.
        wait_for(lambda: sent.value >= 20_000 and _count(fresh_db_url) > 0, 120, message="ingest under way")
        hub.send_signal(signal.SIGKILL)
        hub.wait(10)
        at_kill = _count(fresh_db_url)
        published_at_kill = sent.value
        assert 0 < at_kill < load.readings, "the kill came too late to prove anything"
        assert published_at_kill < load.messages, "the publisher had finished before the kill"
        time.sleep(1.0)
        hub = _start_hub(fresh_db_url, broker.url, registry, log_path)
        publisher.join(180)
        assert not publisher.is_alive()
        assert sent.value == load.messages
        wait_for(lambda: _count(fresh_db_url) >= load.readings, 180, interval=0.5, message="all rows after restart")
        time.sleep(1.0)  # anything redelivered late must not add rows either
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(30)
    with psycopg.connect(fresh_db_url) as c:
        total, distinct_keys = c.execute(
            "SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings").fetchone()
        per_device = c.execute(
            "SELECT min(n), max(n), count(*) FROM (SELECT device_id, count(*) n FROM readings GROUP BY 1) s").fetchone()
        dead = c.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
    assert (total, distinct_keys) == (load.readings, load.readings)
    assert per_device == (load.readings // load.devices, load.readings // load.devices, load.devices)
    assert dead == 0
    print(f"\nkill -9 at {at_kill} rows ({published_at_kill} messages published); after restart {total} rows, 0 duplicates")


def test_a_redelivered_malformed_message_is_dead_lettered_once(fresh_db_url, broker, demo_registry_path):
    """The hub commits a dead letter and stops before acknowledging (as after a crash): the broker
    redelivers with DUP set and the dead letter is not written again. The same bytes sent afresh
    are a new message and are dead-lettered again."""
    if broker.kind != "mosquitto":
        pytest.skip("needs Mosquitto: the embedded amqtt broker does not redeliver a persistent session's "
                    "unacknowledged QoS 1 messages")
    from tests.hubproc import RunningHub
    from tests.support import mqtt_client

    bad = [b"{not json", b'{"ts": true, "floor": 1}', b'"just a string"']
    topic = "facility/demo/el-b1-1/telemetry"
    unknown = "facility/demo/no-such-lift/telemetry"

    def dead_letters() -> list[tuple[str, bytes]]:
        with psycopg.connect(fresh_db_url) as c:
            return sorted((t, bytes(p)) for t, p in c.execute("SELECT topic, payload FROM dead_letters").fetchall())

    client = mqtt_client(broker.host, broker.port)
    try:
        with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-dead-redelivery") as hub:
            hub.pipeline.acker = lambda tokens: None  # commit, never acknowledge: the broker keeps them in flight
            for payload in bad:
                client.publish(topic, payload, qos=1).wait_for_publish(5)
            client.publish(unknown, b'{"floor": 2}', qos=1).wait_for_publish(5)
            wait_for(lambda: hub.pipeline.stats.dead_letters >= 4, 10, message="4 dead letters committed")
        first = dead_letters()
        assert len(first) == 4
        with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-dead-redelivery") as hub:
            wait_for(lambda: hub.pipeline.stats.messages >= 4, 10, message="the 4 messages redelivered")
            assert hub.pipeline.stats.dead_letters == 0
            client.publish(topic, bad[0], qos=1).wait_for_publish(5)  # the same bytes, a new message
            wait_for(lambda: hub.pipeline.stats.messages >= 5, 10, message="the fresh copy")
        assert dead_letters() == sorted([*first, (topic, bad[0])])
    finally:
        client.disconnect()
        client.loop_stop()
