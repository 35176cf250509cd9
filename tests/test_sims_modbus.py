"""Simulated Modbus devices read back with a plain pymodbus client: values, writes, faults."""

from __future__ import annotations

import asyncio

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.exceptions import ModbusException

from hub.registry import load_registry
from simulators.faults import FaultPlan
from simulators.runner import SimOptions, Simulation
from tests.sims_support import modbus_ports, until

DT = ModbusClientMixin.DATATYPE


@pytest.fixture(scope="module")
def demo(demo_registry_path):
    return load_registry(demo_registry_path)


async def client(port: int, wait_s: float = 1.0) -> AsyncModbusTcpClient:
    c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=wait_s, retries=0)
    assert await c.connect()
    return c


def sim_for(demo, **kw):
    ports = modbus_ports()
    return ports, Simulation(demo, None, options=SimOptions(mqtt=False, modbus_ports=ports, **kw))


async def test_elevator_registers_decode_to_the_devices_values(demo):
    ports, sim = sim_for(demo, speed=10)
    async with sim:
        lift = sim.fleet.devices[("demo", "el-b3-1")]
        c = await client(ports[15020])
        try:
            for _ in range(3):
                r = await c.read_holding_registers(0, count=12, device_id=1)
                expected = lift.values()
                regs = r.registers
                flags = regs[0]
                assert bool(flags & 1) == expected["running"]
                assert bool(flags & 2) == expected["door_zone"]
                assert bool(flags & 4) == expected["passenger"]
                assert bool(flags & 32) == expected["mains_power"] is True
                assert regs[1] == expected["direction"]
                assert c.convert_from_registers([regs[2]], DT.INT16) == expected["floor"]
                assert regs[3] == expected["door_state"] and regs[4] == expected["service_mode"]
                assert c.convert_from_registers([regs[5]], DT.INT16) * 0.01 == pytest.approx(expected["speed"], abs=0.006)
                assert regs[6] * 0.1 == pytest.approx(expected["load"], abs=0.06)
                assert c.convert_from_registers(regs[8:10], DT.UINT32) == expected["trips"]
                assert c.convert_from_registers(regs[10:12], DT.FLOAT32) == pytest.approx(expected["running_hours"], rel=1e-6)
                await asyncio.sleep(0.3)
        finally:
            c.close()


async def test_parking_meter_input_registers_and_discrete_fault(demo):
    ports, sim = sim_for(demo, speed=20, scenario="barrier_stuck")
    async with sim:
        meter = sim.fleet.devices[("demo", "meter-garage")]
        c = await client(ports[15021])
        try:
            r = await c.read_input_registers(0, count=4, device_id=1)
            v = meter.values()
            assert r.registers[0] == v["free_spaces"] and r.registers[1] == v["occupied_spaces"]
            assert r.registers[0] + r.registers[1] == 300
            assert c.convert_from_registers(r.registers[2:4], DT.UINT32) / 100 == pytest.approx(v["fees_today"])

            async def fault_bit() -> bool:
                return (await c.read_discrete_inputs(0, count=1, device_id=1)).bits[0]

            assert await fault_bit() is False
            await until(lambda: sim.fleet.t > 11, what="scenario start")
            assert await fault_bit() is True
        finally:
            c.close()


async def test_writing_service_mode_changes_the_lift_and_reads_back(demo):
    ports, sim = sim_for(demo, speed=5)
    async with sim:
        lift = sim.fleet.devices[("demo", "el-b3-1")]
        c = await client(ports[15020])
        try:
            r = await c.write_register(4, 0, device_id=1)
            assert not r.isError()
            assert lift.service_mode == 0
            assert (await c.read_holding_registers(4, count=1, device_id=1)).registers == [0]
            assert (await c.write_register(4, 1, device_id=1)).registers == [1]
            assert lift.service_mode == 1
            bad = await c.write_register(4, 99, device_id=1)             # not a mode
            assert bad.isError() and bad.exception_code == 3
            ro = await c.write_register(2, 5, device_id=1)              # floor is read-only
            assert ro.isError() and ro.exception_code == 2
        finally:
            c.close()


async def test_injected_exception_codes(demo):
    ports, sim = sim_for(demo, faults=FaultPlan(modbus_exception=1.0, exception_code=6))
    async with sim:
        c = await client(ports[15020])
        try:
            r = await c.read_holding_registers(0, count=12, device_id=1)
            assert r.isError() and r.exception_code == 6
        finally:
            c.close()


async def test_injected_timeouts_never_answer(demo):
    ports, sim = sim_for(demo, faults=FaultPlan(modbus_timeout=1.0))
    async with sim:
        c = await client(ports[15020], wait_s=0.5)
        try:
            with pytest.raises(ModbusException):
                await c.read_holding_registers(0, count=12, device_id=1)
        finally:
            c.close()


async def test_injected_disconnect_drops_the_connection(demo):
    ports, sim = sim_for(demo, faults=FaultPlan(modbus_disconnect=1.0))
    async with sim:
        c = await client(ports[15020], wait_s=1.0)
        try:
            with pytest.raises(ModbusException):
                await c.read_holding_registers(0, count=12, device_id=1)
            ep = next(e for e in sim.endpoints if e.port == ports[15020])
            await until(lambda: ep.dropped_connections >= 1, within=5, what="connection closed by the server")
            ep.faults = None
            await asyncio.sleep(0.5)        # the client reconnects on its own
            assert not (await c.read_holding_registers(0, count=12, device_id=1)).isError()
        finally:
            c.close()


async def test_power_loss_times_out_the_powered_off_unit_and_recovers(demo):
    ports, sim = sim_for(demo, speed=40, scenario="power_loss")
    async with sim:
        c = await client(ports[15020], wait_s=0.5)
        m = await client(ports[15021], wait_s=0.5)
        try:
            assert not (await c.read_holding_registers(0, count=12, device_id=1)).isError()
            await until(lambda: not sim.fleet.devices[("demo", "el-b3-1")].powered, what="power loss")
            with pytest.raises(ModbusException):
                await c.read_holding_registers(0, count=12, device_id=1)
            # The garage is not in a building with a lift: its meter keeps answering.
            assert not (await m.read_input_registers(0, count=4, device_id=1)).isError()
            await until(lambda: sim.fleet.devices[("demo", "el-b3-1")].powered, within=10, what="power back")
            c.close()
            c = await client(ports[15020], wait_s=1.0)
            r = await c.read_holding_registers(0, count=12, device_id=1)
            assert not r.isError() and r.registers[0] & 32       # mains_power bit
        finally:
            c.close()
            m.close()
