"""Synthetic contract-format telemetry for benchmarks and load tests.

Deterministic: message k of device d always carries the same timestamp and values, so a test
can tell exactly which rows must exist after a crash and redelivery.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

METRICS = ("temperature", "pressure", "current", "voltage", "load", "speed")


@dataclass(frozen=True, kw_only=True)
class Load:
    site: str = "bench"
    devices: int = 100
    messages: int = 10_000  # in total, spread round-robin over the devices
    metrics: int = 6
    # Recent enough to pass the hub's age check; fixed per Load so every process agrees.
    start: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6))
    step_ms: int = 10

    def device_id(self, d: int) -> str:
        return f"dev-{d:05d}"

    def topic(self, d: int) -> str:
        return f"facility/{self.site}/{self.device_id(d)}/telemetry"

    def payload(self, k: int) -> bytes:
        n = k // self.devices
        ts = int((self.start + timedelta(milliseconds=n * self.step_ms)).timestamp() * 1000)
        body: dict[str, object] = {"ts": ts, "seq": n}
        for i, name in enumerate(METRICS[: self.metrics]):
            body[name] = round((k * 7 + i * 13) % 1000 / 10, 1)
        return orjson.dumps(body)

    def items(self, part: int = 0, parts: int = 1) -> Iterator[tuple[str, bytes]]:
        for k in range(part, self.messages, parts):
            yield self.topic(k % self.devices), self.payload(k)

    @property
    def readings(self) -> int:
        return self.messages * self.metrics


def write_registry(load: Load, path: Path) -> Path:
    """A registry with the load's devices, one model of `metrics` numbers each."""
    doc = {
        "models": [{
            "id": "bench-sensor", "kind": "sensor", "protocol": "mqtt",
            "metrics": [{"name": m, "type": "number"} for m in METRICS[: load.metrics]],
        }],
        "sites": [{
            "id": load.site, "name": "Benchmark site", "timezone": "Asia/Shanghai",
            "devices": [{"id": load.device_id(d), "model": "bench-sensor"} for d in range(load.devices)],
        }],
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _publish_part(host: str, port: int, load: Load, part: int, parts: int, qos: int, inflight: int, counter: object) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{part}-{time.time_ns()}", clean_session=True)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    last = None
    sent = 0
    for topic, payload in load.items(part, parts):
        # Message ids are 16-bit: never run more than ~half their range ahead of the broker's
        # acknowledgements, or paho refuses a publish whose id is still outstanding.
        while len(client._out_messages) >= 30_000:
            time.sleep(0.005)
        last = client.publish(topic, payload, qos=qos)
        sent += 1
        if counter is not None and sent % 1000 == 0:
            with counter.get_lock():  # type: ignore[attr-defined]
                counter.value += 1000  # type: ignore[attr-defined]
    if last is not None:
        last.wait_for_publish(120)
    # wait until every QoS 1 message is acknowledged by the broker
    deadline = time.monotonic() + 120
    while client._out_messages and time.monotonic() < deadline:
        time.sleep(0.01)
    if counter is not None:
        with counter.get_lock():  # type: ignore[attr-defined]
            counter.value += sent % 1000  # type: ignore[attr-defined]
    client.disconnect()
    client.loop_stop()


def publish(host: str, port: int, load: Load, *, processes: int = 2, qos: int = 1, inflight: int = 2000, counter: object = None) -> float:
    """Publish the whole load from `processes` paho clients; returns seconds taken."""
    ctx = mp.get_context("fork")
    started = time.perf_counter()
    procs = [ctx.Process(target=_publish_part, args=(host, port, load, p, processes, qos, inflight, counter), daemon=True)
             for p in range(processes)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"publisher exited with {p.exitcode}")
    return time.perf_counter() - started
