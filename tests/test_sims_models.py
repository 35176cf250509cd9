"""Device models and the fleet engine without sockets: behaviour, determinism, encoding."""

from __future__ import annotations

import random

import orjson
import pytest
from pymodbus.client.mixin import ModbusClientMixin

from hub.registry import load_registry
from hub.registry.model import Register
from simulators.devices import DeviceSpec, Elevator, Gate
from simulators.devices.parking import fee_for
from simulators.engine import Fleet
from simulators.faults import FaultPlan
from simulators.fleet import scaled_registry
from simulators.registers import decode_words, encode, encode_value
from simulators.scenarios import SCENARIOS, plan

START = 1_790_000_000_000


@pytest.fixture(scope="module")
def demo(demo_registry_path):
    return load_registry(demo_registry_path)


def run(registry, *, seed=1, scenario=None, ticks=200):
    fleet = Fleet.from_registry(registry, seed=seed, start_ms=START)
    if scenario:
        fleet.schedule_steps(plan(fleet, scenario))
    out = []
    for _ in range(ticks):
        out.extend(fleet.tick())
    return fleet, out


def events(messages, device=None):
    return [(m.device, orjson.loads(m.payload)) for m in messages
            if m.channel == "event" and (device is None or m.device == device)]


def test_same_seed_same_messages_other_seed_differs(demo):
    _, a = run(demo, seed=7, scenario="fire")
    _, b = run(demo, seed=7, scenario="fire")
    _, c = run(demo, seed=8, scenario="fire")
    assert [(m.topic, m.payload) for m in a] == [(m.topic, m.payload) for m in b]
    assert [(m.topic, m.payload) for m in a] != [(m.topic, m.payload) for m in c]
    assert len(a) > 500


def test_telemetry_has_exactly_the_models_metrics_with_their_types(demo):
    fleet, msgs = run(demo, ticks=20)
    seen = set()
    for m in msgs:
        if m.channel != "telemetry":
            continue
        ref = demo.devices[m.key]
        body = orjson.loads(m.payload)
        metrics = {x.name: x for x in ref.model.metrics}
        assert set(body) - {"ts", "seq"} == set(metrics), m.key
        for name, value in body.items():
            if name in ("ts", "seq"):
                continue
            kind = metrics[name].type
            if kind == "bool":
                assert isinstance(value, bool), (m.key, name)
            elif kind in ("int", "enum"):
                assert isinstance(value, int) and not isinstance(value, bool), (m.key, name)
                if kind == "enum":
                    assert value in metrics[name].values, (m.key, name, value)
            else:
                assert isinstance(value, int | float) and not isinstance(value, bool), (m.key, name)
        seen.add(ref.model.kind)
    assert seen == {"elevator", "gate", "fire_panel", "fire_detector", "fire_module", "parking_lane", "parking_meter"}


def test_entrapment_between_floors_raises_11_after_20_s_and_clears_after_rescue(demo):
    _, msgs = run(demo, scenario="entrapment", ticks=700)
    lift = events(msgs, "el-b1-1")
    codes = [(e["code"], (e.get("data") or {}).get("active")) for _, e in lift]
    assert codes.index(("01", True)) < codes.index(("90", None)) < codes.index(("11", True)) < codes.index(("04", True))
    trapped = next(e for _, e in lift if e["code"] == "11")
    raised = next(e for _, e in lift if e["code"] == "01")
    assert trapped["data"]["between_floors"] is True and trapped["data"]["passengers"] >= 2
    assert trapped["ts"] - raised["ts"] >= 19_000
    assert codes.index(("11", True)) < codes.index(("43", None)) < codes.index(("11", False))
    tele = [orjson.loads(m.payload) for m in msgs if m.channel == "telemetry" and m.device == "el-b1-1"]
    stuck = [t for t in tele if raised["ts"] < t["ts"] < trapped["ts"] + 100_000]
    assert stuck and all(not t["running"] and not t["door_zone"] and t["door_state"] == 0 and t["passenger"] for t in stuck)


