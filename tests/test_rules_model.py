"""Rule files: clear errors naming file, line and field; the CLI check and backtest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hub.cli import main
from hub.errors import ConfigError
from hub.registry import load_registry
from hub.store.registry_sync import sync_registry
from rules.devices import known_metrics
from rules.model import load_rules, parse_duration
from tests.rules_support import DEMO, write_rules
from tests.support import ROOT


def test_durations():
    assert parse_duration("20 s") == 20 and parse_duration("2 min") == 120 and parse_duration(1.5) == 1.5
    assert parse_duration("500ms") == 0.5 and parse_duration("1 h") == 3600
    for bad in ("soon", "-1 s", True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_default_rules_are_valid_against_the_demo_registry():
    ruleset = load_rules(ROOT / "examples" / "rules", known_metrics=known_metrics(load_registry(DEMO)))
    kinds = {r.kind for r in ruleset.rules}
    assert kinds == {"threshold", "state", "rate", "composite", "offline", "missing", "count", "event",
                     "correlation", "watchlist"}


def test_errors_name_file_line_and_field(tmp_path):
    path = write_rules(tmp_path, """
rules:
  - id: ok
    kind: state
    title: t
    condition: {metric: tamper, op: "==", value: 1}
  - id: bad-threshold
    kind: threshold
    title: t
    condition: {metric: speed, in: [1, 2]}
  - id: no-window
    kind: count
    title: t
    codes: [denied]
    count: 5
  - id: bad-duration
    kind: state
    title: t
    condition: {metric: tamper, op: "==", value: 1}
    for: soon
""")
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    text = str(err.value)
    assert f"{path}:7: rules[1]" in text and "numeric op" in text
    assert f"{path}:11: rules[2]" in text and "needs window" in text
    assert f"{path}:20: rules[3].for" in text and "'soon' is not a duration" in text


def test_unknown_metric_duplicate_id_and_watchlist(tmp_path):
    path = write_rules(tmp_path, """
rules:
  - id: a
    kind: state
    title: t
    scope: {kinds: [elevator]}
    condition: {metric: dor_state, in: [open]}
  - id: a
    kind: watchlist
    title: t
    codes: [entry]
    field: plate
    watchlist: nope
""")
    with pytest.raises(ConfigError) as err:
        load_rules(path, known_metrics=known_metrics(load_registry(DEMO)))
    text = str(err.value)
    assert "metric 'dor_state' is not reported by kind 'elevator'" in text
    assert f"{path}:8: rules[1].id: duplicate rule id 'a'" in text


ROOT_RULES = """
rules:
  - id: trapped
    kind: composite
    title: t
    alarm: entrapment
    all:
      - {metric: passenger, op: "==", value: 1}
      - {metric: running, op: "==", value: 0}
    root_cause_of: %s
  - id: faults
    kind: event
    title: t
    alarm: elevator_fault
    codes: {"01": {}, "09": {alarm: over_travel}}
"""


def test_root_cause_of_is_validated_and_found_by_kind(tmp_path):
    ruleset = load_rules(write_rules(tmp_path, ROOT_RULES % "{kinds: [elevator_fault, over_travel], window: 90 s}"))
    assert ruleset.roots_of("over_travel") == [("trapped", 90.0)] and ruleset.roots_of("entrapment") == []
    assert ruleset.root_cause("trapped").kinds == ["elevator_fault", "over_travel"]
    assert ruleset.root_cause("faults") is None
    assert load_rules(write_rules(tmp_path, ROOT_RULES % "{kinds: [elevator_fault]}")).root_cause("trapped").window == 120
    defaults = load_rules(ROOT / "examples" / "rules")
    assert {k for k in ("elevator_fault", "alarm_button", "stopped_outside_door_zone")
            if defaults.roots_of(k) == [("elevator-entrapment", 120.0)]} == {"elevator_fault", "alarm_button",
                                                                          "stopped_outside_door_zone"}


@pytest.mark.parametrize(("option", "message"), [
    ("{kinds: []}", "rules[0].root_cause_of.kinds: List should have at least 1 item"),
    ("{window: 2 min}", "rules[0].root_cause_of.kinds: Field required"),
    ("{kinds: [elevator_fault], window: soon}", "rules[0].root_cause_of.window: Value error, 'soon' is not a duration"),
    ("{kinds: [elevator_fault], within: 2 min}", "rules[0].root_cause_of.within: Extra inputs are not permitted"),
    ("{kinds: [elevator_fault, elevator_fault]}", "kinds named twice: elevator_fault"),
    ("{kinds: [elevator_fault, entrapment]}", "cannot be the root cause of its own alarm kind 'entrapment'"),
    ("{kinds: [elevator_falt]}", ":10: rules[0].root_cause_of.kinds: no rule raises alarm kind 'elevator_falt'"),
])
def test_root_cause_of_errors_name_file_line_and_field(tmp_path, option, message):
    path = write_rules(tmp_path, ROOT_RULES % option)
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_root_cause_of_is_one_level_and_about_one_device(tmp_path):
    chained = ROOT_RULES % "{kinds: [elevator_fault]}" + """
  - id: safety
    kind: state
    title: t
    alarm: elevator_fault_root
    condition: {metric: running, op: "==", value: 0}
    root_cause_of: {kinds: [entrapment]}
