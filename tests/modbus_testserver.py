"""pymodbus's own `ModbusTcpServer` in a background thread, its datastore filled by the test.

Deliberately not the project's simulator: the driver is checked against an independent
implementation of the protocol. Faults are injected through the datastore's `action` hook
(pymodbus calls it on every request): an exception code, or a delay longer than the timeout.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from tests.support import free_port

# Function codes the datastore uses to pick a table when the test sets values.
_SET_CODE = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}
_READ_CODES = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


class PymodbusServer:
    """`with PymodbusServer(units=[1, 2]) as server:`; `server.port`, `set_words`, `stop`/`start`."""

    def __init__(self, units: Iterable[int] = (1,), *, size: int = 256, port: int | None = None,
                 holes: Sequence[tuple[int, int]] = ()) -> None:
        self.units = list(units)
        self.size = size
        self.holes = list(holes)  # (start, end) holding addresses that do not exist
        self.port = port or free_port()
        self.faults: dict[int, tuple[str, float]] = {}  # unit → ("exception", code) | ("delay", s)
        self.requests: Counter[tuple[int, str]] = Counter()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: ModbusTcpServer | None = None
        self._context: Any = None

    def _devices(self) -> list[SimDevice]:
        devices = []
        for unit in self.units:
            holding: list[SimData] = []
            start = 0
            for hole_start, hole_end in sorted(self.holes):
                if hole_start > start:
                    holding.append(SimData(start, count=hole_start - start, values=0, datatype=DataType.REGISTERS))
                start = hole_end
            holding.append(SimData(start, count=self.size - start, values=0, datatype=DataType.REGISTERS))
            devices.append(SimDevice(
                unit,
                simdata=(
                    [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
                    [SimData(0, count=self.size, values=False, datatype=DataType.BITS)],
                    holding,
                    [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)],
                ),
                action=functools.partial(self._action, unit),
            ))
        return devices

    async def _action(self, unit: int, function_code: int, _start: int, _address: int, _count: int,
                      _registers: list[int], set_values: Any) -> ExcCodes | None:
        if set_values is None and function_code in _READ_CODES:
            self.requests[(unit, _READ_CODES[function_code])] += 1
        fault = self.faults.get(unit)
        if fault is None:
            return None
        kind, arg = fault
        if kind == "exception":
            return ExcCodes(int(arg))
        await asyncio.sleep(arg)
        return None

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        async def go() -> ModbusTcpServer:
            server = ModbusTcpServer(self._devices(), address=("127.0.0.1", self.port))
            if self._context is not None:
                server.context = self._context  # keep the values across a restart
            self._context = server.context
            await server.serve_forever(background=True)
            return server

        self.server = self._run(go())

    def stop(self) -> None:
        if self.server is not None:
            server, self.server = self.server, None
            self._run(server.shutdown())

    def close(self) -> None:
        self.stop()

        async def cancel_pending() -> None:
            current = asyncio.current_task()
            pending = [t for t in asyncio.all_tasks() if t is not current]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        self._run(cancel_pending())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def __enter__(self) -> PymodbusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_words(self, unit: int, table: str, address: int, words: Sequence[int]) -> None:
        result = self._run(self._context.async_setValues(unit, _SET_CODE[table], address, list(words)))
        assert result is None, f"datastore refused {table} {address}: {result}"

    def set_bits(self, unit: int, table: str, address: int, bits: Sequence[bool]) -> None:
        result = self._run(self._context.async_setValues(unit, _SET_CODE[table], address, list(bits)))
        assert result is None, f"datastore refused {table} {address}: {result}"

    def get_words(self, unit: int, table: str, address: int, count: int) -> list[int]:
        code = {"holding": 3, "input": 4, "coil": 1, "discrete": 2}[table]
        return list(self._run(self._context.async_getValues(unit, code, address, count)))

    def reads(self, unit: int | None = None) -> int:
        return sum(n for (u, _t), n in self.requests.items() if unit is None or u == unit)
