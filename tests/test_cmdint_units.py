"""Pure parts of the integration: `command_writes` in the registry (errors by file:line), the
plan of register writes for a command, and how gate events and pass pushes are read and built."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.pass_sync import ADD, REVOKE, gate_decision, push_params
from drivers.modbus.commands import NotMapped, PlannedWrite, plan_writes
from hub.errors import ConfigError
from hub.registry import load_registry

LIFT = """models:
  - id: lift
    kind: elevator
    protocol: modbus
    metrics:
      - {name: mode, type: enum, values: {0: stopped, 1: normal}}
      - {name: floor, type: int}
      - {name: call, type: int}
    commands: [out_of_service, back_to_service, return_to_main_floor]
    modbus:
      registers:
        - {metric: mode, address: 0, writable: true}
        - {metric: floor, address: 1}
        - {metric: call, address: 2, writable: true}
      command_writes:
"""


def _load(tmp_path: Path, writes: str):
    path = tmp_path / "site.yaml"
    path.write_text(LIFT + writes, encoding="utf-8")
    return path, load_registry(path)


def test_command_writes_load_and_plan_with_labels_numbers_and_arguments(tmp_path: Path) -> None:
    _, reg = _load(tmp_path, """        out_of_service: [{metric: mode, value: stopped}]
        back_to_service: [{metric: mode, value: 1}]
        return_to_main_floor: [{metric: mode, value: normal}, {metric: call, arg: floor}]
""")
    model = reg.models["lift"]
    assert plan_writes(model, "out_of_service", {}) == [PlannedWrite("mode", "stopped")]
    assert plan_writes(model, "back_to_service", {}) == [PlannedWrite("mode", 1.0)]
    assert plan_writes(model, "return_to_main_floor", {"floor": 3}) == [PlannedWrite("mode", "normal"), PlannedWrite("call", 3)]
    with pytest.raises(NotMapped, match="needs argument 'floor'"):
        plan_writes(model, "return_to_main_floor", {})


def test_model_without_command_writes_still_loads_and_maps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(LIFT.replace("      command_writes:\n", ""), encoding="utf-8")
    model = load_registry(path).models["lift"]
    with pytest.raises(NotMapped, match="maps no Modbus writes for command 'back_to_service'"):
        plan_writes(model, "back_to_service", {})


@pytest.mark.parametrize(("writes", "line", "message"), [
    ("        reboot: [{metric: mode, value: 1}]\n", 16, "command_writes.reboot: 'reboot' is not one of the model's commands"),
    ("        back_to_service: [{metric: floor, value: 1}]\n", 16,
     "command_writes.back_to_service[0].metric: register of 'floor' is not writable"),
    ("        back_to_service: [{metric: speed, value: 1}]\n", 16,
     "command_writes.back_to_service[0].metric: no register for metric 'speed'"),
    ("        back_to_service: [{metric: mode, value: fast}]\n", 16,
     "command_writes.back_to_service[0].value: 'fast' is not a label of 'mode'"),
    ("        back_to_service: [{metric: mode, value: 7}]\n", 16,
     "command_writes.back_to_service[0].value: 7.0 is not a code of 'mode'"),
    ("        back_to_service: []\n", 16, "command_writes.back_to_service: a command needs at least one register write"),
])
def test_bad_command_writes_are_named_by_file_line_and_field(tmp_path: Path, writes: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, writes)
    assert f"site.yaml:{line}: models[0].modbus.{message}" in str(err.value)


def test_value_and_arg_together_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "        back_to_service: [{metric: mode, value: 1, arg: mode}]\n")
    assert "give exactly one of `value` or `arg`" in str(err.value) and "site.yaml:16" in str(err.value)


def test_gate_decisions_about_hub_passes_only() -> None:
    assert gate_decision("granted", {"method": "visitor_pass", "pass_id": 7, "uses_left": 1}) == (7, True, "ok")
    assert gate_decision("denied", {"method": "visitor_pass", "pass_id": 7, "reason": "revoked"}) == (7, False, "revoked")
    assert gate_decision("granted", {"method": "card", "pass_id": 7}) is None
    assert gate_decision("granted", {"method": "visitor_pass", "credential": "abc"}) is None   # not a hub pass
    for bad in (True, "7", 0, -1, 2**63, 1.5):
        assert gate_decision("granted", {"method": "visitor_pass", "pass_id": bad}) is None
    assert gate_decision("held_open", {"method": "visitor_pass", "pass_id": 7}) is None
    assert gate_decision("granted", None) is None


def test_push_parameters_carry_the_window_and_remaining_uses() -> None:
    row = {"id": 5, "code": "secret-code", "site_id": "demo", "gates": ["g1", "g2"], "max_uses": 3, "uses": 1,
           "valid_from": datetime(2026, 1, 1, 8, tzinfo=UTC), "valid_until": datetime(2026, 1, 1, 18, tzinfo=UTC)}
    add = push_params(row, ADD, actor="olga", origin="10.0.0.1", complete_s=60)
    assert add["args"].obj == {"code": "secret-code", "pass_id": 5, "valid_from": "2026-01-01T08:00:00+00:00",
                               "valid_until": "2026-01-01T18:00:00+00:00", "uses": 2, "gates": ["g1", "g2"],
                               "visitor_arrives": False}
    assert add["expires"] == row["valid_until"] and add["gates"] == ["g1", "g2"]
    revoke = push_params(row, REVOKE, actor="hub", origin=None, complete_s=60)
    assert revoke["args"].obj == {"code": "secret-code", "pass_id": 5}
    assert revoke["hash"] != add["hash"]


def test_a_resent_pass_push_never_gives_back_uses_spent_at_the_gate() -> None:
    import random

    from simulators.devices.base import DeviceSpec
    from simulators.devices.gate import Gate

    spec = DeviceSpec(site="demo", device="g1", kind="gate", model="gate", protocol="mqtt", metrics=(),
                      commands=("add_visitor_pass", "revoke_visitor_pass"))
    gate = Gate(spec=spec, rng=random.Random(1), clock_ms=1_000_000)
    push = {"code": "C0DE", "pass_id": 9, "uses": 2, "valid_from": 999_000, "valid_until": 2_000_000, "visitor_arrives": False}
    assert gate.command("a", "add_visitor_pass", push).status == "done"
    assert gate.present_pass("C0DE") is True
    assert gate.command("b", "add_visitor_pass", push).status == "done"   # the same push, resent
    assert gate.passes["C0DE"].uses == 1
    events = [e for e in gate.drain()[0] if e.code == "granted"]
    assert events[0].data == {"method": "visitor_pass", "pass_id": 9, "uses_left": 1}
    gate.clock_ms = 2_000_000                                              # the window has ended
    assert gate.present_pass("C0DE") is False
    assert gate.drain()[0][-1].data == {"method": "visitor_pass", "pass_id": 9, "reason": "expired"}
    bad = gate.command("c", "add_visitor_pass", {"code": "X", "valid_from": "2026-01-01T08:00:00"})
    assert bad.status == "rejected"
