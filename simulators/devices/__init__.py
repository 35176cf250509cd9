"""Device models: pure, seeded state machines, one module per kind."""

from __future__ import annotations

import random

from hub.registry import DeviceRef
from simulators.devices.base import DeviceSpec, Event, Reply, SimDevice, Value
from simulators.devices.elevator import Elevator
from simulators.devices.fire import FireDetector, FirePanel, PressureModule
from simulators.devices.gate import Gate
from simulators.devices.parking import ParkingLane, ParkingLot, ParkingMeter

__all__ = ["DeviceSpec", "Elevator", "Event", "FireDetector", "FirePanel", "Gate", "ParkingLane",
           "ParkingLot", "ParkingMeter", "PressureModule", "Reply", "SimDevice", "Value",
           "build_device", "spec_of"]

KINDS: dict[str, type[SimDevice]] = {
    "elevator": Elevator, "gate": Gate, "door": Gate, "fire_panel": FirePanel,
    "fire_detector": FireDetector, "fire_module": PressureModule,
    "parking_lane": ParkingLane, "barrier": ParkingLane, "parking_meter": ParkingMeter,
}


def spec_of(ref: DeviceRef) -> DeviceSpec:
    building = next((b for b in ref.site.buildings if b.id == ref.device.building), None)
    return DeviceSpec(
        site=ref.site.id, device=ref.device.id, kind=ref.model.kind, model=ref.model.id,
        protocol=ref.model.protocol, metrics=tuple(m.name for m in ref.model.metrics),
        commands=tuple(ref.model.commands), building=ref.device.building,
        floors=building.floors if building else 1,
        basement_floors=building.basement_floors if building else 0,
        floor=ref.device.floor, zone=ref.device.zone,
        group=ref.device.tags.get("sim_copy", "0"),
        report_s=min(5.0, ref.model.heartbeat_s),
    )


def build_device(spec: DeviceSpec, seed: int) -> SimDevice | None:
    """The device model for `spec`, with its own random stream (independent of fleet order)."""
    cls = KINDS.get(spec.kind)
    if cls is None:
        return None
    return cls(spec=spec, rng=random.Random(f"{seed}/{spec.site}/{spec.device}"))
