"""A small MQTT fleet: every MQTT device of a site publishes plausible telemetry.

Enough for `hub demo` to show data within seconds; the full behavioural simulators (faults,
scenarios, Modbus) live beside this module.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hub.config import MqttUrl
from hub.registry import DeviceRef, Registry


def _elevator(state: dict[str, float], rng: random.Random, floors: int) -> dict[str, object]:
    target = state.setdefault("target", 1)
    floor = state.setdefault("floor", 1)
    if floor == target:
        state["target"] = rng.randint(-1 if rng.random() < 0.1 else 1, floors)
        if state["target"] == 0:
            state["target"] = 1
        state["trips"] = state.get("trips", 0) + 1
        moving = False
    else:
        state["floor"] = floor + (1 if target > floor else -1)
        if state["floor"] == 0:
            state["floor"] = 1 if target > 0 else -1
        moving = True
    direction = 0 if not moving else (1 if state["target"] > state["floor"] else 2)
    return {
        "running": moving, "direction": direction, "floor": int(state["floor"]),
        "door_zone": not moving, "door_state": 0 if moving else 1, "passenger": rng.random() < 0.6,
        "service_mode": 1, "upper_limit": False, "lower_limit": False, "mains_power": True,
        "running_hours": round(1200 + state.get("trips", 0) * 0.01, 2), "trips": int(state.get("trips", 0)),
        "speed": round(1.75 + rng.uniform(-0.05, 0.05), 3) if moving else 0.0,
        "load": round(rng.uniform(0, 60), 1),
    }


def sample(ref: DeviceRef, state: dict[str, float], rng: random.Random) -> dict[str, object] | None:
    kind = ref.model.kind
    if kind == "elevator":
        floors = next((b.floors for b in ref.site.buildings if b.id == ref.device.building), 18)
        return _elevator(state, rng, floors)
    if kind in ("gate", "door"):
        return {"door_open": rng.random() < 0.1, "locked": True, "tamper": False, "mode": 0}
    if kind == "fire_panel":
        return {k: False for k in ("fire_alarm", "fault", "shielded", "supervisory", "started",
                                   "main_power_fault", "backup_power_fault", "bus_fault", "manual_mode")} | {
            "detectors_in_alarm": 0, "points_shielded": 0}
    if kind == "fire_detector":
        return {"fire_alarm": False, "fault": False, "shielded": False,
                "temperature": round(22 + rng.gauss(0, 0.5), 1), "smoke": round(abs(rng.gauss(0.02, 0.01)), 3)}
    if kind == "fire_module":
        return {"pressure": round(0.45 + rng.gauss(0, 0.005), 3), "fault": False}
    if kind == "parking_lane":
        free = state.setdefault("free", 120)
        state["free"] = max(0, min(300, free + rng.choice((-1, 0, 1))))
        return {"barrier_state": 0, "barrier_fault": False, "vehicle_present": rng.random() < 0.2,
                "free_spaces": int(state["free"]), "fees_today": round(state.setdefault("fees", 0) + rng.random(), 2)}
    return None


class BasicMqttFleet:
    """Publishes one telemetry message per device per `interval_s` on one connection."""

    def __init__(self, url: MqttUrl, registry: Registry, *, site: str | None = None, interval_s: float = 1.0, seed: int = 1) -> None:
        self.refs = [r for r in registry.devices.values() if r.model.protocol == "mqtt" and (site is None or r.site.id == site)]
        self.interval_s = interval_s
        self.rng = random.Random(seed)
        self.states: dict[tuple[str, str], dict[str, float]] = {r.key: {} for r in self.refs}
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-basic-{seed}", clean_session=True)
        if url.username:
            self.client.username_pw_set(url.username, url.password.get_secret_value() if url.password else None)
        self.client.max_inflight_messages_set(1000)
        self.url = url
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-basic", daemon=True)

    def start(self) -> None:
        self.client.connect(self.url.host, self.url.port)
        self.client.loop_start()
        for ref in self.refs:
            self.client.publish(f"facility/{ref.site.id}/{ref.device.id}/status", b'"online"', qos=1, retain=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = datetime.now(UTC).isoformat(timespec="milliseconds")
            for ref in self.refs:
                values = sample(ref, self.states[ref.key], self.rng)
                if values is None:
                    continue
                self.client.publish(f"facility/{ref.site.id}/{ref.device.id}/telemetry",
                                    orjson.dumps({"ts": now, **values}), qos=1)
                self.sent += 1
            self._stop.wait(self.interval_s)


def run_for(url: MqttUrl, registry: Registry, seconds: float, **kw: object) -> int:
    fleet = BasicMqttFleet(url, registry, **kw)  # type: ignore[arg-type]
    fleet.start()
    time.sleep(seconds)
    fleet.stop()
    return fleet.sent
