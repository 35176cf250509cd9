"""Fault injection for tests and demos: what goes wrong between a device and the hub.

MQTT: dropped, duplicated, delayed and garbage messages. Modbus: exception responses,
timeouts (no answer at all) and dropped connections. Draws come from one seeded stream, so a
run with the same seed injects the same faults into the same messages.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from pymodbus.constants import ExcCodes


@dataclass(frozen=True)
class FaultPlan:
    drop: float = 0.0              # probability a message is never sent
    duplicate: float = 0.0         # probability it is sent twice
    delay: float = 0.0             # probability it is held back for `delay_s`
    delay_s: float = 2.0
    garbage: float = 0.0           # probability a telemetry payload is replaced by junk
    modbus_exception: float = 0.0  # probability a Modbus request gets an exception response
    exception_code: int = int(ExcCodes.DEVICE_BUSY)
    modbus_timeout: float = 0.0    # probability a Modbus request is never answered
    modbus_disconnect: float = 0.0  # probability a Modbus request closes the connection

    @classmethod
    def parse(cls, text: str | None) -> FaultPlan:
        """`drop=0.05,duplicate=0.02,garbage=0.01,modbus_timeout=0.1` → FaultPlan."""
        if not text:
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, float | int] = {}
        for part in text.split(","):
            name, _, raw = part.strip().partition("=")
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            try:
                values[name] = int(raw) if name == "exception_code" else float(raw)
            except ValueError as exc:
                raise ValueError(f"fault {name!r}: {raw!r} is not a number") from exc
        return cls(**values)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self) if f.name not in ("delay_s", "exception_code"))


GARBAGE = (b"{\"floor\": 3,", b"\xff\xfe\x00garbage", b"[]", b"null", b"{\"ts\": \"yesterday\"}")


@dataclass
class FaultInjector:
    plan: FaultPlan
    rng: random.Random

    def mqtt(self, payload: bytes) -> tuple[list[bytes], float]:
        """The payloads to send instead of `payload` (0, 1 or 2) and a delay in seconds."""
        p = self.plan
        if p.drop and self.rng.random() < p.drop:
            return [], 0.0
        if p.garbage and self.rng.random() < p.garbage:
            payload = self.rng.choice(GARBAGE)
        copies = 2 if p.duplicate and self.rng.random() < p.duplicate else 1
        delay = p.delay_s if p.delay and self.rng.random() < p.delay else 0.0
        return [payload] * copies, delay

    def modbus(self) -> str | None:
        """None (answer normally), "exception", "timeout" or "disconnect"."""
        p = self.plan
        if p.modbus_disconnect and self.rng.random() < p.modbus_disconnect:
            return "disconnect"
        if p.modbus_timeout and self.rng.random() < p.modbus_timeout:
            return "timeout"
        if p.modbus_exception and self.rng.random() < p.modbus_exception:
            return "exception"
        return None
