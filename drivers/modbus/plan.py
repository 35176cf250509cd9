"""Coalesce a register map into few block reads — the main lever on Modbus polling cost.

Each round trip costs far more than a few extra words, so registers of one table that sit next
to each other (or within `max_gap` unused addresses) are read in one request, up to the
protocol's limits: 125 registers per read of holding/input registers, 2000 bits per read of
coils/discrete inputs. Pure: the result says what to read and where each value sits in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from hub.registry.model import Register, RegisterTable

MAX_REGISTERS: Final = 125  # Modbus spec: function codes 3 and 4
MAX_BITS: Final = 2000  # Modbus spec: function codes 1 and 2
DEFAULT_MAX_GAP: Final = 8
TABLE_ORDER: Final[dict[str, int]] = {"coil": 0, "discrete": 1, "holding": 2, "input": 3}


@dataclass(frozen=True, slots=True)
class Slot:
    """Where one register's value sits in a block: words[offset : offset + register.count]."""

    register: Register
    offset: int


@dataclass(frozen=True, slots=True)
class ReadRequest:
    table: RegisterTable
    address: int
    count: int
    slots: tuple[Slot, ...]

    @property
    def has_gaps(self) -> bool:
        """True when the block also reads addresses no register asked for."""
        covered: set[int] = set()
        for slot in self.slots:
            covered.update(range(slot.offset, slot.offset + slot.register.count))
        return len(covered) < self.count


def limit_for(table: str) -> int:
    return MAX_BITS if table in ("coil", "discrete") else MAX_REGISTERS


def plan_reads(registers: Iterable[Register], *, max_gap: int = DEFAULT_MAX_GAP,
               max_registers: int = MAX_REGISTERS, max_bits: int = MAX_BITS) -> list[ReadRequest]:
    """Block reads covering every register, ordered by table then address.

    A gap of at most `max_gap` unused addresses is read through rather than split; a device
    that rejects such reads (exception 2, illegal address) is re-planned with ``max_gap=0``.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    by_table: dict[str, list[Register]] = {}
    for register in registers:
        by_table.setdefault(register.table, []).append(register)
    requests: list[ReadRequest] = []
    for table in sorted(by_table, key=TABLE_ORDER.__getitem__):
        limit = max_bits if table in ("coil", "discrete") else max_registers
        members = sorted(by_table[table], key=lambda r: (r.address, r.count))
        start = end = -1
        block: list[Register] = []
        for register in members:
            reg_end = register.address + register.count
            if block and register.address - end <= max_gap and max(end, reg_end) - start <= limit:
                block.append(register)
                end = max(end, reg_end)
                continue
            if block:
                requests.append(_request(table, start, end, block))
            block, start, end = [register], register.address, reg_end
        if block:
            requests.append(_request(table, start, end, block))
    return requests


def _request(table: str, start: int, end: int, block: list[Register]) -> ReadRequest:
    slots = tuple(Slot(r, r.address - start) for r in block)
    return ReadRequest(table, start, end - start, slots)  # type: ignore[arg-type]
