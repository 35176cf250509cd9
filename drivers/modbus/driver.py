"""The Modbus driver: endpoints, device pollers, the collector, and verified writes.

Independent of the hub runtime (it takes devices and a sink), so benchmarks and tests can run it
against a bare ingest pipeline; `component.py` wires it into `hub run`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from hub.registry import Registry
from hub.registry.model import Register

from .codec import (
    BIT_TABLES,
    EncodeError,
    NoData,
    Value,
    decode_bit,
    decode_registers,
    encode_bit_field,
    encode_registers,
    reading_fields,
)
from .endpoint import Backoff, ModbusEndpoint
from .plan import DEFAULT_MAX_GAP
from .poller import Collector, DevicePoller, PolledDevice, Sink

log = logging.getLogger(__name__)


class WriteRejected(ValueError):
    """The write is not allowed (unknown device or metric, not writable, value out of range)."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a verified write did: the value asked for and what the device reads back."""

    site: str
    device: str
    metric: str
    requested: float | bool
    read_back: float | bool | None
    verified: bool
    detail: str


def modbus_devices(registry: Registry, ids: dict[tuple[str, str], int]) -> list[PolledDevice]:
    """Every Modbus device of the registry that has a database id, with its endpoint resolved."""
    devices: list[PolledDevice] = []
    for key, ref in sorted(registry.devices.items()):
        model = ref.model
        if model.protocol != "modbus" or model.modbus is None or key not in ids:
            continue
        endpoint = ref.device.modbus
        host = endpoint.host if endpoint else "127.0.0.1"
        port = endpoint.port if endpoint else 502
        unit = endpoint.unit_id if endpoint and endpoint.unit_id is not None else model.modbus.unit_id
        devices.append(PolledDevice(ids[key], key[0], key[1], model, host, port, unit))
    return devices