def test_fire_one_detector_is_prealarm_two_in_a_zone_confirm(demo):
    _, msgs = run(demo, scenario="fire", ticks=120)
    panel = [e for _, e in events(msgs, "fire-panel-1")]
    alarms = [e for e in panel if e["code"] == "fire_alarm"]
    confirmed = [e for e in panel if e["code"] == "fire_confirmed"]
    assert [a["data"]["point"] for a in alarms] == ["smoke-b1-f1", "smoke-b1-f2"]
    assert len(confirmed) == 1 and confirmed[0]["data"] == {"zone": "b1-z1", "detectors": 2}
    assert alarms[0]["ts"] + 50_000 < confirmed[0]["ts"]
    tele = [orjson.loads(m.payload) for m in msgs if m.channel == "telemetry" and m.device == "fire-panel-1"]
    between = [t for t in tele if alarms[0]["ts"] < t["ts"] < alarms[1]["ts"]]
    assert between and all(t["fire_alarm"] and t["detectors_in_alarm"] == 1 for t in between)
    assert tele[-1]["detectors_in_alarm"] == 2 and tele[-1]["started"] is True
    smoke = [orjson.loads(m.payload)["smoke"] for m in msgs if m.channel == "telemetry" and m.device == "smoke-b1-f1"]
    assert smoke[-1] > 0.15 > smoke[0]
    assert {d for d, e in events(msgs) if e["code"] == "44"} == {"el-b1-1", "el-b1-2"}


@pytest.mark.parametrize(("scenario", "device", "code"), [
    ("gate_forced_night", "door-b2-lobby", "forced_open"),
    ("barrier_stuck", "lane-in", "barrier_fault"),
    ("sprinkler_pressure_drop", "sprinkler-b1", "supervisory"),
])
def test_scenarios_produce_their_events(demo, scenario, device, code):
    _, quiet = run(demo, ticks=60)
    assert code not in [e["code"] for _, e in events(quiet, device)]
    _, msgs = run(demo, scenario=scenario, ticks=60)
    assert code in [e["code"] for _, e in events(msgs, device)]


def test_gate_forced_at_night_then_held_open(demo):
    _, msgs = run(demo, scenario="gate_forced_night", ticks=60)
    gate = [e for _, e in events(msgs, "door-b2-lobby") if e["code"] in ("forced_open", "held_open")]
    assert [e["code"] for e in gate] == ["forced_open", "held_open"]
    assert gate[0]["data"]["night"] is True


def test_power_loss_drops_devices_and_restores(demo):
    _, msgs = run(demo, scenario="power_loss", ticks=140)
    power = [(m.device, m.payload) for m in msgs if m.channel == "power"]
    off = {d for d, p in power if p == b"0"}
    assert {"el-b1-1", "el-b3-1", "gate-north", "smoke-b1-f1"} <= off and "lane-in" not in off
    assert {d for d, p in power if p == b"1"} == off
    assert any(e["code"] == "main_power_fault" for _, e in events(msgs, "fire-panel-1"))


def test_sprinkler_pressure_falls_below_threshold(demo):
    _, msgs = run(demo, scenario="sprinkler_pressure_drop", ticks=60)
    pressures = [orjson.loads(m.payload)["pressure"] for m in msgs if m.channel == "telemetry" and m.device == "sprinkler-b1"]
    assert pressures[0] > 0.4 and pressures[-1] < 0.3
    panel = [e for _, e in events(msgs, "fire-panel-1") if e["code"] == "supervisory"]
    assert panel and panel[0]["data"]["point"] == "sprinkler-b1"


def test_parking_free_spaces_follow_entries_and_exits(demo):
    fleet, msgs = run(demo, ticks=600)
    moves = [e for _, e in events(msgs) if e["code"] in ("entry", "exit")]
    assert {e["code"] for e in moves} == {"entry", "exit"}
    for e in moves:
        assert e["data"]["colour"] in {"blue", "green", "yellow", "white", "black", "unknown"}
        assert len(e["data"]["plate"]) in (7, 8)
    lot = fleet.devices[("demo", "lane-in")].lot
    meter = fleet.devices[("demo", "meter-garage")].values()
    assert meter["free_spaces"] == lot.capacity - len(lot.parked)
    assert meter["fees_today"] == pytest.approx(sum(e["data"]["fee"] for e in moves if e["code"] == "exit"))
    assert fee_for(20) == 0 and fee_for(95) == 10 and fee_for(5000) == 50


def spec(kind, **kw):
    base = dict(site="s", device="d1", kind=kind, model="m", protocol="mqtt", metrics=(), floors=10, basement_floors=1)
    base.update(kw)
    return DeviceSpec(**base)


