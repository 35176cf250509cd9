"""The packaged dispatch policy: durations, rule matching order, SLA merging."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hub.dispatch.policy import Sla, load_policy, parse_duration
from hub.errors import ConfigError

POLICY = load_policy()


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("4h", 14400), ("7d", 604800),
                                               ("-2m", -120), (45, 45), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["soon", "5 minutes", True, None, "m"])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(("kind", "severity", "device_kind", "rule", "priority"), [
    ("entrapment", "critical", "elevator", "entrapment", "p1"),
    ("alarm_button", "major", "elevator", "elevator-alarm-button", "p1"),
    ("fire_confirmed", "critical", "fire_detector", "fire", "p1"),
    ("fire_pre_alarm", "major", "fire_detector", "fire-pre-alarm", "p1"),
    ("fire_shielded", "warning", "fire_detector", "fire-equipment", "p2"),
    ("watchlist_hit", "major", "gate", "security", "p2"),
    ("barrier_fault", "major", "parking_lane", "equipment-major", "p2"),
    ("building_power_loss", "critical", None, "equipment-critical", "p1"),
    ("device_offline", "major", "gate", "device-offline", "p2"),               # held 150 s: see below
    ("device_offline", "critical", "elevator", "device-offline-critical", "p1"),
    ("device_offline", "minor", "gate", None, None),
    ("door_held_open", "minor", "gate", None, None),
    ("parking_full", "warning", "parking_meter", None, None),
])
def test_default_rules_first_match_wins(kind, severity, device_kind, rule, priority):
    found = POLICY.match_alarm(kind=kind, rule_id="r", severity=severity, device_kind=device_kind)
    assert (found.id, found.priority) == (rule, priority) if found else rule is None


def test_rule_sla_falls_back_to_the_priority_default_per_clock():
    merged = POLICY.sla_for("p2", Sla(arrive=timedelta(minutes=45)))
    assert merged == Sla(accept=timedelta(minutes=15), arrive=timedelta(minutes=45), resolve=timedelta(hours=24))


def test_skills_by_device_kind():
    assert [POLICY.skill_for(k) for k in ("escalator", "door", "fire_module", "parking_lane", "sensor", None)] == [
        "elevator", "access", "fire", "parking", "general", None]


@pytest.mark.parametrize(("kind", "severity", "rule", "priority", "hold"), [
    ("entrapment", "critical", "entrapment", "p1", None),             # the root cause: at once
    ("alarm_button", "major", "elevator-alarm-button", "p1", 30),
    ("elevator_fault", "critical", "elevator-fault-critical", "p1", 30),   # 01 safety circuit …
    ("elevator_fault", "major", "elevator-fault", "p2", 30),
    ("elevator_fault", "minor", None, None, None),                     # minor: no order, as before
    ("stopped_outside_door_zone", "major", "equipment-major", "p2", None),  # 45 s: after the entrapment
])
def test_default_policy_holds_the_symptoms_of_an_entrapment(kind, severity, rule, priority, hold):
    found = POLICY.match_alarm(kind=kind, rule_id="r", severity=severity, device_kind="elevator")
    got = (found.id, found.priority, found.hold.total_seconds() if found.hold else None) if found else (None, None, None)
    assert got == (rule, priority, hold)


@pytest.mark.parametrize("severity", ["critical", "major"])
def test_default_policy_holds_a_device_offline_for_the_power_loss_grouping(severity):
    """150 s: the default offline grouping window (2 min) plus the hub's latency
    (tests/test_workorders_grouping.py checks it against examples/rules/common.yaml)."""
    found = POLICY.match_alarm(kind="device_offline", rule_id="device-offline", severity=severity, device_kind="gate")
    assert found is not None and found.hold == timedelta(seconds=150)
    power_loss = POLICY.match_alarm(kind="building_power_loss", rule_id="device-offline", severity="critical",
                                    device_kind=None)
    assert power_loss is not None and power_loss.hold is None     # the root cause: at once


@pytest.mark.parametrize(("hold", "message"), [("0s", "hold must be a positive duration"),
                                               ("-30s", "hold must be a positive duration"),
                                               ("soon", "expected a duration such as 30m")])
def test_hold_must_be_a_positive_duration(tmp_path, hold, message):
    bad = tmp_path / "policy.yaml"
    bad.write_text(f"alarms:\n  - id: button\n    match: {{kinds: [alarm_button]}}\n    hold: {hold}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_policy(bad)
    assert f"{bad}:" in str(err.value) and "alarms[0]" in str(err.value) and message in str(err.value)
