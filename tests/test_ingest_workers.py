"""Several hub workers on one broker and one database split the load without loss or duplicates."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg

from tests.hubproc import RunningHub
from tests.support import mqtt_client, wait_for


def test_two_workers_share_a_subscription(fresh_db_url, broker, demo_registry_path):
    if broker.kind != "mosquitto":
        import pytest

        pytest.skip("shared subscriptions need Mosquitto; the embedded amqtt broker has none")
    base = int(datetime.now(UTC).timestamp() * 1000)
    devices = ["el-b1-1", "el-b1-2", "el-b2-1", "gate-north", "gate-south"]
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-w1", mqtt_shared_group="ingest") as w1, \
         RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-w2", mqtt_shared_group="ingest") as w2:
        client = mqtt_client(broker.host, broker.port)
        info = None
        for i in range(2000):
            device = devices[i % len(devices)]
            body = {"ts": base - i, "floor": 1} if device.startswith("el") else {"ts": base - i, "door_open": False}
            info = client.publish(f"facility/demo/{device}/telemetry", json.dumps(body), qos=1)
        assert info is not None
        info.wait_for_publish(30)
        wait_for(lambda: w1.pipeline.stats.messages + w2.pipeline.stats.messages >= 2000, 30, message="2000 messages")
        client.disconnect()
        split = (w1.pipeline.stats.messages, w2.pipeline.stats.messages)
    assert sum(split) == 2000
    assert min(split) > 200, f"the broker did not split the load: {split}"
    with psycopg.connect(fresh_db_url) as c:
        assert c.execute("SELECT count(*), count(DISTINCT (device_id, metric, ts)) FROM readings").fetchone() == (2000, 2000)
