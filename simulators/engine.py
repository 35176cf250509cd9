"""The fleet engine: steps every device in simulated time and turns outputs into messages.

Pure and deterministic: given the registry, the seed and the start time, `tick()` returns the
same messages in the same order every run. Transports only send what it returns; commands from
outside enter through `command()`, scenario actions through the scenario's schedule.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from hub.registry import Registry
from simulators.devices import (
    DeviceSpec,
    FireDetector,
    FirePanel,
    ParkingLane,
    ParkingLot,
    ParkingMeter,
    PressureModule,
    Reply,
    SimDevice,
    build_device,
    spec_of,
)

Key = tuple[str, str]
Channel = Literal["telemetry", "event", "reply", "power"]


@dataclass(frozen=True, slots=True)
class Message:
    """One thing a device says. `power` messages tell transports a device lost/regained power."""

    key: Key
    channel: Channel
    topic: str
    payload: bytes
    at_ms: int

    @property
    def device(self) -> str:
        return self.key[1]


@dataclass(frozen=True, slots=True)
class ScenarioStep:
    at_s: float
    key: Key
    action: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Fleet:
    """All simulated devices of a registry (MQTT and Modbus alike)."""

    devices: dict[Key, SimDevice]
    seed: int
    start_ms: int
    speed: float = 1.0
    tick_s: float = 1.0
    timezone: str = "Asia/Shanghai"
    t: float = 0.0
    schedule: list[ScenarioStep] = field(default_factory=list)
    _next_report: dict[Key, float] = field(default_factory=dict)
    _seq: dict[Key, int] = field(default_factory=dict)

    @classmethod
    def from_registry(cls, registry: Registry, *, seed: int = 1, start_ms: int = 0, speed: float = 1.0,
                      tick_s: float = 1.0, site: str | None = None) -> Fleet:
        specs = [spec_of(ref) for key, ref in sorted(registry.devices.items()) if site is None or key[0] == site]
        devices: dict[Key, SimDevice] = {}
        for spec in specs:
            dev = build_device(spec, seed)
            if dev is not None:
                devices[(spec.site, spec.device)] = dev
        tz = next(iter(registry.sites.values())).timezone if registry.sites else "Asia/Shanghai"
        fleet = cls(devices, seed, start_ms, speed, tick_s, tz)
        fleet._wire_groups()
        rng = random.Random(f"{seed}/phase")
        for key, dev in devices.items():
            fleet._next_report[key] = rng.uniform(0, dev.spec.report_s)
            dev.clock_ms = start_ms
        return fleet

    def _wire_groups(self) -> None:
        """Fire panels watch their site copy's points; lanes and meters share one car park."""
        groups: dict[tuple[str, str], list[SimDevice]] = {}
        for dev in self.devices.values():
            groups.setdefault((dev.spec.site, dev.spec.group), []).append(dev)
        for (site, group), members in groups.items():
            points: list[SimDevice] = [d for d in members if isinstance(d, FireDetector | PressureModule)]
            for panel in (d for d in members if isinstance(d, FirePanel)):
                panel.points = points
            lot = ParkingLot()
            rng = random.Random(f"{self.seed}/{site}/{group}/lot")
            from simulators.devices.parking import random_plate

            for _ in range(rng.randint(100, 180)):
                plate, colour = random_plate(rng)
                lot.parked[plate] = (colour, -rng.uniform(0, 8 * 3600))
            for d in members:
                if isinstance(d, ParkingLane | ParkingMeter):
                    d.lot = lot

    # -- time -------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Message timestamps: the start time plus simulated time compressed by `speed`."""
        return self.start_ms + round(self.t * 1000.0 / self.speed)

    def local_hour(self) -> float:
        from datetime import UTC, datetime

        at = datetime.fromtimestamp(self.now_ms() / 1000.0, UTC).astimezone(ZoneInfo(self.timezone))
        return at.hour + at.minute / 60.0

    def tick(self) -> list[Message]:
        """Advance one tick: scenario steps due, every device, then what they have to say."""
        self.t += self.tick_s
        hour = self.local_hour()
        due = [s for s in self.schedule if s.at_s <= self.t]
        self.schedule = [s for s in self.schedule if s.at_s > self.t]
        out: list[Message] = []
        for step in due:
            dev = self.devices.get(step.key)
            if dev is None:
                continue
            was_powered = dev.powered
            dev.trigger(step.action, **step.args)
            if dev.powered != was_powered:
                out.append(self._message(step.key, "power", "", b"1" if dev.powered else b"0"))
        now_ms = self.now_ms()
        for dev in self.devices.values():
            dev.clock_ms = now_ms
            if not dev.clock_fixed:
                dev.clock_hour = hour
            dev.step(self.tick_s)
        for key, dev in self.devices.items():
            out.extend(self.collect(key, dev))
        return out

    def initial_reports(self) -> list[Message]:
        """Every device's first telemetry, sent as soon as the transports are up."""
        out: list[Message] = []
        for key, dev in self.devices.items():
            out.extend(self.collect(key, dev, force_report=True))
        return out

    def collect(self, key: Key, dev: SimDevice, *, force_report: bool = False) -> list[Message]:
        events, replies = dev.drain()
        out = [self._reply(key, r) for r in replies]
        if not dev.powered:
            return out
        for ev in events:
            body: dict[str, Any] = {"ts": self.now_ms(), "code": ev.code}
            if ev.data:
                body["data"] = ev.data
            out.append(self._message(key, "event", "event", orjson.dumps(body)))
        if force_report or events or self.t >= self._next_report.get(key, 0.0):
            self._next_report[key] = self.t + dev.spec.report_s
            seq = self._seq.get(key, 0) + 1
            self._seq[key] = seq
            body = {"ts": self.now_ms(), "seq": seq, **dev.telemetry()}
            out.append(self._message(key, "telemetry", "telemetry", orjson.dumps(body)))
        return out

    def _reply(self, key: Key, reply: Reply) -> Message:
        body: dict[str, str] = {"status": reply.status}
        if reply.detail:
            body["detail"] = reply.detail
        return self._message(key, "reply", f"cmd/{reply.command_id}/reply", orjson.dumps(body))

    def _message(self, key: Key, channel: Channel, suffix: str, payload: bytes) -> Message:
        topic = f"facility/{key[0]}/{key[1]}/{suffix}" if suffix else ""
        return Message(key, channel, topic, payload, self.now_ms())

    # -- inputs -----------------------------------------------------------------------------
    def command(self, key: Key, command_id: str, payload: bytes, *, now_ms: int | None = None) -> list[Message]:
        """A contract command arrived for `key`: check it, apply it, and return the replies."""
        dev = self.devices.get(key)
        if dev is None:
            return []
        dev.clock_ms = max(dev.clock_ms, self.now_ms())
        reply = self._apply(dev, command_id, payload, now_ms)
        # An `accepted` command gets its `done`/`failed` later, from the device's own queue.
        out = [self._reply(key, reply)]
        out.extend(self.collect(key, dev, force_report=True))
        return out

    def _apply(self, dev: SimDevice, command_id: str, payload: bytes, now_ms: int | None) -> Reply:
        try:
            body = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return Reply(command_id, "rejected", "bad JSON")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return Reply(command_id, "rejected", "command needs a string 'name'")
        args = body.get("args") or {}
        if not isinstance(args, dict):
            return Reply(command_id, "rejected", "'args' must be an object")
        expires = body.get("expires_at")
        if expires is not None and now_ms is not None:
            expiry = _epoch_ms(expires)
            if expiry is None:
                return Reply(command_id, "rejected", "bad 'expires_at'")
            if expiry < now_ms:
                return Reply(command_id, "rejected", "expired")
        return dev.command(command_id, body["name"], args)

    def schedule_steps(self, steps: Iterable[ScenarioStep]) -> None:
        self.schedule.extend(steps)
        self.schedule.sort(key=lambda s: s.at_s)

    def by_kind(self, *kinds: str) -> list[SimDevice]:
        return [d for d in self.devices.values() if d.spec.kind in kinds]

    def specs(self) -> list[DeviceSpec]:
        return [d.spec for d in self.devices.values()]


def _epoch_ms(raw: object) -> int | None:
    from datetime import datetime

    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return int(raw)
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError:
            return None
        if ts.tzinfo is None:
            return None
        return int(ts.timestamp() * 1000)
    return None


__all__ = ["Fleet", "Message", "ParkingLane", "ScenarioStep"]
