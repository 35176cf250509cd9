"""Encode device values into a Modbus register image per the registry's register map (pure).

The hub's driver decodes `value = raw * scale + offset`; this is the inverse: `raw = (value -
offset) / scale`, packed with pymodbus's `convert_to_registers` in the register's word order,
bytes swapped inside each word for `byte_order: little`. `bit` registers set one bit of a shared
integer; coils and discrete inputs are single bits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pymodbus.client.mixin import ModbusClientMixin

from hub.registry import Register

DT = ModbusClientMixin.DATATYPE
DATATYPES = {"int16": DT.INT16, "uint16": DT.UINT16, "int32": DT.INT32, "uint32": DT.UINT32,
             "int64": DT.INT64, "uint64": DT.UINT64, "float32": DT.FLOAT32, "float64": DT.FLOAT64}
BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64, "bool": 16}
WORD_TABLES = ("holding", "input")
BIT_TABLES = ("coil", "discrete")


@dataclass
class RegisterImage:
    """Words of holding/input registers and bits of coils/discrete inputs, by address."""

    words: dict[str, dict[int, int]] = field(default_factory=lambda: {"holding": {}, "input": {}})
    bits: dict[str, dict[int, bool]] = field(default_factory=lambda: {"coil": {}, "discrete": {}})


def _swap_bytes(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


def encode_value(reg: Register, value: float) -> list[int]:
    """One metric value → its registers (count = `reg.count`)."""
    raw = (float(value) - reg.offset) / reg.scale
    if reg.type == "bool":
        words = [1 if raw else 0]
    else:
        dtype = DATATYPES[reg.type]
        if reg.type.startswith(("int", "uint")):
            bits = BITS[reg.type]
            lo, hi = (0, 2**bits - 1) if reg.type.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            number: int | float = max(lo, min(hi, round(raw)))
        else:
            number = raw
        words = ModbusClientMixin.convert_to_registers(number, dtype, word_order=reg.word_order)
    if reg.byte_order == "little":
        words = [_swap_bytes(w) for w in words]
    return words


def decode_words(reg: Register, words: list[int]) -> float:
    """Registers written by a client → the metric value (for writable registers)."""
    if reg.byte_order == "little":
        words = [_swap_bytes(w) for w in words]
    if reg.type == "bool":
        return float(bool(words[0]))
    raw = ModbusClientMixin.convert_from_registers(words, DATATYPES[reg.type], word_order=reg.word_order)
    assert isinstance(raw, int | float)
    return float(raw) * reg.scale + reg.offset


def encode(registers: Iterable[Register], values: dict[str, bool | int | float | str]) -> RegisterImage:
    image = RegisterImage()
    packed_bits: dict[tuple[str, int], tuple[Register, int]] = {}
    for reg in registers:
        if reg.metric not in values:
            continue
        value = values[reg.metric]
        if isinstance(value, str):
            continue
        if reg.table in BIT_TABLES:
            image.bits[reg.table][reg.address] = bool(value)
        elif reg.bit is not None:
            slot = (reg.table, reg.address)
            base = packed_bits.get(slot, (reg, 0))[1]
            packed_bits[slot] = (reg, base | (1 << reg.bit) if value else base)
        else:
            for i, word in enumerate(encode_value(reg, float(value))):
                image.words[reg.table][reg.address + i] = word
    for (table, address), (reg, number) in packed_bits.items():
        as_int = reg.model_copy(update={"scale": 1.0, "offset": 0.0, "bit": None})
        for i, word in enumerate(encode_value(as_int, number)):
            image.words[table][address + i] = word
    return image


def extent(registers: Iterable[Register]) -> dict[str, int]:
    """How many addresses each table needs (highest address + width)."""
    size = {"holding": 0, "input": 0, "coil": 0, "discrete": 0}
    for reg in registers:
        size[reg.table] = max(size[reg.table], reg.address + reg.count)
    return size
