"""One Modbus TCP connection per (host, port), shared by every unit id behind it.

Like Home Assistant's modbus hub: one pymodbus `AsyncModbusTcpClient`, calls serialised with an
`asyncio.Lock` (most devices and gateways answer one request at a time). Reconnection is ours,
not pymodbus's: after a failed connect the endpoint refuses calls at once (so polls record a
bad reading instead of queueing up) until an exponential backoff delay has passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

log = logging.getLogger(__name__)


class ModbusReadError(Exception):
    """A read or write that produced no data; `reason` is short and safe to store."""

    def __init__(self, reason: str, *, exception_code: int | None = None, timeout: bool = False,
                 connection: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exception_code = exception_code
        self.timeout = timeout
        self.connection = connection


EXCEPTION_NAMES = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge", 6: "device busy", 8: "memory parity error",
    10: "gateway path unavailable", 11: "gateway target failed to respond",
}


_READ_METHODS = {"holding": "read_holding_registers", "input": "read_input_registers",
                 "coil": "read_coils", "discrete": "read_discrete_inputs"}


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff for reconnects: `first`, doubling, capped at `cap` seconds."""

    first: float = 0.5
    cap: float = 30.0

    def next(self, current: float) -> float:
        return self.first if current <= 0 else min(current * 2, self.cap)


@dataclass(slots=True)
class EndpointStats:
    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    exceptions: int = 0
    connects: int = 0
    connect_failures: int = 0


class ModbusEndpoint:
    """A shared, serialised connection to one Modbus TCP server or gateway."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 1.0,
                 backoff: Backoff | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.stats = EndpointStats()
        self.lock = asyncio.Lock()
        self._client: AsyncModbusTcpClient | None = None
        self._delay = 0.0
        self._next_attempt = 0.0
        self.last_error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def __aenter__(self) -> ModbusEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _ensure_connected(self) -> AsyncModbusTcpClient:
        """Connect if needed; fail fast while the backoff delay runs."""
        client = self._client
        if client is not None and client.connected:
            return client
        now = time.monotonic()
        if now < self._next_attempt:
            raise ModbusReadError(f"{self.name} unreachable ({self.last_error}); retry in "
                                  f"{self._next_attempt - now:.1f} s", connection=True)
        if client is not None:
            client.close()
        # retries=0 and reconnect_delay=0: retries and reconnection are decided here.
        client = AsyncModbusTcpClient(self.host, port=self.port, timeout=self.timeout_s, retries=0,
                                      reconnect_delay=0, reconnect_delay_max=0)
        self._client = client
        ok = False
        reason = "connection refused or timed out"
        try:
            ok = await client.connect()
        except (OSError, ModbusException) as exc:
            reason = f"connect failed: {exc}"
        if not ok or not client.connected:
            client.close()
            self._client = None
            self.stats.connect_failures += 1
            self._delay = self.backoff.next(self._delay)
            self._next_attempt = time.monotonic() + self._delay
            self.last_error = reason
            if self.stats.connect_failures == 1 or self._delay >= self.backoff.cap:
                log.warning("modbus %s: cannot connect; next attempt in %.1f s", self.name, self._delay)
            raise ModbusReadError(f"{self.name}: {self.last_error}", connection=True)
        if self._delay > 0:
            log.info("modbus %s: connected again", self.name)
        self._delay = 0.0
        self._next_attempt = 0.0
        self.last_error = None
        self.stats.connects += 1
        return client

    async def call(self, method: str, unit: int, *args: Any, retries: int = 0, **kwargs: Any) -> Any:
        """Run one client request under the lock; retry timeouts; raise `ModbusReadError`."""
        async with self.lock:
            return await self._call(method, unit, *args, retries=retries, **kwargs)

    async def _call(self, method: str, unit: int, *args: Any, retries: int = 0, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            client = await self._ensure_connected()
            self.stats.requests += 1
            try:
                response = await getattr(client, method)(*args, device_id=unit, **kwargs)
            except ConnectionException as exc:
                self.stats.errors += 1
                self._drop(f"connection lost: {exc}")
                raise ModbusReadError(f"{self.name}: connection lost", connection=True) from exc
            except ModbusIOException as exc:
                self.stats.timeouts += 1
                # A late answer could be taken for the next request's: start a fresh connection.
                self._drop(f"unit {unit}: no response")
                if attempt < retries:
                    attempt += 1
                    continue
                raise ModbusReadError(f"unit {unit}: no response within {self.timeout_s} s", timeout=True) from exc
            except ModbusException as exc:
                self.stats.errors += 1
                raise ModbusReadError(f"unit {unit}: {exc}") from exc
            if response.isError():
                self.stats.exceptions += 1
                code = int(getattr(response, "exception_code", 0) or 0)
                name = EXCEPTION_NAMES.get(code, "unknown")
                raise ModbusReadError(f"unit {unit}: exception {code} ({name})", exception_code=code)
            return response

    def _drop(self, reason: str) -> None:
        self.last_error = reason
        if self._client is not None:
            self._client.close()
            self._client = None
        self._delay = self.backoff.next(self._delay) if self._delay else 0.0
        self._next_attempt = time.monotonic() + self._delay

    async def read(self, table: str, address: int, count: int, unit: int, *, retries: int = 0) -> list[int] | list[bool]:
        """Words (holding/input) or bits (coil/discrete) of one block read, checked for size."""
        method = _READ_METHODS.get(table)
        if method is None:
            raise ValueError(f"unknown table {table!r}")
        response = await self.call(method, unit, address, count=count, retries=retries)
        values = response.registers if table in ("holding", "input") else response.bits
        if len(values) < count or (table in ("holding", "input") and len(values) != count):
            self._drop(f"unit {unit}: malformed response")
            raise ModbusReadError(f"unit {unit}: {len(values)} values in answer to a read of {count}")
        return list(values[:count])

    async def write_words(self, address: int, words: Sequence[int], unit: int) -> None:
        if len(words) == 1:
            await self.call("write_register", unit, address, words[0])
        else:
            await self.call("write_registers", unit, address, list(words))

    async def modify_words(self, address: int, count: int, unit: int,
                           change: Callable[[list[int]], list[int]]) -> None:
        """Read-modify-write of holding registers, both under one hold of the lock."""
        async with self.lock:
            response = await self._call("read_holding_registers", unit, address, count=count)
            words = change(list(response.registers))
            if len(words) == 1:
                await self._call("write_register", unit, address, words[0])
            else:
                await self._call("write_registers", unit, address, words)

    async def write_bit(self, address: int, value: bool, unit: int) -> None:
        await self.call("write_coil", unit, address, value)
