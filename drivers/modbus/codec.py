"""Register words ⇄ metric values, as pure functions (no I/O), so every rule is testable alone.

The number types go through pymodbus's own `convert_from_registers` / `convert_to_registers`
(which know word order); byte order inside each 16-bit word is swapped here first, the way
Home Assistant's modbus integration handles "byte swap". Scale and offset apply to the raw
number: ``value = raw * scale + offset``. A `bit` reads one bit of the raw (unsigned) value.
A raw value equal to `nan_value`, or a float that is NaN or infinite, means "no data".
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from pymodbus.client.mixin import ModbusClientMixin

from hub.registry.model import Register

DATATYPE = ModbusClientMixin.DATATYPE
_convert_from = ModbusClientMixin.convert_from_registers
_convert_to = ModbusClientMixin.convert_to_registers

_DATATYPES: Final = {
    "int16": DATATYPE.INT16,
    "uint16": DATATYPE.UINT16,
    "int32": DATATYPE.INT32,
    "uint32": DATATYPE.UINT32,
    "int64": DATATYPE.INT64,
    "uint64": DATATYPE.UINT64,
    "float32": DATATYPE.FLOAT32,
    "float64": DATATYPE.FLOAT64,
}
_WIDTH: Final = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}
_SIGNED: Final = frozenset({"int16", "int32", "int64"})
BIT_TABLES: Final = frozenset({"coil", "discrete"})


class EncodeError(ValueError):
    """A value that cannot be written to a register (out of range, wrong type, read-only form)."""


@dataclass(frozen=True, slots=True)
class NoData:
    """The device answered, but says it has no value (its `nan_value`, or a NaN float)."""

    raw: float


NO_DATA_NAN: Final = NoData(math.nan)

Value = float | bool | NoData


def is_bool(register: Register) -> bool:
    """True when the register yields a flag rather than a number."""
    return register.table in BIT_TABLES or register.type == "bool" or register.bit is not None


def swap_bytes(words: Sequence[int]) -> list[int]:
    """Swap the two bytes of every 16-bit word (little byte order ⇄ big)."""
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


def decode_raw(register: Register, words: Sequence[int]) -> int | float:
    """The raw number in `words` (exactly `register.count` words), before scale and offset."""
    if len(words) != register.count:
        raise ValueError(f"{register.metric}: expected {register.count} words, got {len(words)}")
    if register.type == "bool":
        return words[0]
    if register.byte_order == "little":
        words = swap_bytes(words)
    value = _convert_from(list(words), _DATATYPES[register.type], register.word_order)
    assert isinstance(value, int | float)
    return value


def decode_registers(register: Register, words: Sequence[int]) -> Value:
    """Words of a holding/input register → a flag, a scaled number, or `NoData`."""
    raw = decode_raw(register, words)
    if register.nan_value is not None and raw == register.nan_value:
        return NoData(raw)
    if isinstance(raw, float) and not math.isfinite(raw):
        return NoData(raw)
    if register.bit is not None:
        if isinstance(raw, float):
            raise ValueError(f"{register.metric}: `bit` needs an integer type, not {register.type}")
        width = _WIDTH.get(register.type, 16)
        return bool(((raw & ((1 << width) - 1)) >> register.bit) & 1)
    if register.type == "bool":
        return raw != 0
    if register.scale == 1.0 and register.offset == 0.0:
        return raw  # exact integers (stored as float8: 64-bit values beyond 2**53 lose precision)
    return raw * register.scale + register.offset


Decoder = Callable[[Sequence[int]], Value]


def compile_decoder(register: Register) -> Decoder:
    """`decode_registers` for one register, with a fast path for plain 16-bit numbers (the
    common case, and the poller's hot loop); anything else takes the general path."""
    if register.type not in ("int16", "uint16") or register.bit is not None or register.nan_value is not None:
        return functools.partial(decode_registers, register)
    swap = register.byte_order == "little"
    signed = register.type == "int16"
    scale, offset = register.scale, register.offset
    plain = scale == 1.0 and offset == 0.0

    def decode(words: Sequence[int]) -> Value:
        (word,) = words
        if swap:
            word = ((word & 0xFF) << 8) | (word >> 8)
        if signed and word & 0x8000:
            word -= 0x10000
        return word if plain else word * scale + offset

    return decode


def decode_bit(register: Register, bit: bool) -> Value:
    """A coil or discrete input → a flag (`nan_value` 0/1 can still mean 'no data')."""
    if register.nan_value is not None and float(bit) == register.nan_value:
        return NoData(float(bit))
    return bool(bit)


def encode_registers(register: Register, value: float | bool) -> list[int]:
    """A metric value → the words to write; the inverse of `decode_registers` (not for `bit`)."""
    if register.table in BIT_TABLES:
        raise EncodeError(f"{register.metric}: a {register.table} is written as a bit, not words")
    if register.bit is not None:
        raise EncodeError(f"{register.metric}: a bit field is written with `encode_bit_field`")
    if register.type == "bool":
        return [1 if value else 0]
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise EncodeError(f"{register.metric}: {value!r} is not a finite number")
    raw: int | float
    if isinstance(value, int) and register.scale == 1.0 and register.offset == 0.0:
        raw = value  # exact, even beyond 2**53
    else:
        raw = (value - register.offset) / register.scale
    kind = register.type
    if kind in _WIDTH:
        rounded = round(raw)
        if not math.isclose(rounded, raw, rel_tol=1e-9, abs_tol=1e-6):
            raise EncodeError(f"{register.metric}: {value!r} is not a multiple of scale {register.scale}")
        width = _WIDTH[kind]
        low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if kind in _SIGNED else (0, (1 << width) - 1)
        if not low <= rounded <= high:
            raise EncodeError(f"{register.metric}: {value!r} is outside {kind} ({low}..{high} raw)")
        raw = int(rounded)
    else:
        raw = float(raw)
        if kind == "float32" and abs(raw) > 3.4028234663852886e38:
            raise EncodeError(f"{register.metric}: {value!r} does not fit a float32")
    words = _convert_to(raw, _DATATYPES[kind], register.word_order)
    if register.byte_order == "little":
        words = swap_bytes(words)
    return words


def encode_bit_field(register: Register, current: Sequence[int], value: bool) -> list[int]:
    """Set or clear `register.bit` in the current words (read-modify-write of a bit field)."""
    if register.bit is None:
        raise EncodeError(f"{register.metric}: not a bit field")
    if register.type not in _WIDTH and register.type != "bool":
        raise EncodeError(f"{register.metric}: `bit` needs an integer type, not {register.type}")
    width = _WIDTH.get(register.type, 16)
    unsigned = Register(**{**register.model_dump(), "type": f"uint{width}" if width > 16 else "uint16",
                           "bit": None, "scale": 1.0, "offset": 0.0, "nan_value": None})
    raw = int(decode_raw(unsigned, current))
    mask = 1 << register.bit
    raw = raw | mask if value else raw & ~mask
    return encode_registers(unsigned, raw)


GOOD, UNCERTAIN, BAD = 0, 1, 2


def reading_fields(value: Value, labels: dict[int, str] | None) -> tuple[float | None, str | None, int]:
    """A decoded value → the (value, text_value, quality) columns of a reading.

    Flags are stored as 1.0/0.0; enums keep the code as value and the label as text (an unknown
    code is kept, with quality uncertain); `NoData` is stored as NULL with quality uncertain —
    the device answered, so it is not a failed read (those are NULL with quality bad).
    """
    if isinstance(value, NoData):
        return None, None, UNCERTAIN
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None, GOOD
    number = float(value)
    if labels is not None:
        code = int(number)
        label = labels.get(code) if code == number else None
        return number, label, GOOD if label is not None else UNCERTAIN
    return number, None, GOOD
