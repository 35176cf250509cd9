"""Named scenarios (`--scenario`): schedules of device actions in simulated seconds.

Each scenario acts in every site copy of a scaled fleet, starting `START_S` after the start so
the hub has seen the devices online first. docs/simulators.md lists what each one produces.
"""

from __future__ import annotations

from collections.abc import Callable

from simulators.devices import FireDetector, FirePanel
from simulators.engine import Fleet, Key, ScenarioStep

START_S = 10.0
FIRE_OUT_S = 120.0        # fire scenario: smoke stops (and the panel is reset) this long after it starts
PRESSURE_BACK_S = 120.0   # sprinkler scenario: the pump restores the pressure
Planner = Callable[[Fleet], list[ScenarioStep]]


def _groups(fleet: Fleet) -> dict[tuple[str, str], list[Key]]:
    groups: dict[tuple[str, str], list[Key]] = {}
    for key, dev in fleet.devices.items():
        groups.setdefault((dev.spec.site, dev.spec.group), []).append(key)
    return groups


def _first(fleet: Fleet, keys: list[Key], kind: str, protocol: str | None = None) -> Key | None:
    for key in keys:
        spec = fleet.devices[key].spec
        if spec.kind == kind and (protocol is None or spec.protocol == protocol):
            return key
    return None


def entrapment(fleet: Fleet) -> list[ScenarioStep]:
    """A car stops between floors with two people inside; rescued after 10 minutes."""
    steps = []
    for keys in _groups(fleet).values():
        key = _first(fleet, keys, "elevator", "mqtt") or _first(fleet, keys, "elevator")
        if key:
            steps.append(ScenarioStep(START_S, key, "entrapment", {"passengers": 2, "rescue_after_s": 600.0}))
    return steps


def fire(fleet: Fleet) -> list[ScenarioStep]:
    """Smoke at one detector (pre-alarm), a minute later at a second in the same zone (confirmed)."""
    steps = []
    for keys in _groups(fleet).values():
        zones: dict[str, list[Key]] = {}
        for key in keys:
            dev = fleet.devices[key]
            if isinstance(dev, FireDetector) and dev.spec.zone:
                zones.setdefault(dev.spec.zone, []).append(key)
        pair = next((z for z in sorted(zones) if len(zones[z]) >= 2), None)
        if pair is None:
            continue
        first, second = zones[pair][:2]
        steps.append(ScenarioStep(START_S, first, "smoke", {"rate": 0.01}))
        steps.append(ScenarioStep(START_S + 60.0, second, "smoke", {"rate": 0.01}))
        building = fleet.devices[first].spec.building
        for key in keys:
            dev = fleet.devices[key]
            if dev.spec.kind == "elevator" and dev.spec.building == building:
                steps.append(ScenarioStep(START_S + 90.0, key, "fire_return"))
                steps.append(ScenarioStep(START_S + FIRE_OUT_S + 5.0, key, "back_to_service"))
        # The fire is put out; the panel is reset once the smoke has cleared.
        steps.append(ScenarioStep(START_S + FIRE_OUT_S, first, "extinguished"))
        steps.append(ScenarioStep(START_S + FIRE_OUT_S, second, "extinguished"))
        for key in keys:
            if isinstance(fleet.devices[key], FirePanel):
                steps.append(ScenarioStep(START_S + FIRE_OUT_S + 2.0, key, "reset"))
    return steps


def power_loss(fleet: Fleet, *, restore_after_s: float = 120.0) -> list[ScenarioStep]:
    """Mains power fails in every building with a lift: devices drop at once, then come back."""
    steps = []
    for keys in _groups(fleet).values():
        lifted = {fleet.devices[k].spec.building for k in keys if fleet.devices[k].spec.kind == "elevator"}
        for key in keys:
            if fleet.devices[key].spec.building in lifted:
                steps.append(ScenarioStep(START_S, key, "power_loss"))
                steps.append(ScenarioStep(START_S + restore_after_s, key, "power_restored"))
    return steps


def gate_forced_night(fleet: Fleet) -> list[ScenarioStep]:
    """At 02:30 site time a pedestrian gate is forced open and left open for 45 s."""
    steps = []
    for keys in _groups(fleet).values():
        key = _first(fleet, keys, "gate") or _first(fleet, keys, "door")
        if key:
            steps.append(ScenarioStep(START_S, key, "forced_open", {"hour": 2.5, "open_s": 45.0}))
    return steps


def barrier_stuck(fleet: Fleet) -> list[ScenarioStep]:
    """The entry lane's barrier arm sticks open for 5 minutes."""
    steps = []
    for keys in _groups(fleet).values():
        key = _first(fleet, keys, "parking_lane")
        if key:
            steps.append(ScenarioStep(START_S, key, "barrier_stuck", {"seconds": 300.0, "reason": "arm stuck open"}))
    return steps


def sprinkler_pressure_drop(fleet: Fleet) -> list[ScenarioStep]:
    """The sprinkler main loses pressure (0.45 → below 0.30 MPa within about 30 s)."""
    steps = []
    for keys in _groups(fleet).values():
        key = _first(fleet, keys, "fire_module")
        if key:
            steps.append(ScenarioStep(START_S, key, "pressure_drop", {"rate": 0.005}))
            steps.append(ScenarioStep(START_S + PRESSURE_BACK_S, key, "pressure_restored"))
    return steps


SCENARIOS: dict[str, Planner] = {
    "entrapment": entrapment,
    "fire": fire,
    "power_loss": power_loss,
    "gate_forced_night": gate_forced_night,
    "barrier_stuck": barrier_stuck,
    "sprinkler_pressure_drop": sprinkler_pressure_drop,
}


def plan(fleet: Fleet, name: str) -> list[ScenarioStep]:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    return SCENARIOS[name](fleet)
