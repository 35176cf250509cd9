"""Modbus TCP side of the simulators: one pymodbus server per endpoint (host, port), acting as
a gateway with one unit id per device. Every request is answered from the device's current
state, encoded with the registry's register map; writes to `writable` registers act on the
device. A powered-off unit never answers (the client times out); injected faults give
exception responses, timeouts and dropped connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData
from pymodbus.simulator import SimDevice as PymodbusDevice

from hub.registry import Register
from simulators.devices import Elevator, SimDevice
from simulators.faults import FaultInjector
from simulators.registers import decode_words, encode, extent

log = logging.getLogger(__name__)
TABLE_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
               22: "holding", 23: "holding", 4: "input"}


@dataclass
class ModbusUnit:
    """One simulated device behind a unit id."""

    device: SimDevice
    registers: Sequence[Register]
    unit_id: int
    requests: int = 0
    writes: list[tuple[str, float]] = field(default_factory=list)


def apply_write(device: SimDevice, metric: str, value: float) -> bool:
    """A Modbus write of a writable metric; returns False when the device refuses it."""
    if isinstance(device, Elevator) and metric == "service_mode":
        mode = int(value)
        if mode not in range(0, 8):
            return False
        device.set_mode(mode)
        return True
    if isinstance(device, Elevator) and metric == "call_floor":
        return value == int(value) and device.call(int(value))
    return False


class ModbusEndpoint:
    """A pymodbus TCP server on (host, port) serving several units."""

    def __init__(self, host: str, port: int, units: list[ModbusUnit], *, faults: FaultInjector | None = None) -> None:
        self.host, self.port = host, port
        self.units = {u.unit_id: u for u in units}
        self.faults = faults
        self.server: ModbusTcpServer | None = None
        self._power_waiters: dict[int, asyncio.Event] = {}
        self.dropped_connections = 0
        self._closed = asyncio.Event()

    def _pymodbus_device(self, unit: ModbusUnit) -> PymodbusDevice:
        size = extent(unit.registers)
        words = lambda n: [SimData(0, values=[0] * max(1, n), datatype=DataType.REGISTERS)]  # noqa: E731
        bits = lambda n: [SimData(0, values=[False] * (16 * max(1, (n + 15) // 16)), datatype=DataType.BITS)]  # noqa: E731
        return PymodbusDevice(
            id=unit.unit_id,
            simdata=(bits(size["coil"]), bits(size["discrete"]), words(size["holding"]), words(size["input"])),
            action=functools.partial(self._action, unit),
        )

    async def start(self) -> None:
        devices = [self._pymodbus_device(u) for u in self.units.values()]
        self.server = ModbusTcpServer(devices, address=(self.host, self.port))
        try:
            await self.server.serve_forever(background=True)
        except RuntimeError as exc:       # pymodbus: "Could not start listen"
            self.server = None
            raise OSError(f"Modbus simulator cannot listen on {self.host}:{self.port} (port in use?)") from exc

    async def stop(self) -> None:
        self._closed.set()
        for event in self._power_waiters.values():
            event.set()
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    def drop_connections(self) -> None:
        """Close every client connection (as a controller reboot or a cable pull does)."""
        if self.server is not None:
            for conn in list(self.server.active_connections.values()):
                conn.close()
                self.dropped_connections += 1

    async def _action(self, unit: ModbusUnit, function_code: int, start_address: int, address: int,
                      count: int, registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        unit.requests += 1
        fault = self.faults.modbus() if self.faults else None
        if not unit.device.powered or fault == "timeout":
            # Never answer: the pending request dies with the connection or server.
            waiter = self._power_waiters.setdefault(unit.unit_id, asyncio.Event())
            if fault == "timeout":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), 30.0)
            else:
                await waiter.wait()
            raise asyncio.CancelledError
        if fault == "disconnect":
            asyncio.get_running_loop().call_soon(self.drop_connections)
            raise asyncio.CancelledError
        if fault == "exception":
            assert self.faults is not None
            return ExcCodes(self.faults.plan.exception_code)
        table = TABLE_OF_FC.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if set_values is not None:
            refused = self._write(unit, table, address, list(set_values))
            if refused:
                return refused
        self._refresh(unit, table, start_address, registers)
        return None

    def _write(self, unit: ModbusUnit, table: str, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        written = {address + i: int(v) for i, v in enumerate(values)}
        for reg in unit.registers:
            if reg.table != table or not any(a in written for a in range(reg.address, reg.address + reg.count)):
                continue
            if not reg.writable or reg.bit is not None:
                return ExcCodes.ILLEGAL_ADDRESS
            words = [written.get(a) for a in range(reg.address, reg.address + reg.count)]
            if any(w is None for w in words):
                return ExcCodes.ILLEGAL_VALUE    # a partial write of a multi-register value
            value = decode_words(reg, [w for w in words if w is not None])
            if not apply_write(unit.device, reg.metric, value):
                return ExcCodes.ILLEGAL_VALUE
            unit.writes.append((reg.metric, value))
        return None

    def _refresh(self, unit: ModbusUnit, table: str, start_address: int, registers: list[int]) -> None:
        image = encode(unit.registers, unit.device.values())
        if table in ("holding", "input"):
            for i in range(len(registers)):
                registers[i] = 0
            for addr, word in image.words[table].items():
                i = addr - start_address
                if 0 <= i < len(registers):
                    registers[i] = word
        else:
            for i in range(len(registers)):
                registers[i] = 0
            for addr, bit in image.bits[table].items():
                i = addr // 16 - start_address
                if bit and 0 <= i < len(registers):
                    registers[i] |= 1 << (addr % 16)

    def power_changed(self, unit_id: int) -> None:
        """Release requests held by a unit that has power again (they still get no answer)."""
        waiter = self._power_waiters.pop(unit_id, None)
        if waiter is not None:
            waiter.set()


def endpoints_for(fleet_devices: dict[tuple[str, str], SimDevice], registry: Any, *, port_offset: int = 0,
                  port_map: dict[int, int] | None = None, faults: FaultInjector | None = None,
                  host: str | None = None) -> list[ModbusEndpoint]:
    """One endpoint per (host, port) of the registry's Modbus devices; ports remappable for tests."""
    by_endpoint: dict[tuple[str, int], list[ModbusUnit]] = {}
    for key, device in fleet_devices.items():
        ref = registry.devices.get(key)
        if ref is None or ref.model.protocol != "modbus" or ref.model.modbus is None:
            continue
        ep = ref.device.modbus
        h, p = (ep.host, ep.port) if ep else ("127.0.0.1", 502)
        p = (port_map or {}).get(p, p + port_offset)
        unit_id = (ep.unit_id if ep and ep.unit_id is not None else ref.model.modbus.unit_id)
        by_endpoint.setdefault((host or h, p), []).append(ModbusUnit(device, ref.model.modbus.registers, unit_id))
    return [ModbusEndpoint(h, p, units, faults=faults) for (h, p), units in sorted(by_endpoint.items())]
