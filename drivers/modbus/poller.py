"""Poll Modbus devices on schedule and turn what they say (or don't) into readings and events.

One task per device wakes at its model's `poll_interval_s` (phase-jittered at start so a fleet
does not poll in lock-step), reads its coalesced blocks through the shared endpoint, and adds
rows to a `Collector`, which hands one `Batch` to the ingest pipeline every `flush_s`.

Never a fake value: a block that cannot be read gives its metrics a reading with value NULL
and quality 2 (bad). After the model's `offline_after` seconds without a good read the device
gets a `StatusChange(online=False)`; the next good read brings it back online.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.ingest.decode import Batch, Event, Reading, StatusChange
from hub.registry.model import DeviceModel, Register

from .codec import (
    BAD,
    BIT_TABLES,
    Decoder,
    NoData,
    Value,
    compile_decoder,
    decode_bit,
    reading_fields,
)
from .endpoint import ModbusEndpoint, ModbusReadError
from .events import emits_events, state_event
from .plan import DEFAULT_MAX_GAP, ReadRequest, plan_reads

log = logging.getLogger(__name__)

Sink = Callable[[Batch], bool]  # True: taken; False: try again later (queue full)


@dataclass(frozen=True, slots=True)
class PolledDevice:
    """A Modbus device as the driver needs it, resolved from the registry."""

    id: int
    site: str
    device: str
    model: DeviceModel
    host: str
    port: int
    unit: int

    @property
    def key(self) -> tuple[str, str]:
        return (self.site, self.device)


class Collector:
    """Gathers rows from many polls into one `Batch`; flushes it to the sink periodically.

    Runs on the event loop only (no locks). If the sink refuses (pipeline queue full), rows
    stay here and go with the next flush: back-pressure without blocking the pollers.
    """

    def __init__(self, sink: Sink, *, max_rows: int = 200_000) -> None:
        self.sink = sink
        self.batch = Batch()
        self.refused = 0
        self.max_rows = max_rows

    @property
    def full(self) -> bool:
        """Ingest has refused rows for long enough that pollers should pause (back-pressure)."""
        return len(self.batch.readings) >= self.max_rows

    def add(self, readings: list[Reading], events: list[Event], status: list[StatusChange],
            seen: datetime | None, device_id: int) -> None:
        batch = self.batch
        batch.readings.extend(readings)
        batch.events.extend(events)
        batch.status.extend(status)
        if seen is not None:
            batch.seen[device_id] = seen
        batch.messages += 1

    def flush(self) -> bool:
        batch = self.batch
        if len(batch) == 0 and not batch.seen:
            return True
        if self.sink(batch):
            self.batch = Batch()
            return True
        self.refused += 1
        return False

    async def run(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                self.flush()
            except Exception:
                log.exception("modbus: handing a batch to ingest failed")


@dataclass(slots=True)
class PollerStats:
    polls: int = 0
    good_polls: int = 0
    failed_blocks: int = 0
    points: int = 0
    skipped: int = 0
    start_lag: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))
    done_lag: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))


class DevicePoller:
    """Polls one device; `poll_once` is the unit tests drive, `run` the schedule around it."""

    def __init__(self, device: PolledDevice, endpoint: ModbusEndpoint, collector: Collector, *,
                 max_gap: int = DEFAULT_MAX_GAP, rng: random.Random | None = None) -> None:
        spec = device.model.modbus
        if spec is None:
            raise ValueError(f"{device.site}/{device.device}: model {device.model.id} has no modbus map")
        self.device = device
        self.spec = spec
        self.endpoint = endpoint
        self.collector = collector
        self.rng = rng or random.Random()
        self.plan: list[ReadRequest] = plan_reads(spec.registers, max_gap=max_gap)
        self.strict_plan = max_gap == 0
        self.labels = {m.name: dict(m.values) for m in device.model.metrics if m.values}
        self._decoders: dict[str, tuple[Decoder, dict[int, str] | None, bool]] = {
            r.metric: (compile_decoder(r) if r.table not in BIT_TABLES else _no_words(r),
                       self.labels.get(r.metric), emits_events(r))
            for r in spec.registers}
        self.offline_after = device.model.offline_after
        self.previous: dict[str, Value] = {}
        self.online: bool | None = None
        self.last_good: float | None = None
        self.started: float | None = None
        self.last_error: str | None = None
        self.stats = PollerStats()
        self.paused = False
        self.stopping = False  # checked every cycle: Python 3.11's wait_for can swallow a cancel

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.spec.poll_interval_s
        self.started = loop.time()
        next_at = self.started + self.rng.uniform(0, interval)
        while not self.stopping:
            # Always yield, even when late: a fail-fast poll (endpoint in backoff) never awaits.
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            self.stats.start_lag.append(loop.time() - next_at)
            try:
                if self.collector.full:  # ingest is behind: sample later rather than pile up rows
                    self.stats.skipped += 1
                    if not self.paused:
                        log.warning("modbus %s/%s: ingest queue full, pausing polls", self.device.site, self.device.device)
                    self.paused = True
                else:
                    self.paused = False
                    await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the device's polling for good
                log.exception("modbus %s/%s: poll failed", self.device.site, self.device.device)
            now = loop.time()
            self.stats.done_lag.append(now - next_at)
            next_at += interval
            if next_at <= now:  # overran: skip the slots we missed rather than burst
                missed = math.ceil((now - next_at) / interval)
                self.stats.skipped += missed
                next_at += missed * interval

    async def poll_once(self) -> bool:
        """Read every block once and hand the rows to the collector; True if any block read."""
        loop = asyncio.get_running_loop()
        if self.started is None:
            self.started = loop.time()
        device = self.device
        ts = datetime.now(UTC)
        readings: list[Reading] = []
        events: list[Event] = []
        ok = False
        unreachable: str | None = None
        for request in list(self.plan):
            if unreachable is not None:  # no answer to one block: don't queue the rest behind it
                self.stats.failed_blocks += 1
                readings.extend((ts, device.id, s.register.metric, None, None, BAD) for s in request.slots)
                continue
            try:
                data = await self.endpoint.read(request.table, request.address, request.count,
                                                device.unit, retries=self.spec.retries)
            except ModbusReadError as exc:
                self.last_error = exc.reason
                self.stats.failed_blocks += 1
                readings.extend((ts, device.id, s.register.metric, None, None, BAD) for s in request.slots)
                if exc.timeout or exc.connection:
                    unreachable = exc.reason
                if exc.exception_code == 2 and request.has_gaps and not self.strict_plan:
                    log.info("modbus %s/%s: block read over unused addresses refused; reading runs "
                             "of adjacent registers only", device.site, device.device)
                    self.plan = plan_reads(self.spec.registers, max_gap=0)
                    self.strict_plan = True
                continue
            ok = True
            self._decode_block(request, data, ts, readings, events)
        status: list[StatusChange] = []
        now = loop.time()
        self.stats.polls += 1
        if ok:
            self.stats.good_polls += 1
            self.last_good = now
            if self.online is not True:
                status.append(StatusChange(device.id, True, ts, "modbus: read ok"))
                if self.online is False:
                    log.info("modbus %s/%s: online again", device.site, device.device)
                self.online = True
        elif self.online is not False and now - (self.last_good or self.started) >= self.offline_after:
            reason = f"modbus: no good read for {self.offline_after:g} s ({self.last_error})"
            status.append(StatusChange(device.id, False, ts, reason))
            log.warning("%s/%s offline: %s", device.site, device.device, reason)
            self.online = False
        self.collector.add(readings, events, status, ts if ok else None, device.id)
        return ok

    def _decode_block(self, request: ReadRequest, data: list[int] | list[bool], ts: datetime,
                      readings: list[Reading], events: list[Event]) -> None:
        device_id = self.device.id
        bits = request.table in BIT_TABLES
        decoders = self._decoders
        previous = self.previous
        good = 0
        for slot in request.slots:
            register = slot.register
            metric = register.metric
            decode, labels, evented = decoders[metric]
            offset = slot.offset
            try:
                value = (decode_bit(register, bool(data[offset])) if bits
                         else decode(data[offset:offset + register.count]))
            except (ValueError, IndexError) as exc:
                self.last_error = f"{metric}: {exc}"
                readings.append((ts, device_id, metric, None, None, BAD))
                continue
            number, text, quality = reading_fields(value, labels)
            readings.append((ts, device_id, metric, number, text, quality))
            good += 1
            if evented:
                event = state_event(register, labels, previous.get(metric), value)
                if event is not None:
                    events.append((ts, device_id, event.code, event.data))
            if not isinstance(value, NoData):
                previous[metric] = value
        self.stats.points += good

    def register(self, metric: str) -> Register | None:
        for register in self.spec.registers:
            if register.metric == metric:
                return register
        return None


def _no_words(register: Register) -> Decoder:
    def refuse(_words: object) -> Value:
        raise ValueError(f"{register.metric}: a {register.table} is a bit, not words")

    return refuse
