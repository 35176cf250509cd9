"""The load generator every fault test and benchmark counts on: what it reports as published must
be exactly what the broker acknowledged, past paho's 16-bit message ids."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen import MID_WINDOW, publish_all
from tests import faults


def test_publishing_more_than_65535_messages_gets_every_one_acknowledged(broker):
    """paho refuses a publish whose 16-bit id is still outstanding; a publisher that queued
    100,000 messages at once lost a third of them (the full broker-restart fault test did)."""
    n = 70_000
    assert n > 65_535 > MID_WINDOW
    items = [(f"loadgen/test/{i % 50}", b"x") for i in range(n)]
    assert faults.publish_items(broker.host, broker.port, items) == n


def test_a_load_the_broker_does_not_acknowledge_is_an_error(broker):
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{time.time_ns()}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.loop_stop()  # nobody reads the broker's PUBACKs any more
        with pytest.raises(RuntimeError, match="not acknowledged within 1 s"):
            publish_all(client, [("loadgen/test/stalled", b"x")], qos=1, timeout=1)
    finally:
        client.disconnect()
