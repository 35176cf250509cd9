"""The shipped Mosquitto config (examples/mosquitto/mosquitto.conf) says what it means, and the
broker behaves as the hub relies on."""

from __future__ import annotations

import re
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from hub.embedded.broker import BROKER_CONFIG
from tests import faults
from tests.support import wait_for

C_INT_MAX = 2**31 - 1


def _settings() -> list[tuple[int, str, str]]:
    out = []
    for lineno, line in enumerate(BROKER_CONFIG.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((lineno, key, value.strip()))
    return out


def test_numeric_settings_fit_mosquittos_int_parser():
    """Mosquitto reads numeric options with atoi() into a C int (src/conf.c, conf__parse_int):
    `max_queued_bytes 4294967296` became 0, which means *no* byte cap."""
    numeric = [(n, k, v) for n, k, v in _settings() if re.fullmatch(r"\d+", v)]
    assert {k for _, k, _ in numeric} >= {"max_inflight_messages", "max_queued_messages", "max_queued_bytes"}
    too_big = [f"line {n}: {k} {v}" for n, k, v in numeric if int(v) > C_INT_MAX]
    assert not too_big, f"wrap to garbage in Mosquitto: {too_big}"


def test_the_limits_that_keep_data_are_set():
    settings = {k: v for _, k, v in _settings()}
    assert int(settings["max_inflight_messages"]) > 20  # Mosquitto's default starves batch acks
    assert int(settings["max_queued_messages"]) > 1000  # the default drops QoS 1 for a slow hub
    assert settings["persistence"] == "true"


@pytest.mark.parametrize("resubscribe", [True, False], ids=["subscribes-again", "relies-on-session"])
def test_durable_shared_subscriber_that_reconnects_gets_every_message(broker, resubscribe):
    """Hub workers share a `$share/` subscription with persistent sessions; a worker that
    reconnects must keep its share (Mosquitto 2.0.12 fixed a bug in exactly this path), whether
    or not it subscribes again: the hub does, a crashed worker's session may not get to."""
    if broker.kind != "mosquitto":
        pytest.skip("shared subscriptions need Mosquitto; the embedded amqtt broker has none")
    run = time.time_ns()
    topic = f"brokertest/{run}"
    got: list[bytes] = []

    def session(first: bool) -> paho.Client:
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"share-{run}", clean_session=False)
        c.on_message = lambda c, u, msg: got.append(msg.payload)  # paho's one network thread
        c.on_connect = lambda c, u, f, r, p: c.subscribe(f"$share/g{run}/{topic}/#", 1) if first or resubscribe else None
        c.connect(broker.host, broker.port)
        c.loop_start()
        return c

    c = session(True)
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()
    c = session(False)
    try:
        time.sleep(0.5)
        n = faults.publish_items(broker.host, broker.port, [(f"{topic}/{i}", str(i).encode()) for i in range(500)])
        wait_for(lambda: len(got) >= n, 10, message="every shared message")
        assert sorted(int(p) for p in got) == list(range(500))
    finally:
        c.disconnect()
        c.loop_stop()