def test_gate_visitor_pass_window_uses_gate_set_and_revocation():
    gate = Gate(spec=spec("gate", commands=("add_visitor_pass", "revoke_visitor_pass", "open_once", "lock")), rng=random.Random(1))
    assert gate.command("c1", "add_visitor_pass", {"code": "V1", "uses": 1, "valid_s": 60, "visitor_arrives": False}).status == "done"
    gate.command("c2", "add_visitor_pass", {"code": "V2", "gates": ["other-gate"], "visitor_arrives": False})
    gate.command("c3", "add_visitor_pass", {"code": "V3", "valid_s": 10, "visitor_arrives": False})
    assert gate.present_pass("V1") is True
    assert gate.present_pass("V1") is False            # used up
    assert gate.present_pass("V2") is False            # wrong gate
    gate.step(11.0)
    assert gate.present_pass("V3") is False            # expired
    gate.command("c4", "add_visitor_pass", {"code": "V4", "visitor_arrives": False})
    gate.command("c5", "revoke_visitor_pass", {"code": "V4"})
    assert gate.present_pass("V4") is False
    evs, _ = gate.drain()
    reasons = [e.data["reason"] for e in evs if e.code == "denied"]
    assert reasons == ["pass_used_up", "wrong_gate", "expired", "revoked"]
    assert [e.data["method"] for e in evs if e.code == "granted"] == ["visitor_pass"]
    assert gate.command("c6", "lock", {}).status == "done"
    assert gate.command("c7", "open_once", {}).status == "rejected"
    assert gate.command("c8", "self_destruct", {}).status == "rejected"


def test_elevator_return_to_main_floor_is_accepted_then_done():
    lift = Elevator(spec=spec("elevator", commands=("return_to_main_floor", "out_of_service", "back_to_service")), rng=random.Random(3))
    lift.position = float(lift.levels.index(7))
    reply = lift.command("c1", "return_to_main_floor", {})
    assert reply.status == "accepted"
    done = []
    for _ in range(60):
        lift.step(1.0)
        done.extend(lift.drain()[1])
        if done:
            break
    assert done and done[0].status == "done" and lift.floor == 1 and lift.door_state == 1


@pytest.mark.parametrize("rtype", ["int16", "uint16", "int32", "uint32", "float32", "float64", "int64"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_register_encoding_round_trips(rtype, byte_order, word_order):
    reg = Register(metric="x", address=0, type=rtype, byte_order=byte_order, word_order=word_order, scale=0.1, offset=-40.0)
    value = -12.5 if not rtype.startswith("u") else 1234.5
    words = encode_value(reg, value)
    assert len(words) == reg.count
    assert decode_words(reg, words) == pytest.approx(value, abs=1e-3)


def test_register_encoding_matches_a_hand_computed_map():
    regs = [
        Register(metric="a", address=0, type="uint16", bit=0), Register(metric="b", address=0, type="uint16", bit=2),
        Register(metric="n", address=1, type="int16"), Register(metric="s", address=2, type="int16", scale=0.01),
        Register(metric="t", address=3, type="uint32", word_order="little"),
        Register(metric="f", address=5, type="float32"), Register(metric="d", table="discrete", address=3, type="bool"),
    ]
    image = encode(regs, {"a": True, "b": True, "n": -2, "s": 1.75, "t": 0x12345678, "f": 1.5, "d": True})
    assert image.words["holding"] == {0: 0b101, 1: 0xFFFE, 2: 175, 3: 0x5678, 4: 0x1234, 5: 0x3FC0, 6: 0}
    assert image.bits["discrete"] == {3: True}
    words = [image.words["holding"][5], image.words["holding"][6]]
    assert ModbusClientMixin.convert_from_registers(words, ModbusClientMixin.DATATYPE.FLOAT32) == 1.5


def test_scaled_registry_copies_devices_with_suffixes_and_gateway_units(demo):
    big = scaled_registry(demo, 300)
    assert len(big.devices) == 300 * len(demo.devices)
    lift = big.devices[("demo", "el-b3-1-c300")].device
    assert lift.tags["sim_copy"] == "300" and lift.modbus.unit_id == 1 + 299 % 247 and lift.modbus.port == 15120
    fleet = Fleet.from_registry(big, seed=1, start_ms=START)
    panel = fleet.devices[("demo", "fire-panel-1-c007")]
    assert sorted(p.spec.device for p in panel.points) == sorted(
        f"{d}-c007" for d in ("smoke-b1-f1", "smoke-b1-f2", "smoke-b2-f1", "smoke-b3-f1", "sprinkler-b1"))
    steps = plan(fleet, "entrapment")
    assert len(steps) == 300


def test_fault_plan_parse_and_unknown_names():
    plan_ = FaultPlan.parse("drop=0.1,duplicate=0.2,modbus_timeout=0.5,exception_code=4")
    assert plan_.drop == 0.1 and plan_.duplicate == 0.2 and plan_.modbus_timeout == 0.5 and plan_.exception_code == 4
    with pytest.raises(ValueError, match="unknown fault 'dorp'"):
        FaultPlan.parse("dorp=0.1")
    assert set(SCENARIOS) == {"entrapment", "fire", "power_loss", "gate_forced_night", "barrier_stuck", "sprinkler_pressure_drop"}
