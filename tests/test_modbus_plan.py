"""Block-read coalescing: adjacent/nearby registers share a request, within protocol limits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.plan import MAX_BITS, MAX_REGISTERS, plan_reads
from hub.registry.model import Register


def reg(metric: str, address: int, table: str = "holding", type: str = "uint16", **kw: object) -> Register:
    return Register(metric=metric, address=address, table=table, type=type, **kw)  # type: ignore[arg-type]


def test_demo_elevator_map_is_one_read() -> None:
    registers = [reg(f"b{i}", 0, bit=i) for i in range(6)] + [
        reg("direction", 1), reg("floor", 2, type="int16"), reg("door", 3), reg("mode", 4),
        reg("speed", 5), reg("load", 6), reg("trips", 8, type="uint32"), reg("hours", 10, type="float32")]
    requests = plan_reads(registers)
    assert len(requests) == 1
    (request,) = requests
    assert (request.table, request.address, request.count) == ("holding", 0, 12)
    assert request.has_gaps  # address 7 is read through
    offsets = {s.register.metric: s.offset for s in request.slots}
    assert offsets["trips"] == 8 and offsets["hours"] == 10 and offsets["b5"] == 0
    strict = plan_reads(registers, max_gap=0)
    assert [(r.address, r.count) for r in strict] == [(0, 7), (8, 4)]
    assert not any(r.has_gaps for r in strict)


def test_tables_are_never_mixed_and_far_registers_split() -> None:
    registers = [reg("a", 0), reg("b", 1, table="input"), reg("c", 100), reg("d", 0, table="coil", type="bool"),
                 reg("e", 5, table="coil", type="bool"), reg("f", 0, table="discrete", type="bool")]
    requests = plan_reads(registers)
    assert [(r.table, r.address, r.count) for r in requests] == [
        ("coil", 0, 6), ("discrete", 0, 1), ("holding", 0, 1), ("holding", 100, 1), ("input", 1, 1)]


def test_register_limit_125_and_bit_limit_2000() -> None:
    words = [reg(f"r{i}", i * 2, type="uint32") for i in range(100)]  # 200 contiguous words
    requests = plan_reads(words)
    assert [r.count for r in requests] == [124, 76]  # a 2-word value is never split across reads
    bits = [reg(f"c{i}", i, table="coil", type="bool") for i in range(4500)]
    assert [r.count for r in plan_reads(bits)] == [2000, 2000, 500]


@settings(deadline=None)  # a loaded shared machine must not fail a pure test
@given(st.lists(st.tuples(st.integers(0, 3000), st.sampled_from(["uint16", "uint32", "float64"]),
                          st.sampled_from(["holding", "input", "coil"])), min_size=1, max_size=80),
       st.integers(0, 20))
def test_every_register_is_covered_once_within_limits(spec: list[tuple[int, str, str]], gap: int) -> None:
    registers = [reg(f"m{i}", address, table=table, type="bool" if table == "coil" else kind)
                 for i, (address, kind, table) in enumerate(spec)]
    requests = plan_reads(registers, max_gap=gap)
    seen = []
    for request in requests:
        assert request.count <= (MAX_BITS if request.table == "coil" else MAX_REGISTERS)
        for slot in request.slots:
            assert slot.register.table == request.table
            assert request.address + slot.offset == slot.register.address
            assert slot.offset + slot.register.count <= request.count
            seen.append(slot.register.metric)
    assert sorted(seen) == sorted(r.metric for r in registers)
