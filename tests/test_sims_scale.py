"""A scaled fleet of more than 2,000 devices on this machine, counted on the broker."""

from __future__ import annotations

import time
import uuid

import pytest

from hub.config import parse_mqtt_url
from hub.registry import load_registry
from simulators.fleet import write_scaled_registry
from simulators.runner import SimOptions, Simulation
from tests.sims_support import (
    Recorder,
    clean_broker,  # noqa: F401  (fixture)
    until,
)
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("clean_broker")]


async def test_2100_mqtt_and_300_modbus_devices_run_at_once(broker, demo_registry_path, tmp_path):
    demo = load_registry(demo_registry_path)
    rec = Recorder(broker.url, "facility/+/+/telemetry")
    ports = {15020: free_port(), 15021: free_port()}
    options = SimOptions(scale=150, speed=1, client_prefix=f"s{uuid.uuid4().hex[:4]}", modbus_ports=ports)
    try:
        started = time.monotonic()
        async with Simulation(demo, parse_mqtt_url(broker.url), options=options) as sim:
            connected_s = time.monotonic() - started
            assert sim.mqtt_devices == 2100 and sim.modbus_devices == 300
            assert sim.mqtt is not None and sim.mqtt.connected == 2100

            def seen() -> set[str]:
                return {t.split("/")[2] for t, _ in rec.where(lambda t, p: True)}

            await until(lambda: len(seen()) >= 2100, within=60, what="telemetry from 2,100 devices")
            from pymodbus.client import AsyncModbusTcpClient

            c = AsyncModbusTcpClient("127.0.0.1", port=ports[15020], timeout=2, retries=0)
            await c.connect()
            answered = 0
            for unit in (1, 77, 150):
                r = await c.read_holding_registers(0, count=12, device_id=unit)
                answered += not r.isError()
            c.close()
            assert answered == 3
        print(f"\n2,100 MQTT connections up in {connected_s:.1f} s; {len(seen())} distinct devices seen")
        assert len(seen()) == 2100
        path = write_scaled_registry(demo, 150, tmp_path / "fleet.yaml")
        assert len(load_registry(path).devices) == 2400
    finally:
        rec.close()