"""
    path = write_rules(tmp_path, chained)
    with pytest.raises(ConfigError) as err:
        load_rules(path)
    assert (f"{path}:10: rules[0].root_cause_of: rule 'trapped' raises 'entrapment', which rule 'safety' names as a"
            " symptom; a root cause cannot itself be a symptom") in str(err.value)
    group = write_rules(tmp_path, """
rules:
  - id: stopped-in-zone
    kind: correlation
    title: t
    condition: {metric: running, op: "==", value: 0}
    group_by: zone
    window: 1 min
    root_cause_of: {kinds: [stopped-in-zone-x]}
""")
    with pytest.raises(ConfigError) as err:
        load_rules(group)
    assert f"{group}:3: rules[0]: Value error, root_cause_of needs an alarm about one device" in str(err.value)


def test_cli_check(tmp_path, capsys):
    assert main(["rules", "check", str(ROOT / "examples" / "rules")]) == 0
    assert "36 rule(s) in 5 file(s) are valid" in capsys.readouterr().out
    bad = write_rules(tmp_path, "rules:\n  - id: x\n    kind: nonsense\n    title: t\n")
    assert main(["rules", "check", str(bad)]) == 2
    assert f"{bad}:3: rules[0].kind" in capsys.readouterr().err


def test_cli_backtest_replays_history_and_writes_no_alarms(fresh_db_url, tmp_path, capsys, monkeypatch):
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        ids = sync_registry(conn, load_registry(DEMO), actor="test")
        lift = ids[("demo", "el-b1-1")]
        t0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)
        rows = []
        for s in range(0, 120, 5):  # trapped from 03:00:30 for 60 s, doors open, passenger leaves
            t = t0 + timedelta(seconds=s)
            door_open = 90 <= s < 100
            rows += [(t, lift, "passenger", 1.0 if s < 100 else 0.0, None), (t, lift, "running", 1.0 if s < 30 else 0.0, None),
                     (t, lift, "door_state", 1.0 if door_open else 0.0, "open" if door_open else "closed_locked")]
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO readings (ts, device_id, metric, value, text_value) VALUES (%s, %s, %s, %s, %s)", rows)
            cur.execute("INSERT INTO events (ts, device_id, code) VALUES (%s, %s, '01')", (t0 + timedelta(seconds=100), lift))
    monkeypatch.setenv("HUB_DATABASE_URL", fresh_db_url)
    monkeypatch.setenv("HUB_REGISTRY", str(DEMO))
    assert main(["rules", "backtest", "--from", "2026-11-20T03:00:00Z", "--to", "2026-11-20T04:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "2026-11-20 03:00:50  2026-11-20 03:01:32  critical  elevator-entrapment" in out
    assert "elevator-fault-codes" in out and "safety circuit open" in out
    assert "2026-11-20 03:06:55  (still active)       minor     heartbeat-lost" in out  # last data 03:01:55
    assert "3 alarm(s) would have been raised" in out
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM alarms").fetchone() == (0,)
    assert main(["rules", "backtest", "--from", "2026-11-20", "--to", "yesterday"]) == 2
