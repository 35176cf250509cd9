"""A GB 26875 fire system: a panel (user information transmission device) with its points.

Detectors report analog smoke and temperature and latch `fire_alarm` above threshold; the
sprinkler pressure module reports pipe pressure and is supervisory below `LOW_PRESSURE_MPA`.
The panel mirrors the GB 26875 system status bits over all points of its site copy and reports
each point's alarm, fault and shielding as events (GB 26875 component types in `data`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulators.devices.base import Reply, SimDevice, Value

SMOKE_ALARM = 0.15        # %/m obscuration where a photoelectric detector alarms
HEAT_ALARM = 57.0         # degC, class A1 point heat detector
NORMAL_PRESSURE_MPA = 0.45
LOW_PRESSURE_MPA = 0.30
TYPE_SMOKE, TYPE_PRESSURE_SWITCH = 42, 99


@dataclass
class FireDetector(SimDevice):
    smoke: float = 0.02
    temperature: float = 22.0
    fire_alarm: bool = False
    fault: bool = False
    shielded: bool = False
    fire_rate: float = 0.0       # smoke rise, %/m per second, while a fire burns nearby
    fault_left: float = 0.0

    def __post_init__(self) -> None:
        self.temperature = round(self.rng.uniform(20.0, 25.0), 1)

    def step(self, dt: float) -> None:
        if not self.powered:
            return
        if self.fire_rate > 0:
            self.smoke = min(2.0, self.smoke + self.fire_rate * dt)
            self.temperature = min(90.0, self.temperature + self.fire_rate * 20.0 * dt)
        else:
            self.smoke = max(0.01, self.smoke + self.rng.gauss(0, 0.002) - (self.smoke - 0.02) * 0.05 * dt)
            self.temperature += self.rng.gauss(0, 0.05) - (self.temperature - 22.5) * 0.01 * dt
        if (self.smoke >= SMOKE_ALARM or self.temperature >= HEAT_ALARM) and not self.fire_alarm and not self.shielded and not self.fault:
            self.fire_alarm = True
            self.emit("fire_alarm", zone=self.spec.zone, component_type=TYPE_SMOKE,
                      smoke=round(self.smoke, 3), temperature=round(self.temperature, 1))
        if self.fault:
            self.fault_left -= dt
            if self.fault_left <= 0:
                self.fault = False
                self.emit("fault_cleared", zone=self.spec.zone)
        elif self.chance(0.02, dt):
            self.fault, self.fault_left = True, self.rng.uniform(60, 600)
            self.emit("fault", zone=self.spec.zone, reason="dirty chamber")

    def values(self) -> dict[str, Value]:
        return {"fire_alarm": self.fire_alarm, "fault": self.fault, "shielded": self.shielded,
                "temperature": round(self.temperature, 1), "smoke": round(self.smoke, 3)}

    def reset(self) -> None:
        """Panel reset: the latch clears; a detector still in smoke alarms again next step."""
        self.fire_alarm = False

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "smoke":
            self.fire_rate = float(kw.get("rate", 0.01))
        elif action == "extinguished":
            self.fire_rate = 0.0
            self.smoke, self.temperature = 0.03, 24.0
        elif action == "fault":
            self.fault, self.fault_left = True, float(kw.get("seconds", 300))
            self.emit("fault", zone=self.spec.zone, reason=str(kw.get("reason", "open circuit")))
        elif action == "shield":
            self.shielded = True
            self.emit("shielded", zone=self.spec.zone)
        elif action == "power_loss":
            self.powered = False
        elif action == "power_restored":
            self.powered = True
        else:
            super().trigger(action, **kw)


@dataclass
class PressureModule(SimDevice):
    pressure: float = NORMAL_PRESSURE_MPA
    fault: bool = False
    drop_rate: float = 0.0       # MPa per second while a leak or an open valve drains the main
    low: bool = False

    def step(self, dt: float) -> None:
        if not self.powered:
            return
        if self.drop_rate > 0:
            self.pressure = max(0.02, self.pressure - self.drop_rate * dt)
        else:
            self.pressure += self.rng.gauss(0, 0.002) - (self.pressure - NORMAL_PRESSURE_MPA) * 0.02 * dt
        if self.pressure < LOW_PRESSURE_MPA and not self.low:
            self.low = True
            self.emit("supervisory", zone=self.spec.zone, component_type=TYPE_PRESSURE_SWITCH,
                      pressure=round(self.pressure, 3), threshold=LOW_PRESSURE_MPA)
        elif self.pressure >= LOW_PRESSURE_MPA + 0.05 and self.low:
            self.low = False
            self.emit("supervisory_cleared", zone=self.spec.zone, pressure=round(self.pressure, 3))

    def values(self) -> dict[str, Value]:
        return {"pressure": round(self.pressure, 3), "fault": self.fault}

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "pressure_drop":
            self.drop_rate = float(kw.get("rate", 0.005))
        elif action == "pressure_restored":
            self.drop_rate = 0.0
            self.pressure = NORMAL_PRESSURE_MPA
        elif action == "power_loss":
            self.powered = False
        elif action == "power_restored":
            self.powered = True
        else:
            super().trigger(action, **kw)


@dataclass
class FirePanel(SimDevice):
    points: list[SimDevice] = field(default_factory=list)
    silenced: bool = False
    started: bool = False
    main_power_fault: bool = False
    backup_power_fault: bool = False
    seen_alarm: set[str] = field(default_factory=set)
    seen_fault: set[str] = field(default_factory=set)
    seen_shielded: set[str] = field(default_factory=set)
    supervisory_points: set[str] = field(default_factory=set)
    confirmed_zones: set[str] = field(default_factory=set)

    def step(self, dt: float) -> None:
        if not self.powered:
            return
        for point in self.points:
            pid = point.spec.device
            if isinstance(point, FireDetector):
                self._track(pid, point.fire_alarm, self.seen_alarm, "fire_alarm", point)
                self._track(pid, point.fault, self.seen_fault, "fault", point)
                self._track(pid, point.shielded, self.seen_shielded, "shielded", point)
            elif isinstance(point, PressureModule):
                self._track(pid, point.low, self.supervisory_points, "supervisory", point, pressure=round(point.pressure, 3))
                self._track(pid, point.fault, self.seen_fault, "fault", point)
            if not point.powered and pid not in self.seen_fault:
                self.seen_fault.add(pid)
                self.emit("fault", point=pid, zone=point.spec.zone, reason="point not responding")
        by_zone: dict[str | None, int] = {}
        for point in self.points:
            if isinstance(point, FireDetector) and point.fire_alarm:
                by_zone[point.spec.zone] = by_zone.get(point.spec.zone, 0) + 1
        for zone, count in by_zone.items():
            if count >= 2 and zone is not None and zone not in self.confirmed_zones:
                self.confirmed_zones.add(zone)
                self.started = True   # linkage: sounders, smoke exhaust, lifts to fire return
                self.emit("fire_confirmed", zone=zone, detectors=count)

    def _track(self, pid: str, active: bool, seen: set[str], code: str, point: SimDevice, **extra: Any) -> None:
        if active and pid not in seen:
            seen.add(pid)
            kind = TYPE_PRESSURE_SWITCH if isinstance(point, PressureModule) else TYPE_SMOKE
            self.emit(code, point=pid, zone=point.spec.zone, component_type=kind, **extra)
        elif not active and pid in seen and point.powered:
            seen.discard(pid)
            self.emit(f"{code}_cleared", point=pid, zone=point.spec.zone)

    def values(self) -> dict[str, Value]:
        return {
            "fire_alarm": bool(self.seen_alarm), "fault": bool(self.seen_fault),
            "shielded": bool(self.seen_shielded), "supervisory": bool(self.supervisory_points),
            "started": self.started, "main_power_fault": self.main_power_fault,
            "backup_power_fault": self.backup_power_fault, "bus_fault": False,
            "manual_mode": False, "detectors_in_alarm": len(self.seen_alarm),
            "points_shielded": len(self.seen_shielded),
        }

    def command(self, command_id: str, name: str, args: dict[str, Any]) -> Reply:
        if name not in self.spec.commands:
            return Reply(command_id, "rejected", f"unknown command {name!r}")
        if name == "silence":
            self.silenced = True
            self.emit("silence")
            return Reply(command_id, "done", "sounders silenced")
        if name == "reset":
            for point in self.points:
                if isinstance(point, FireDetector):
                    point.reset()
            self.confirmed_zones.clear()
            self.started = self.silenced = False
            self.emit("reset")
            return Reply(command_id, "done", "panel reset")
        if name == "self_test":
            self.emit("self_test", points=len(self.points))
            return Reply(command_id, "done", f"{len(self.points)} points tested")
        return Reply(command_id, "rejected", f"unsupported command {name!r}")

    def trigger(self, action: str, **kw: Any) -> None:
        if action == "power_loss":
            # The panel runs on its backup battery: it stays online and reports the fault.
            self.main_power_fault = True
            self.emit("main_power_fault")
        elif action == "power_restored":
            self.main_power_fault = False
            self.emit("main_power_restored")
        elif action == "reset":
            self.command("scenario-reset", "reset", {})
        else:
            super().trigger(action, **kw)
