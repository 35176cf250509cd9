"""A car park: entry/exit lanes with plate cameras and barriers, and a space counter/pay station.

All lanes and the meter of one site copy share a `ParkingLot`: entries take a space, exits
free one and charge a fee (first 30 minutes free, then 5 CNY an hour, at most 50 CNY a stay).
A barrier can stick (`barrier_fault`) and a vehicle can stop under it (`vehicle_stuck`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from simulators.devices.base import Reply, SimDevice, Value

PROVINCES = "京沪粤苏浙川鄂湘鲁豫"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
COLOURS = (("blue", 70), ("green", 20), ("yellow", 6), ("white", 1), ("black", 1), ("unknown", 2))
BARRIER_OPEN_S = 6.0


def random_plate(rng: random.Random) -> tuple[str, str]:
    """A plate and its colour; green (new-energy) plates have six characters after the letter."""
    colour = rng.choices([c for c, _ in COLOURS], weights=[w for _, w in COLOURS])[0]
    n = 6 if colour == "green" else 5
    tail = "".join(rng.choice("0123456789" + LETTERS) for _ in range(n))
    return f"{rng.choice(PROVINCES)}{rng.choice(LETTERS)}{tail}", colour


def fee_for(minutes: float) -> float:
    if minutes <= 30:
        return 0.0
    return float(min(50, 5 * math.ceil((minutes - 30) / 60)))


@dataclass
class ParkingLot:
    capacity: int = 300
    parked: dict[str, tuple[str, float]] = field(default_factory=dict)   # plate → (colour, since)
    fees_today: float = 0.0
    barrier_faults: set[str] = field(default_factory=set)

    @property
    def free(self) -> int:
        return max(0, self.capacity - len(self.parked))


@dataclass
class ParkingLane(SimDevice):
    lot: ParkingLot = field(default_factory=ParkingLot)
    now: float = 0.0
    barrier_state: int = 0         # 0 closed, 1 open, 2 kept open
    barrier_left: float = 0.0
    barrier_fault: bool = False
    fault_left: float = 0.0
    vehicle_present: bool = False
    vehicle_left: float = 0.0      # seconds until the car on the loop has driven on

    @property
    def is_entry(self) -> bool:
        zone = (self.spec.zone or self.spec.device).lower()
        return "exit" not in zone and "out" not in zone

    def step(self, dt: float) -> None:
        if not self.powered:
            return
        self.now += dt
        if self.barrier_fault:
            self.fault_left -= dt
            if self.fault_left <= 0:
                self._clear_fault()
        if self.vehicle_present and self.barrier_fault:   # cars drive on under a stuck-open arm
            self.vehicle_left -= dt
            if self.vehicle_left <= 0:
                self.vehicle_present = False
        if self.barrier_state == 1 and not self.barrier_fault:
            self.barrier_left -= dt
            if self.barrier_left <= 0:
                self.barrier_state, self.vehicle_present = 0, False
        rate = 30.0 if self.is_night else 120.0
        if self.barrier_state != 1 and self.chance(rate, dt):
            self._vehicle()
        elif self.barrier_fault and self.barrier_state == 1 and self.chance(rate, dt):
            self._vehicle()        # cars pass under a stuck-open barrier: recorded, not gated
        if not self.barrier_fault and self.chance(0.02, dt):
            self.trigger("barrier_stuck", seconds=self.rng.uniform(60, 300), reason="motor overload")

    def _vehicle(self) -> None:
        lot = self.lot
        if self.is_entry:
            plate, colour = random_plate(self.rng)
            if lot.free == 0:
                self.emit("denied", plate=plate, colour=colour, reason="car park full")
                return
            lot.parked[plate] = (colour, self.now)
            self.emit("entry", plate=plate, colour=colour, free_spaces=lot.free)
        else:
            if not lot.parked:
                return
            plate = self.rng.choice(sorted(lot.parked))
            colour, since = lot.parked.pop(plate)
            minutes = max(0.0, self.now - since) / 60.0 + self.rng.uniform(10, 600)
            fee = fee_for(minutes)
            lot.fees_today = round(lot.fees_today + fee, 2)
            self.emit("exit", plate=plate, colour=colour, fee=fee, minutes=round(minutes), free_spaces=lot.free)
        self.vehicle_present, self.vehicle_left = True, BARRIER_OPEN_S
        if self.barrier_state == 0 and not self.barrier_fault:
            self.barrier_state, self.barrier_left = 1, BARRIER_OPEN_S
            if self.rng.random() < 0.002:
                self.emit("vehicle_stuck", seconds=round(BARRIER_OPEN_S))

    def _clear_fault(self) -> None:
        self.barrier_fault = False
        self.lot.barrier_faults.discard(self.spec.device)
        self.barrier_state, self.vehicle_present = 0, False
        self.emit("barrier_fault_cleared")

    def values(self) -> dict[str, Value]:
        return {"barrier_state": self.barrier_state, "barrier_fault": self.barrier_fault,
                "vehicle_present": self.vehicle_present, "free_spaces": self.lot.free,
                "fees_today": round(self.lot.fees_today, 2)}

    def command(self, command_id: str, name: str, args: dict[str, Any]) -> Reply:
        if name not in self.spec.commands:
            return Reply(command_id, "rejected", f"unknown command {name!r}")
        if self.barrier_fault:
            return Reply(command_id, "failed", "barrier fault: the arm does not move")
        if name == "open_barrier":
            self.barrier_state, self.barrier_left = 1, BARRIER_OPEN_S
            self.emit("barrier_opened", by="remote")
            return Reply(command_id, "done", "barrier opened")
        if name == "close_barrier":
            self.barrier_state = 0
            return Reply(command_id, "done", "barrier closed")
        if name == "keep_open":
            self.barrier_state = 2
            return Reply(command_id, "done", "barrier kept open")
        return Reply(command_id, "rejected", f"unsupported command {name!r}")

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "barrier_stuck":
            self.barrier_fault = True
            self.barrier_state = 1
            self.fault_left = float(kw.get("seconds", 600))
            self.lot.barrier_faults.add(self.spec.device)
            self.emit("barrier_fault", reason=str(kw.get("reason", "arm stuck open")))
        elif action == "barrier_repaired":
            self._clear_fault()
        elif action == "power_loss":
            self.powered = False
        elif action == "power_restored":
            self.powered = True
        else:
            super().trigger(action, **kw)


@dataclass
class ParkingMeter(SimDevice):
    """Space counter and pay station: reads the shared lot."""

    lot: ParkingLot = field(default_factory=ParkingLot)

    def values(self) -> dict[str, Value]:
        return {"free_spaces": self.lot.free, "occupied_spaces": len(self.lot.parked),
                "fees_today": round(self.lot.fees_today, 2), "barrier_fault": bool(self.lot.barrier_faults)}

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "power_loss":
            self.powered = False
        elif action == "power_restored":
            self.powered = True
        else:
            super().trigger(action, **kw)