class ModbusDriver:
    """Polls `devices`, handing rows to `sink`; an async context manager (or start/stop)."""

    def __init__(self, devices: Iterable[PolledDevice], sink: Sink, *, flush_s: float = 0.1,
                 max_gap: int = DEFAULT_MAX_GAP, backoff: Backoff | None = None,
                 seed: int | None = None) -> None:
        self.devices = list(devices)
        self.collector = Collector(sink)
        self.flush_s = flush_s
        self.max_gap = max_gap
        self.backoff = backoff or Backoff()
        self.rng = random.Random(seed)
        self.endpoints: dict[tuple[str, int], ModbusEndpoint] = {}
        self.pollers: dict[tuple[str, str], DevicePoller] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ModbusDriver:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def build(self) -> None:
        """Create endpoints and pollers (without starting them); `start` calls it."""
        timeouts: dict[tuple[str, int], float] = {}
        for device in self.devices:
            assert device.model.modbus is not None
            where = (device.host, device.port)
            timeouts[where] = max(timeouts.get(where, 0.0), device.model.modbus.timeout_s)
        for where, timeout in timeouts.items():
            if where not in self.endpoints:
                self.endpoints[where] = ModbusEndpoint(where[0], where[1], timeout_s=timeout, backoff=self.backoff)
        for device in self.devices:
            if device.key not in self.pollers:
                self.pollers[device.key] = DevicePoller(
                    device, self.endpoints[(device.host, device.port)], self.collector,
                    max_gap=self.max_gap, rng=random.Random(self.rng.random()))

    async def start(self) -> None:
        self.build()
        for key, poller in self.pollers.items():
            self._tasks.append(asyncio.create_task(poller.run(), name=f"modbus-poll-{key[0]}/{key[1]}"))
        self._tasks.append(asyncio.create_task(self.collector.run(self.flush_s), name="modbus-flush"))
        log.info("modbus: polling %d device(s) on %d endpoint(s)", len(self.pollers), len(self.endpoints))

    async def stop(self) -> None:
        for poller in self.pollers.values():
            poller.stopping = True
        pending = set(self._tasks)
        for _ in range(20):  # a cancel can be lost in a wait_for race (Python 3.11); repeat it
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.error("modbus task %s ended with %r", task.get_name(), task.exception())
        if pending:
            log.warning("modbus: %d task(s) did not stop", len(pending))
        self._tasks.clear()
        self.collector.flush()
        for endpoint in self.endpoints.values():
            endpoint.close()

    # -- writes ---------------------------------------------------------------------------
    async def read_metric(self, site: str, device: str, metric: str) -> float | bool | None:
        """The metric's current value read from the device now (None: the device says 'no data')."""
        poller = self.pollers.get((site, device))
        register = poller.register(metric) if poller is not None else None
        if poller is None or register is None:
            raise WriteRejected(f"{site}/{device}: no Modbus register for {metric!r}")
        value = await self._read_back(poller.endpoint, register, poller.device.unit)
        return None if isinstance(value, NoData) else value

    async def write_metric(self, site: str, device: str, metric: str, value: float | bool | str) -> WriteResult:
        """Write one metric and read it back; raise `WriteRejected` if the write is not allowed.

        A device that does not answer raises `ModbusReadError`. The caller (the command API)
        audits the command; the read-back value is stored as a reading like a polled one.
        """
        poller = self.pollers.get((site, device))
        if poller is None:
            raise WriteRejected(f"{site}/{device} is not a Modbus device of this hub")
        register = poller.register(metric)
        if register is None:
            raise WriteRejected(f"{site}/{device}: model {poller.device.model.id} has no register for {metric!r}")
        if not register.writable:
            raise WriteRejected(f"{site}/{device}: {metric!r} is not writable")
        if register.table in ("input", "discrete"):
            raise WriteRejected(f"{site}/{device}: {metric!r} is in the read-only {register.table} table")
        labels = poller.labels.get(metric)
        requested = _requested_value(register, labels, value)
        endpoint, unit = poller.endpoint, poller.device.unit
        try:
            if register.table == "coil":
                await endpoint.write_bit(register.address, bool(requested), unit)
            elif register.bit is not None:
                flag = bool(requested)
                await endpoint.modify_words(register.address, register.count, unit,
                                            lambda words: encode_bit_field(register, words, flag))
            else:
                await endpoint.write_words(register.address, encode_registers(register, requested), unit)
        except EncodeError as exc:
            raise WriteRejected(str(exc)) from exc
        read_back = await self._read_back(endpoint, register, unit)
        verified = _same(register, requested, read_back)
        ts = datetime.now(UTC)
        number, text, quality = reading_fields(read_back, labels)
        self.collector.add([(ts, poller.device.id, metric, number, text, quality)], [], [], ts, poller.device.id)
        shown = None if isinstance(read_back, NoData) else read_back
        detail = "read back as written" if verified else f"wrote {requested!r}, read back {shown!r}"
        return WriteResult(site, device, metric, requested, shown, verified, detail)

    async def _read_back(self, endpoint: ModbusEndpoint, register: Register, unit: int) -> Value:
        data = await endpoint.read(register.table, register.address, register.count, unit)
        if register.table in BIT_TABLES:
            return decode_bit(register, bool(data[0]))
        return decode_registers(register, [int(w) for w in data])


def _requested_value(register: Register, labels: dict[int, str] | None, value: float | bool | str) -> float | bool:
    if isinstance(value, str):
        codes = {label: code for code, label in (labels or {}).items()}
        if value not in codes:
            raise WriteRejected(f"{register.metric}: {value!r} is not one of {sorted(codes)}")
        return float(codes[value])
    if register.table == "coil" or register.type == "bool" or register.bit is not None:
        if value not in (0, 1):
            raise WriteRejected(f"{register.metric}: expected a flag (true/false), got {value!r}")
        return bool(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise WriteRejected(f"{register.metric}: expected a number, got {value!r}")
    if labels is not None and int(value) not in labels:
        raise WriteRejected(f"{register.metric}: {value!r} is not one of {sorted(labels)}")
    return float(value)


def _same(register: Register, requested: float | bool, read_back: Value) -> bool:
    if isinstance(read_back, NoData):
        return False
    if isinstance(requested, bool) or isinstance(read_back, bool):
        return bool(requested) == bool(read_back)
    tolerance = 1e-6 if register.type == "float32" else 1e-9
    return math.isclose(float(requested), float(read_back), rel_tol=tolerance, abs_tol=abs(register.scale) * 1e-6)
