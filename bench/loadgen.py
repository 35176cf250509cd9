"""Synthetic contract-format telemetry for benchmarks and load tests.

Deterministic: message k of device d always carries the same timestamp and values, so a test
can tell exactly which rows must exist after a crash and redelivery.
"""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
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


PayloadFn = Callable[[int, float], dict[str, object]]  # (message number, epoch ms) → JSON body


class PacedPublishers:
    """Telemetry at a set rate from `mosquitto_pub -l` processes (C, QoS 1), one per topic.

    A Python QoS 1 publisher tops out near the rate the hub ingests (and, on two cores, takes
    the CPU the hub needs); the C client costs a few microseconds a message. A thread writes
    JSON lines into their stdin on a 10 ms schedule and counts what it wrote. Timestamps are
    epoch ms in 10 µs steps within a tick, so one topic's messages never share a timestamp
    (the store keeps one row per device, metric and time)."""

    def __init__(self, port: int, topics: list[str], payload: PayloadFn, *, host: str = "127.0.0.1", name: str = "paced") -> None:
        self.procs = [subprocess.Popen(["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-M", "2000", "-l",
                                        "-i", f"{name}-{n}-{time.time_ns()}", "-t", topic], stdin=subprocess.PIPE)
                      for n, topic in enumerate(topics)]
        self.payload = payload
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, rate: float) -> None:
        self._thread = threading.Thread(target=self._run, args=(rate,), daemon=True)
        self._thread.start()

    def _run(self, rate: float) -> None:
        began = time.perf_counter()
        while not self._stop.is_set():
            due = int((time.perf_counter() - began) * rate)
            if due > self.sent:
                now_ms = round(time.time() * 1000, 1)
                lines: list[list[bytes]] = [[] for _ in self.procs]
                for k in range(self.sent, due):
                    chunk = lines[k % len(self.procs)]
                    chunk.append(orjson.dumps(self.payload(k, now_ms + len(chunk) * 0.01)) + b"\n")
                for proc, chunk in zip(self.procs, lines, strict=True):
                    if chunk:
                        assert proc.stdin is not None
                        proc.stdin.write(b"".join(chunk))
                        proc.stdin.flush()
                self.sent = due
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop writing; return once every publisher has sent (and had acknowledged) its lines."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            proc.wait(60)

    def __enter__(self) -> PacedPublishers:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()
