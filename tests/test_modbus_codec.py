"""Pure decoding/encoding rules of the Modbus driver, checked against struct-built byte layouts."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.codec import (
    BAD,
    GOOD,
    UNCERTAIN,
    EncodeError,
    NoData,
    compile_decoder,
    decode_bit,
    decode_registers,
    encode_bit_field,
    encode_registers,
    reading_fields,
)
from drivers.modbus.events import emits_events, state_event
from hub.registry.model import Register

ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]
FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
           "float32": "f", "float64": "d"}
RANGES = {"int16": (-(2**15), 2**15 - 1), "uint16": (0, 2**16 - 1), "int32": (-(2**31), 2**31 - 1),
          "uint32": (0, 2**32 - 1), "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}


def layout(kind: str, value: float, byte_order: str, word_order: str) -> list[int]:
    """Words as a device with these orders would hold `value`, built with struct (not the codec)."""
    data = struct.pack(">" + FORMATS[kind], value)  # big-endian: word 0 is most significant
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def reg(**kw: object) -> Register:
    return Register(**{"metric": "m", "address": 0, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("byte_order,word_order", ORDERS)
def test_known_layouts_decode_in_every_order(byte_order: str, word_order: str) -> None:
    cases = [("int16", -1234), ("uint16", 65000), ("int32", -123456789), ("uint32", 3_000_000_000),
             ("float32", 12.5), ("float64", -0.1), ("int64", -(2**40) - 7), ("uint64", 2**63 + 5)]
    for kind, value in cases:
        register = reg(type=kind, byte_order=byte_order, word_order=word_order)
        words = layout(kind, value, byte_order, word_order)
        assert decode_registers(register, words) == value, (kind, byte_order, word_order)


def test_word_and_byte_order_really_differ() -> None:
    # 0x12345678 as uint32: big/big ABCD, word-swapped CDAB, byte-swapped BADC, both DCBA.
    assert layout("uint32", 0x12345678, "big", "big") == [0x1234, 0x5678]
    assert decode_registers(reg(type="uint32"), [0x1234, 0x5678]) == 0x12345678
    assert decode_registers(reg(type="uint32", word_order="little"), [0x5678, 0x1234]) == 0x12345678
    assert decode_registers(reg(type="uint32", byte_order="little"), [0x3412, 0x7856]) == 0x12345678
    assert decode_registers(reg(type="uint32", byte_order="little", word_order="little"), [0x7856, 0x3412]) == 0x12345678


def test_scale_offset_bit_bool_nan() -> None:
    assert decode_registers(reg(type="int16", scale=0.1, offset=-40), [0xFFF6]) == pytest.approx(-41.0)
    assert decode_registers(reg(type="uint16", scale=0.01), [1234]) == pytest.approx(12.34)
    assert decode_registers(reg(type="uint16", bit=0), [0b101]) is True
    assert decode_registers(reg(type="uint16", bit=1), [0b101]) is False
    assert decode_registers(reg(type="int16", bit=15), [0x8000]) is True  # sign bit of a signed word
    assert decode_registers(reg(type="uint32", bit=20), [0x0010, 0x0000]) is True
    assert decode_registers(reg(type="bool"), [7]) is True
    assert decode_registers(reg(type="bool"), [0]) is False
    assert decode_registers(reg(type="uint16", nan_value=65535, scale=10), [65535]) == NoData(65535)
    assert isinstance(decode_registers(reg(type="float32"), layout("float32", math.nan, "big", "big")), NoData)
    assert decode_bit(reg(table="coil", type="bool"), True) is True
    with pytest.raises(ValueError):
        decode_registers(reg(type="uint32"), [1])  # wrong word count


def test_reading_fields_never_turn_missing_into_zero() -> None:
    assert reading_fields(NoData(65535), None) == (None, None, UNCERTAIN)
    assert reading_fields(True, None) == (1.0, None, GOOD)
    assert reading_fields(False, None) == (0.0, None, GOOD)
    labels = {0: "none", 1: "up", 2: "down"}
    assert reading_fields(2, labels) == (2.0, "down", GOOD)
    assert reading_fields(9, labels) == (9.0, None, UNCERTAIN)  # unknown enum code: kept, flagged
    assert BAD == 2


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(st.data())
def test_integer_round_trip_in_every_order(data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(RANGES)))
    byte_order, word_order = data.draw(st.sampled_from(ORDERS))
    low, high = RANGES[kind]
    raw = data.draw(st.integers(low, high))
    register = reg(type=kind, byte_order=byte_order, word_order=word_order)
    words = encode_registers(register, raw)
    assert words == layout(kind, raw, byte_order, word_order)
    assert decode_registers(register, words) == raw


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(st.data())
def test_float_round_trip_in_every_order(data: st.DataObject) -> None:
    byte_order, word_order = data.draw(st.sampled_from(ORDERS))
    width = data.draw(st.sampled_from([32, 64]))
    value = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=width))
    register = reg(type=f"float{width}", byte_order=byte_order, word_order=word_order)
    assert decode_registers(register, encode_registers(register, value)) == value


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(raw=st.integers(-(2**15), 2**15 - 1), order=st.sampled_from(ORDERS),
       scale=st.sampled_from([0.1, 0.01, 2.0, 1.0]), offset=st.sampled_from([0.0, -40.0, 273.15]))
def test_scaled_round_trip(raw: int, order: tuple[str, str], scale: float, offset: float) -> None:
    register = reg(type="int16", byte_order=order[0], word_order=order[1], scale=scale, offset=offset)
    value = raw * scale + offset
    assert decode_registers(register, encode_registers(register, value)) == pytest.approx(value)


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(word=st.integers(0, 0xFFFF), kind=st.sampled_from(["int16", "uint16", "uint32", "float32", "bool"]),
       byte_order=st.sampled_from(["big", "little"]), scale=st.sampled_from([1.0, 0.1, 3.0]),
       offset=st.sampled_from([0.0, -40.0]), bit=st.sampled_from([None, 0, 15]), nan=st.sampled_from([None, 65535]))
def test_compiled_decoder_matches_the_general_one(word: int, kind: str, byte_order: str, scale: float,
                                                  offset: float, bit: int | None, nan: int | None) -> None:
    if bit is not None and kind == "float32":
        bit = None
    register = reg(type=kind, byte_order=byte_order, scale=scale, offset=offset, bit=bit, nan_value=nan)
    words = [word] * register.count
    fast, general = compile_decoder(register)(words), decode_registers(register, words)
    if fast != general:  # only NaN may differ from itself: a float NaN, or "no data" carrying a NaN raw
        raw_fast, raw_general = getattr(fast, "raw", fast), getattr(general, "raw", general)
        assert type(fast) is type(general)
        assert isinstance(raw_fast, float) and math.isnan(raw_fast) and math.isnan(raw_general)


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(bit=st.integers(0, 15), start=st.integers(0, 0xFFFF), flag=st.booleans())
def test_bit_field_read_modify_write(bit: int, start: int, flag: bool) -> None:
    register = reg(type="uint16", bit=bit)
    words = encode_bit_field(register, [start], flag)
    assert decode_registers(register, words) is flag
    others = ~(1 << bit) & 0xFFFF
    assert words[0] & others == start & others  # the other bits are untouched


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(EncodeError, match="outside"):
        encode_registers(reg(type="uint16"), 70000)
    with pytest.raises(EncodeError, match="outside"):
        encode_registers(reg(type="int16", scale=0.1), 5000)
    with pytest.raises(EncodeError, match="multiple"):
        encode_registers(reg(type="uint16", scale=0.5), 1.3)
    with pytest.raises(EncodeError, match="finite"):
        encode_registers(reg(type="float32"), math.inf)
    with pytest.raises(EncodeError):
        encode_registers(reg(table="coil", type="bool"), 1)


def test_state_events() -> None:
    flag = reg(type="uint16", bit=3, metric="door_fault")
    assert emits_events(flag)
    assert state_event(flag, None, None, False) is None  # first read, inactive: baseline only
    first = state_event(flag, None, None, True)
    assert first is not None and first.code == "door_fault.on"
    change = state_event(flag, None, True, False)
    assert change is not None and change.code == "door_fault.off" and change.data["previous"] is True
    assert state_event(flag, None, True, True) is None
    assert state_event(flag, None, True, NoData(1)) is None  # no data is not a transition
    assert not emits_events(reg(type="uint16", metric="floor"))
    assert state_event(reg(type="uint16", metric="floor"), None, 1.0, 2.0) is None
    quiet = reg(type="bool", metric="running", events=False)
    assert not emits_events(quiet) and state_event(quiet, None, False, True) is None
    faults = reg(type="uint16", metric="fault_code", events={0: "40", 1: "01", 11: "11"})
    assert state_event(faults, None, None, 0.0) is None  # normal at start: nothing to report
    trapped = state_event(faults, None, 0.0, 11.0)
    assert trapped is not None and trapped.code == "11" and trapped.data["value"] == 11
    back = state_event(faults, None, 11.0, 0.0)
    assert back is not None and back.code == "40"
    assert state_event(faults, None, 0.0, 5.0) is None  # unlisted value
    mode = reg(type="uint16", metric="service_mode", events=True)
    event = state_event(mode, {1: "normal", 2: "inspection"}, 1.0, 2.0)
    assert event is not None and event.code == "service_mode.inspection"
