"""Run a fleet: the engine's ticks paced by `speed`, MQTT and Modbus transports, commands in.

`Simulation` is an async context manager so demos and tests own its lifetime; `run_simulate`
is `hub simulate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hub.config import MqttUrl
from hub.registry import Registry
from simulators.engine import Fleet, Key, Message
from simulators.faults import FaultInjector, FaultPlan
from simulators.fleet import scaled_registry
from simulators.modbus_transport import ModbusEndpoint, endpoints_for
from simulators.mqtt_transport import MqttTransport
from simulators.scenarios import plan

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SimOptions:
    scale: int = 1
    speed: float = 1.0
    scenario: str | None = None
    seed: int = 1
    tick_s: float = 1.0
    faults: FaultPlan = field(default_factory=FaultPlan)
    start_ms: int | None = None                  # default: the wall clock at start
    modbus_ports: dict[int, int] | None = None   # registry port → port to listen on (tests)
    modbus_port_offset: int = 0
    modbus_host: str | None = None
    mqtt: bool = True
    modbus: bool = True
    client_prefix: str = "sim"
    record: bool = False                         # keep every message (tests)


class Simulation:
    """A running fleet. `async with Simulation(registry, url, options=...) as sim:`."""

    def __init__(self, registry: Registry, mqtt_url: MqttUrl | None, *, options: SimOptions = SimOptions()) -> None:
        if options.speed <= 0:
            raise ValueError("speed must be positive")
        self.options = options
        self.registry = scaled_registry(registry, options.scale)
        start_ms = options.start_ms if options.start_ms is not None else int(time.time() * 1000)
        self.fleet = Fleet.from_registry(self.registry, seed=options.seed, start_ms=start_ms,
                                         speed=options.speed, tick_s=options.tick_s)
        if options.scenario:
            self.fleet.schedule_steps(plan(self.fleet, options.scenario))
        self.protocol = {key: dev.spec.protocol for key, dev in self.fleet.devices.items()}
        injector = FaultInjector(options.faults, random.Random(f"{options.seed}/faults")) if options.faults.active else None
        self.mqtt: MqttTransport | None = None
        if options.mqtt and mqtt_url is not None:
            keys = [k for k, p in self.protocol.items() if p == "mqtt"]
            self.mqtt = MqttTransport(mqtt_url, keys, on_command=self._on_command, faults=injector,
                                      client_prefix=options.client_prefix)
        self.endpoints: list[ModbusEndpoint] = []
        if options.modbus:
            self.endpoints = endpoints_for(self.fleet.devices, self.registry, port_map=options.modbus_ports,
                                           port_offset=options.modbus_port_offset,
                                           faults=injector, host=options.modbus_host)
        self._unit_of: dict[Key, tuple[ModbusEndpoint, int]] = {}
        for ep in self.endpoints:
            for unit in ep.units.values():
                self._unit_of[(unit.device.spec.site, unit.device.spec.device)] = (ep, unit.unit_id)
        self.counts: Counter[str] = Counter()
        self.messages: list[Message] = []
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0

    @property
    def mqtt_devices(self) -> int:
        return sum(1 for p in self.protocol.values() if p == "mqtt")

    @property
    def modbus_devices(self) -> int:
        return len(self._unit_of)

    async def __aenter__(self) -> Simulation:
        try:
            for ep in self.endpoints:
                await ep.start()
            if self.mqtt is not None:
                await self.mqtt.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        self._route(self.fleet.initial_reports())
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.mqtt is not None:
            await self.mqtt.stop()
        for ep in self.endpoints:
            await ep.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.options.tick_s / self.options.speed
        next_at = loop.time()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            self._route(self.fleet.tick())
            self.ticks += 1

    def _route(self, messages: list[Message]) -> None:
        for msg in messages:
            self.counts[msg.channel] += 1
            if self.options.record:
                self.messages.append(msg)
            if self.protocol.get(msg.key) == "mqtt":
                if self.mqtt is not None:
                    self.mqtt.send(msg)
            elif msg.channel == "power" and msg.payload == b"1" and msg.key in self._unit_of:
                ep, unit_id = self._unit_of[msg.key]
                ep.power_changed(unit_id)
            # Modbus devices have no events: the driver reads their registers instead.

    def _on_command(self, key: Key, command_id: str, payload: bytes) -> None:
        self.counts["command"] += 1
        self._route(self.fleet.command(key, command_id, payload, now_ms=int(time.time() * 1000)))

    async def run_for(self, seconds: float | None) -> None:
        if seconds is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(seconds)


async def run_simulate(site: Path, mqtt_url: MqttUrl, options: SimOptions, duration: float | None,
                       stop: asyncio.Event) -> Simulation:
    from hub.registry import load_registry

    registry = load_registry(site)
    started = time.monotonic()
    async with Simulation(registry, mqtt_url, options=options) as sim:
        print(f"hub simulate: {len(sim.fleet.devices)} devices ({sim.mqtt_devices} MQTT on "
              f"mqtt://{mqtt_url.host}:{mqtt_url.port}, {sim.modbus_devices} Modbus on "
              f"{', '.join(f'{ep.host}:{ep.port}' for ep in sim.endpoints) or 'no endpoints'}), "
              f"speed x{options.speed:g}, seed {options.seed}"
              + (f", scenario {options.scenario}" if options.scenario else ""), flush=True)
        while not stop.is_set():
            left = None if duration is None else duration - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(10.0, left) if left is not None else 10.0)
            c = sim.counts
            print(f"[{time.monotonic() - started:6.0f} s] simulated {sim.fleet.t:.0f} s  telemetry {c['telemetry']}  "
                  f"events {c['event']}  replies {c['reply']}  commands {c['command']}", flush=True)
    return sim
