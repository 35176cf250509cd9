"""Synthetic contract-format telemetry for benchmarks and load tests.

Deterministic: message k of device d always carries the same timestamp and values, so a test
can tell exactly which rows must exist after a crash and redelivery.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


# paho's message ids are 16-bit and it refuses a publish whose id is still unacknowledged
# (MQTT_ERR_QUEUE_SIZE): a publisher must never run 65,535 messages ahead of the broker.
MID_WINDOW = 30_000


def publish_all(client: paho.Client, items: Iterable[tuple[str, bytes]], *, qos: int = 1, timeout: float = 120,
                progress: Callable[[int], None] | None = None) -> int:
    """Publish every item through a connected, looping client and wait for the broker's
    acknowledgements; returns how many were published.

    Keeps at most MID_WINDOW messages outstanding, and raises if paho refuses a publish or the
    broker has not acknowledged them all `timeout` seconds after the last, so a load that did
    not get through is an error, never a silently smaller load.
    """
    sent = 0
    for topic, payload in items:
        while len(client._out_messages) >= MID_WINDOW:
            time.sleep(0.005)
        info = client.publish(topic, payload, qos=qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise RuntimeError(f"paho refused publish {sent + 1} on {topic}: {paho.error_string(info.rc)}")
        sent += 1
        if progress is not None and sent % 1000 == 0:
            progress(1000)
    if progress is not None and sent % 1000:
        progress(sent % 1000)
    deadline = time.monotonic() + timeout
    while client._out_messages:
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{len(client._out_messages):,} of {sent:,} messages not acknowledged within {timeout:.0f} s")
        time.sleep(0.01)
    return sent


def _publish_part(host: str, port: int, load: Load, part: int, parts: int, qos: int, inflight: int, counter: object) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"loadgen-{part}-{time.time_ns()}", clean_session=True)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    client.loop_start()

    def progress(n: int) -> None:
        with counter.get_lock():  # type: ignore[attr-defined]
            counter.value += n  # type: ignore[attr-defined]

    try:
        publish_all(client, load.items(part, parts), qos=qos, progress=progress if counter is not None else None)
    finally:
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


# -- paced publishers: MQTT 3.1.1 QoS 1 frames written in bulk from their own process ---------
def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_frame(client_id: str) -> bytes:
    """CONNECT, clean session, no keepalive (the load is never idle long enough to need one)."""
    body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(client_id)
    return b"\x10" + _remaining_length(len(body)) + body


def publish_frame(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """PUBLISH at QoS 1; `topic` already length-prefixed."""
    return b"\x32" + _remaining_length(len(topic) + 2 + len(payload)) + topic + struct.pack("!H", packet_id) + payload


class _Session:
    """One publishing connection: frames go out in one `sendall` per tick; a reader thread
    counts the broker's PUBACKs (the only packets it sends after CONNACK)."""

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_frame(client_id))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the load generator: CONNACK {connack.hex()}")
        self.sock.settimeout(None)
        self.next_id = 0
        self.sent = 0
        self.acked = 0
        self.error: str | None = None
        self.reader = threading.Thread(target=self._read_acks, daemon=True)
        self.reader.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the load generator's connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
                whole = len(pending) - len(pending) % 4
                for i in range(0, whole, 4):
                    if pending[i] != 0x40 or pending[i + 1] != 0x02:
                        raise ConnectionError(f"unexpected packet from the broker: {pending[i:i + 4].hex()}")
                self.acked += whole // 4
                pending = pending[whole:]
        except OSError as exc:  # ConnectionError included
            self.error = str(exc)

    def frames(self, items: list[tuple[bytes, bytes]]) -> bytes:
        out = []
        for topic, payload in items:
            self.next_id = self.next_id % 65535 + 1
            out.append(publish_frame(topic, self.next_id, payload))
        return b"".join(out)

    def send(self, items: list[tuple[bytes, bytes]]) -> None:
        # Packet ids are 16-bit: never run more than ~half their range ahead of the broker.
        while self.sent - self.acked > 30_000 and self.error is None:
            time.sleep(0.001)
        self.sock.sendall(self.frames(items))
        self.sent += len(items)

    def close(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < self.sent and self.error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
            self.sock.shutdown(socket.SHUT_WR)
        self.reader.join(5)
        self.sock.close()


def _paced_main(host: str, port: int, topics: list[str], payload: PayloadFn, connections: int, name: str,
                rate: float, stop: Any, sent: Any, acked: Any, ready: Any, errors: Any) -> None:
    try:
        sessions = [_Session(host, port, f"{name}-{c}-{time.time_ns()}") for c in range(connections)]
    except OSError as exc:
        errors.put(f"load generator could not connect: {exc}")
        ready.set()
        return
    encoded = [_utf8(t) for t in topics]
    ready.set()
    began = time.perf_counter()
    done = 0
    while not stop.is_set():
        due = int((time.perf_counter() - began) * rate)
        if due > done:
            now_ms = round(time.time() * 1000, 1)
            per_topic: dict[int, int] = {}
            batches: list[list[tuple[bytes, bytes]]] = [[] for _ in sessions]
            for k in range(done, due):
                t = k % len(topics)
                n = per_topic.get(t, 0)
                per_topic[t] = n + 1
                body = orjson.dumps(payload(k, now_ms + n * 0.01))
                batches[t % len(sessions)].append((encoded[t], body))
            for session, batch in zip(sessions, batches, strict=True):
                if batch:
                    session.send(batch)
            done = due
            sent.value = done
            acked.value = sum(s.acked for s in sessions)
        time.sleep(0.01)
    for session in sessions:
        session.close(60)
    acked.value = sum(s.acked for s in sessions)
    for session in sessions:
        if session.error or session.acked < session.sent:
            errors.put(f"{session.sent - session.acked} of {session.sent} messages not acknowledged"
                        f" ({session.error or 'timed out'})")


class PacedPublishers:
    """Telemetry at a set rate, QoS 1, over `connections` MQTT sessions, from its own process.

    The load shares two cores with the hub, the broker and PostgreSQL, so it must cost far less
    than what it measures. Measured at 20,000 msg/s: 100 `mosquitto_pub -l` processes took
    0.7 of a core (a wake-up, a write and an acknowledgement read per message per process) and
    starved the hub; paho costs ~25 µs a message in Python. Here one process writes pre-framed
    PUBLISH packets with one `sendall` per connection every 10 ms and counts PUBACKs, a few
    microseconds a message. Timestamps are epoch ms in 10 µs steps within a tick, so one topic's
    messages never share a timestamp (the store keeps one row per device, metric and time).
    `payload` must be a module-level function (the process is spawned, not forked).
    """

    def __init__(self, port: int, topics: list[str], payload: PayloadFn, *, host: str = "127.0.0.1",
                 name: str = "paced", connections: int = 4) -> None:
        self.port = port
        self.host = host
        self.topics = topics
        self.payload = payload
        self.name = name
        self.connections = max(1, min(connections, len(topics)))
        self._ctx = mp.get_context("spawn")
        self._stop = self._ctx.Event()
        self._ready = self._ctx.Event()
        self._sent = self._ctx.Value("q", 0, lock=False)
        self._acked = self._ctx.Value("q", 0, lock=False)
        self._errors: Any = self._ctx.Queue()
        self._proc: Any = None

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    @property
    def acked(self) -> int:
        return int(self._acked.value)

    def start(self, rate: float) -> None:
        proc = self._ctx.Process(
            target=_paced_main, daemon=True, name=f"{self.name}-publishers",
            args=(self.host, self.port, self.topics, self.payload, self.connections, self.name, rate,
                  self._stop, self._sent, self._acked, self._ready, self._errors))
        proc.start()
        self._proc = proc
        if not self._ready.wait(60):
            raise RuntimeError("load generator did not start")
        if not self._errors.empty():
            raise RuntimeError(self._errors.get())

    def stop(self) -> None:
        """Stop publishing; return once the broker has acknowledged every message sent."""
        self._stop.set()
        if self._proc is not None:
            self._proc.join(90)
        problems = []
        while not self._errors.empty():
            problems.append(self._errors.get())
        if problems:
            raise RuntimeError("; ".join(problems))

    def __enter__(self) -> PacedPublishers:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self.stop()
