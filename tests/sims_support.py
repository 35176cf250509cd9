"""Shared helpers of the simulator tests: a recording MQTT subscriber and a simulation runner."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import orjson
import pytest

from hub.config import parse_mqtt_url
from tests.support import free_port, mqtt_client


class Recorder:
    """Subscribes `facility/#` and keeps every message (topic, payload, retained flag)."""

    def __init__(self, broker_url: str, topic: str = "facility/#") -> None:
        url = parse_mqtt_url(broker_url)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt_client(url.host, url.port)
        self.client.on_message = self._on_message
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, qos=1)
        done.wait(5)

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def where(self, pred: Callable[[str, bytes], bool], *, retained: bool = False) -> list[tuple[str, bytes]]:
        """Live messages matching `pred` (retained ones left by earlier runs only if asked)."""
        with self.lock:
            return [(t, p) for t, p, r in self.messages if (retained or not r) and pred(t, p)]

    def json(self, suffix: str) -> list[tuple[str, dict]]:
        out = []
        for topic, payload in self.where(lambda t, p: t.endswith(suffix)):
            try:
                out.append((topic, orjson.loads(payload)))
            except orjson.JSONDecodeError:
                continue
        return out

    def events(self, device: str | None = None) -> list[dict]:
        return [b for t, b in self.json("/event") if device is None or t.split("/")[2] == device]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Callable[[], object], within: float = 15.0, what: str = "condition") -> object:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


def modbus_ports() -> dict[int, int]:
    return {15020: free_port(), 15021: free_port()}


def clear_retained(broker_url: str, settle_s: float = 0.5) -> int:
    """Remove every retained `facility/…` message (simulated devices leave their status behind)."""
    rec = Recorder(broker_url)
    time.sleep(settle_s)
    with rec.lock:
        topics = {t for t, p, retained in rec.messages if retained and p}
    for topic in topics:
        rec.client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    rec.close()
    return len(topics)


@pytest.fixture
def clean_broker(broker):
    """Leave the session's broker as we found it: no retained statuses of simulated devices."""
    yield broker
    clear_retained(broker.url)
