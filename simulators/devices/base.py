"""What a simulated device emits and how it takes commands: transport-free, seeded, pure.

A device is a state machine advanced by `step(dt)` in simulated seconds. It never touches a
socket or the wall clock; the fleet engine stamps its outputs and the transports send them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

Value = bool | int | float | str
ReplyStatus = Literal["accepted", "done", "rejected", "failed"]


@dataclass(frozen=True, slots=True)
class Event:
    """A contract event: `code` as documented in docs/simulators.md, optional `data`."""

    code: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    command_id: str
    status: ReplyStatus
    detail: str = ""


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """The registry facts a simulated device needs, copied out so devices stay pure."""

    site: str
    device: str
    kind: str
    model: str
    protocol: str
    metrics: tuple[str, ...]
    commands: tuple[str, ...] = ()
    building: str | None = None
    floors: int = 1
    basement_floors: int = 0
    floor: int | None = None
    zone: str | None = None
    group: str = "0"
    report_s: float = 5.0


@dataclass
class SimDevice:
    """Base of all device models: current metric values, queued events and command replies."""

    spec: DeviceSpec
    rng: random.Random
    powered: bool = True
    clock_hour: float = 12.0
    clock_fixed: bool = False   # a scenario set the device's clock (e.g. to night)
    clock_ms: int = 0           # the fleet's message clock (epoch ms), for absolute times in commands
    _events: list[Event] = field(default_factory=list)
    _replies: list[Reply] = field(default_factory=list)

    # -- to override ------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        """Advance the state by `dt` simulated seconds."""

    def values(self) -> dict[str, Value]:
        """Current values of the model's metrics (names as in the registry)."""
        return {}

    def command(self, command_id: str, name: str, args: dict[str, Any]) -> Reply:
        """Apply a command; `accepted` means a later `done`/`failed` reply follows."""
        return Reply(command_id, "rejected", f"unknown command {name!r}")

    def trigger(self, action: str, **kw: Any) -> None:
        """Scenario hook: force a situation (entrapment, fire, fault, …)."""
        raise ValueError(f"{self.spec.kind} has no scenario action {action!r}")

    # -- shared -----------------------------------------------------------------------------
    def emit(self, code: str, **data: Any) -> None:
        self._events.append(Event(code, data or None))

    def reply_later(self, reply: Reply) -> None:
        self._replies.append(reply)

    def drain(self) -> tuple[list[Event], list[Reply]]:
        events, replies = self._events, self._replies
        self._events, self._replies = [], []
        return events, replies

    def telemetry(self) -> dict[str, Value]:
        """Values restricted to the metrics the registry declares (ingest is strict)."""
        wanted = self.spec.metrics
        return {k: v for k, v in self.values().items() if k in wanted}

    def chance(self, rate_per_hour: float, dt: float) -> bool:
        """True with the probability of a Poisson event of `rate_per_hour` within `dt` s."""
        return self.rng.random() < rate_per_hour * dt / 3600.0

    @property
    def is_night(self) -> bool:
        return self.clock_hour >= 22 or self.clock_hour < 6
