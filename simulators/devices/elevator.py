"""A lift as a GB/T 24476 monitoring terminal sees it: travel, doors, load, modes, faults.

The car moves between levels (basement levels are negative, there is no floor 0), opens its
doors at stops, takes passengers on and off, and raises the regulators' fault codes "01".."11"
with the terminal's detection delays (trapped 20 s, outside the door zone 45 s).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulators.devices.base import Reply, SimDevice, Value

FLOORS_PER_S = 0.5          # 1.75 m/s rated, about 3.5 m per storey
DOOR_MOVE_S = 2.0
RATED_SPEED = 1.75
RATED_LOAD_KG = 1000.0
PASSENGER_KG = 75.0
TRAPPED_DELAY_S = 20.0
OUTSIDE_ZONE_DELAY_S = 45.0
MODE_EVENT = {0: "42", 1: "40", 2: "43", 3: "44", 4: "45", 5: "46", 6: "47"}
# Random fault rates per car per hour (transient door faults, a lost floor position).
RANDOM_FAULTS = {"02": 0.05, "03": 0.05, "07": 0.01}


@dataclass
class Elevator(SimDevice):
    levels: list[int] = field(default_factory=list)
    position: float = 0.0          # index into `levels`; fractional while travelling
    target: int | None = None      # index
    phase: str = "idle"            # idle, opening, open, closing, moving, stuck, rescue
    phase_left: float = 0.0
    door_state: int = 0            # 0 closed_locked, 1 open, 2 opening, 3 closing
    passengers: int = 0
    service_mode: int = 1
    mains_power: bool = True
    trips: int = 0
    running_hours: float = 0.0
    active_faults: set[str] = field(default_factory=set)
    fault_left: dict[str, float] = field(default_factory=dict)
    stopped_closed_s: float = 0.0
    outside_zone_s: float = 0.0
    pending: list[tuple[str, int]] = field(default_factory=list)  # (command id, level index)
    landing_call: int | None = None  # level index called by a Modbus write of `call_floor`
    rescue_after: float = 0.0

    def __post_init__(self) -> None:
        s = self.spec
        self.levels = [-i for i in range(s.basement_floors, 0, -1)] + list(range(1, s.floors + 1))
        self.position = float(self.main_index)
        self.trips = self.rng.randint(10_000, 90_000)
        self.running_hours = round(self.trips * 0.012, 1)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def main_index(self) -> int:
        return self.levels.index(1)

    @property
    def level(self) -> bool:
        return abs(self.position - round(self.position)) < 1e-6

    @property
    def floor(self) -> int:
        return self.levels[round(self.position)]

    @property
    def running(self) -> bool:
        return self.phase in ("moving", "rescue")

    @property
    def direction(self) -> int:
        if not self.running or self.target is None:
            return 0
        return 1 if self.target > self.position else 2

    # -- behaviour --------------------------------------------------------------------------
    def step(self, dt: float) -> None:
        if not self.powered:
            return
        if self.running:
            self.running_hours += dt / 3600.0
        handler = getattr(self, f"_phase_{self.phase}")
        handler(dt)
        self._random_faults(dt)
        self._detect(dt)

    def _phase_idle(self, dt: float) -> None:
        if "01" in self.active_faults:
            return
        if self.service_mode == 0:
            if self.passengers and self.level:   # parks with doors open and lets people out
                self._set_phase("opening", DOOR_MOVE_S)
                self.door_state = 2
            return
        if self.pending:
            self._go(self.pending[0][1])
            return
        if self.landing_call is not None:
            self._go(self.landing_call)
            return
        if self.service_mode != 1:
            return
        if self.passengers:
            self._go(self._random_level())
        elif self.rng.random() < dt / 20.0:   # a landing call about every 20 s
            self._go(self.main_index if self.rng.random() < 0.4 else self._random_level())

    def _phase_moving(self, dt: float) -> None:
        assert self.target is not None
        delta = self.target - self.position
        move = FLOORS_PER_S * dt
        if abs(delta) <= move:
            self.position = float(self.target)
            self.trips += 1
            self._set_phase("opening", DOOR_MOVE_S)
            self.door_state = 2
        else:
            self.position += move if delta > 0 else -move

    def _phase_rescue(self, dt: float) -> None:
        self._phase_moving(dt)
        if self.phase == "opening" and "01" in self.active_faults:
            self._clear("01")
            self.service_mode = 1
            self.emit(MODE_EVENT[1], floor=self.floor, reason="rescue completed")

    def _phase_opening(self, dt: float) -> None:
        self.phase_left -= dt
        if self.phase_left <= 0:
            self.door_state = 1
            self._set_phase("open", self.rng.uniform(4.0, 8.0))
            self._exchange_passengers()
            done = [cid for cid, idx in self.pending if idx == round(self.position)]
            for cid in done:
                self.reply_later(Reply(cid, "done", f"at floor {self.floor}, doors open"))
            self.pending = [p for p in self.pending if p[0] not in done]
            if self.landing_call == round(self.position):
                self.landing_call = None

    def _phase_open(self, dt: float) -> None:
        self.phase_left -= dt
        if self.phase_left <= 0 and self.service_mode != 0:
            self.door_state = 3
            self._set_phase("closing", DOOR_MOVE_S)

    def _phase_closing(self, dt: float) -> None:
        self.phase_left -= dt
        if self.phase_left <= 0:
            self.door_state = 0
            self._set_phase("idle", 0.0)

    def _phase_stuck(self, dt: float) -> None:
        self.phase_left -= dt
        if self.phase_left <= 0:       # technicians move the car to the nearest level
            self.service_mode = 2
            self.emit(MODE_EVENT[2], floor=self.floor, reason="rescue operation")
            self.target = round(self.position) if self.position - int(self.position) < 0.5 else int(self.position) + 1
            self.target = max(0, min(len(self.levels) - 1, self.target))
            self.phase = "rescue"

    def _set_phase(self, phase: str, seconds: float) -> None:
        self.phase, self.phase_left = phase, seconds

    def _go(self, index: int) -> None:
        if index == round(self.position) and self.level:
            self._set_phase("opening", DOOR_MOVE_S)
            self.door_state = 2
            return
        self.target = index
        self.phase = "moving"

    def _random_level(self) -> int:
        return self.rng.randrange(len(self.levels))

    def _exchange_passengers(self) -> None:
        everyone = self.floor == 1 or self.service_mode != 1
        leaving = self.passengers if everyone else self.rng.randint(0, self.passengers)
        self.passengers -= leaving
        if self.service_mode == 1:
            boarding = self.rng.randint(0, 4 if self.floor == 1 else 2)
            self.passengers = min(13, self.passengers + boarding)

    def _random_faults(self, dt: float) -> None:
        for code in list(self.fault_left):
            self.fault_left[code] -= dt
            if self.fault_left[code] <= 0:
                del self.fault_left[code]
                self._clear(code)
        for code, rate in RANDOM_FAULTS.items():
            if code not in self.active_faults and self.chance(rate, dt):
                self._raise(code, reason="random")
                self.fault_left[code] = self.rng.uniform(10.0, 60.0)

    def _detect(self, dt: float) -> None:
        """The terminal's own detections, with their field delays."""
        stopped_closed = not self.running and self.door_state == 0 and self.passengers > 0
        self.stopped_closed_s = self.stopped_closed_s + dt if stopped_closed else 0.0
        if self.stopped_closed_s >= TRAPPED_DELAY_S and "11" not in self.active_faults:
            self._raise("11", between_floors=not self.level, passengers=self.passengers)
        if "11" in self.active_faults and self.level and self.door_state == 1:
            self._clear("11")
        outside = not self.running and not self.level
        self.outside_zone_s = self.outside_zone_s + dt if outside else 0.0
        if self.outside_zone_s >= OUTSIDE_ZONE_DELAY_S and "04" not in self.active_faults:
            self._raise("04")
        if "04" in self.active_faults and self.level:
            self._clear("04")

    def _raise(self, code: str, **data: Any) -> None:
        self.active_faults.add(code)
        self.emit(code, active=True, floor=self.floor, **data)

    def _clear(self, code: str) -> None:
        if code in self.active_faults:
            self.active_faults.discard(code)
            self.emit(code, active=False, floor=self.floor)

    # -- outside world ----------------------------------------------------------------------
    def values(self) -> dict[str, Value]:
        moving = self.running
        return {
            "running": moving,
            "direction": self.direction,
            "floor": self.floor,
            "door_zone": self.level or abs(self.position - round(self.position)) < 0.1,
            "door_state": self.door_state,
            "passenger": self.passengers > 0,
            "service_mode": self.service_mode,
            "upper_limit": "09" in self.active_faults,
            "lower_limit": "10" in self.active_faults,
            "mains_power": self.mains_power,
            "running_hours": round(self.running_hours, 2),
            "trips": self.trips,
            "speed": round(RATED_SPEED * (0.3 if self.phase == "rescue" else 1.0) + self.rng.uniform(-0.03, 0.03), 2) if moving else 0.0,
            "load": round(min(100.0, self.passengers * PASSENGER_KG / RATED_LOAD_KG * 100.0), 1),
            "call_floor": self.levels[self.landing_call] if self.landing_call is not None else 0,
        }

    def call(self, floor: int) -> bool:
        """A landing call written over Modbus; refused outside normal/out-of-service or when stuck."""
        if floor not in self.levels or self.phase in ("stuck", "rescue") or self.service_mode not in (0, 1):
            return False
        self.landing_call = self.levels.index(floor)
        if self.phase == "idle" and self.service_mode == 0:
            self.service_mode = 1
        return True

    def command(self, command_id: str, name: str, args: dict[str, Any]) -> Reply:
        if name not in self.spec.commands:
            return Reply(command_id, "rejected", f"unknown command {name!r}")
        if self.phase in ("stuck", "rescue"):
            return Reply(command_id, "failed", "car stopped by the safety circuit")
        if name == "out_of_service":
            self.set_mode(0)
            return Reply(command_id, "done", "out of service")
        if name == "back_to_service":
            self.set_mode(1)
            return Reply(command_id, "done", "normal service")
        if name == "return_to_main_floor":
            self.pending.append((command_id, self.main_index))
            if self.phase == "idle" and self.service_mode == 0:
                self.service_mode = 1
            return Reply(command_id, "accepted", "travelling to the main floor")
        return Reply(command_id, "rejected", f"unsupported command {name!r}")

    def set_mode(self, mode: int) -> None:
        """Change the service mode (also how a Modbus write of `service_mode` acts)."""
        if mode != self.service_mode:
            self.service_mode = mode
            self.emit(MODE_EVENT.get(mode, "42"), floor=self.floor)
        if mode == 3 and self.main_index not in [i for _, i in self.pending]:
            self.pending.append(("fire-return", self.main_index))

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "entrapment":
            # The car stops between two floors with people inside: safety circuit open.
            self.passengers = max(self.passengers, int(kw.get("passengers", 2)))
            base = min(round(self.position), len(self.levels) - 2)
            self.position = base + 0.5
            self.door_state = 0
            self.target = None
            self._set_phase("stuck", float(kw.get("rescue_after_s", 600.0)))
            self._raise("01", reason="safety circuit open")
            if kw.get("alarm_button", True):
                self.emit("90", floor=self.floor)
        elif action == "power_loss":
            self.mains_power = False
            self.emit("41", floor=self.floor)
            self.powered = False
        elif action == "power_restored":
            self.powered = True
            self.mains_power = True
            self.emit("40", floor=self.floor, reason="mains power restored")
        elif action == "fire_return":
            self.set_mode(3)
        elif action == "back_to_service":
            self.set_mode(1)
            self.pending = [p for p in self.pending if p[0] != "fire-return"]
        else:
            super().trigger(action, **kw)
