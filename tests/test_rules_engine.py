"""The engine alone (pure, deterministic): every rule kind and its edge cases, in data time."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.engine import ANY, Annotate, Clear, Link, Raise, Rows
from tests.rules_support import engine_for, rows

T0 = datetime(2026, 11, 23, 4, 0, tzinfo=UTC).timestamp()  # 12:00 in Asia/Shanghai

THRESHOLD = """
rules:
  - id: hot
    kind: threshold
    title: "{name} hot {temperature}"
    scope: {kinds: [fire_detector]}
    condition: {metric: temperature, op: ">", value: 57, clear: 50}
    for: 10 s
    flap_count: 3
    flap_window: 10 min
    flap_clear_for: 60 s
"""


def raises(actions):
    return [a for a in actions if isinstance(a, Raise)]


def clears(actions):
    return [a for a in actions if isinstance(a, Clear)]


def test_threshold_exactly_at_value_does_not_raise_and_duration_is_exact(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD)
    d = ids["smoke-b1-f1"]
    out = eng.feed(rows(eng, [(T0, d, "temperature", 57.0), (T0 + 30, d, "temperature", 57.0)]))
    assert out == []
    out = eng.feed(rows(eng, [(T0 + 31, d, "temperature", 57.1), (T0 + 35, d, "temperature", 60.0),
                              (T0 + 45, d, "temperature", 58.0)]))
    [r] = raises(out)
    assert r.at == T0 + 41 and r.scope_key == "demo/smoke-b1-f1" and r.title == "smoke-b1-f1 hot 58.0"


def test_threshold_hysteresis_needs_recovery_below_clear(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD)
    d = ids["smoke-b1-f1"]
    out = eng.feed(rows(eng, [(T0, d, "temperature", 60.0), (T0 + 10, d, "temperature", 55.0),
                              (T0 + 20, d, "temperature", 51.0), (T0 + 30, d, "temperature", 50.0)]))
    # 55 and 51 are between clear and value: still in alarm; 50 (== clear) recovers.
    assert [a.at for a in raises(out)] == [T0 + 10]
    assert [a.at for a in clears(out)] == [T0 + 30]


def test_duration_cut_short_raises_nothing_and_timer_raises_without_new_data(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD)
    d = ids["smoke-b1-f1"]
    assert eng.feed(rows(eng, [(T0, d, "temperature", 60.0), (T0 + 9.9, d, "temperature", 40.0)])) == []
    eng.feed(rows(eng, [(T0 + 20, d, "temperature", 60.0)]))
    assert eng.advance(T0 + 29) == []
    [r] = raises(eng.advance(T0 + 31))
    assert r.at == T0 + 30


def test_flapping_keeps_one_alarm_open(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD.replace("for: 10 s", "for: 0 s"))
    d = ids["smoke-b1-f1"]
    items = []
    for i in range(6):  # up and down every 5 s
        items.append((T0 + 10 * i, d, "temperature", 60.0))
        items.append((T0 + 10 * i + 5, d, "temperature", 40.0))
    out = eng.feed(rows(eng, items))
    assert len(raises(out)) == 3  # the third raise in the window marks it flapping
    assert any(isinstance(a, Annotate) and a.detail.get("flapping") for a in out)
    assert len(clears(out)) == 2  # the third episode stays open: it needs 60 s of recovery
    assert clears(eng.advance(T0 + 55 + 59)) == []
    [c] = clears(eng.advance(T0 + 55 + 61))
    assert c.at == T0 + 55 + 60


def test_out_of_order_within_a_batch_is_sorted_and_late_data_is_not_reevaluated(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD)
    d = ids["smoke-b1-f1"]
    out = eng.feed(rows(eng, [(T0 + 12, d, "temperature", 61.0), (T0, d, "temperature", 60.0),
                              (T0 + 5, d, "temperature", 40.0)]))
    assert out == []  # in time order: 60, 40, 61 — the first episode lasted only 5 s
    [r] = raises(eng.advance(T0 + 23))
    assert r.at == T0 + 22
    # A late reading from before what was evaluated does not clear the alarm.
    assert eng.feed(rows(eng, [(T0 + 6, d, "temperature", 20.0)])) == []
    assert eng.late_rows == 1


ENTRAPMENT = """
rules:
  - id: entrapment
    kind: composite
    title: "trapped in {name}"
    severity: critical
    scope: {kinds: [elevator]}
    all:
      - {metric: passenger, op: "==", value: 1}
      - {metric: door_state, in: [closed_locked]}
      - {metric: running, op: "==", value: 0}
    for: 20 s
    clear_for: 2 s
maintenance:
  - scope: {kinds: [elevator]}
    condition: {metric: service_mode, in: [inspection]}
"""


def lift(eng, d, t, **values):
    return rows(eng, [(t, d, k, v) for k, v in values.items()])


def test_composite_entrapment_raises_after_20_s_and_clears_when_doors_open(tmp_path):
    eng, ids = engine_for(tmp_path, ENTRAPMENT)
    d = ids["el-b1-1"]
    assert eng.feed(lift(eng, d, T0, passenger=1, door_state="closed_locked", running=1)) == []
    assert eng.feed(lift(eng, d, T0 + 5, running=0)) == []
    [r] = raises(eng.advance(T0 + 25))
    assert r.at == T0 + 25 and r.severity == "critical" and r.detail["values"]["door_state"] == "closed_locked"
    assert eng.feed(lift(eng, d, T0 + 40, door_state="open")) == []
    [c] = clears(eng.advance(T0 + 42))
    assert c.at == T0 + 42


def test_composite_same_timestamp_partial_update_is_not_a_transient(tmp_path):
    eng, ids = engine_for(tmp_path, ENTRAPMENT.replace("for: 20 s", "for: 0 s"))
    d = ids["el-b1-1"]
    eng.feed(lift(eng, d, T0, passenger=1, door_state="open", running=0))
    # One message: doors close and passenger leaves at the same instant: no alarm.
    assert raises(eng.feed(lift(eng, d, T0 + 1, door_state="closed_locked", passenger=0))) == []


def test_device_offline_during_the_window_restarts_it(tmp_path):
    eng, ids = engine_for(tmp_path, ENTRAPMENT)
    d = ids["el-b1-1"]
    eng.feed(lift(eng, d, T0, passenger=1, door_state="closed_locked", running=0))
    assert eng.feed(rows(eng, []), [(T0 + 10, d, "offline", None)]) == []
    assert raises(eng.advance(T0 + 40)) == []
    # Back online, still trapped: a fresh 20 s window from the first sample after it.
    eng.feed(lift(eng, d, T0 + 50, passenger=1, door_state="closed_locked", running=0))
    [r] = raises(eng.advance(T0 + 71))
    assert r.at == T0 + 70


def test_inspection_mode_suppresses_until_it_ends(tmp_path):
    eng, ids = engine_for(tmp_path, ENTRAPMENT)
    d = ids["el-b1-1"]
    eng.feed(lift(eng, d, T0, service_mode="inspection", passenger=1, door_state="closed_locked", running=0))
    assert raises(eng.advance(T0 + 60)) == []
    eng.feed(lift(eng, d, T0 + 61, service_mode="normal"))
    assert len(raises(eng.advance(T0 + 62))) == 1


def test_state_rate_and_schedule(tmp_path):
    eng, ids = engine_for(tmp_path, """
rules:
  - id: drop
    kind: rate
    title: pressure dropping
    scope: {kinds: [fire_module]}
    condition: {metric: pressure, op: "<", value: -0.01, rate: true}
  - id: held
    kind: composite
    title: held open at night
    scope: {kinds: [gate]}
    all: [{metric: door_open, op: "==", value: 1}]
    for: 60 s
    schedule: {start: "22:00", end: "06:00"}
""")
    p, g = ids["sprinkler-b1"], ids["gate-north"]
    out = eng.feed(rows(eng, [(T0, p, "pressure", 1.0), (T0 + 10, p, "pressure", 0.95), (T0 + 20, p, "pressure", 0.7)]))
    assert [a.at for a in raises(out)] == [T0 + 20]  # -0.005/s is fine, -0.025/s is not
    # 12:00 local: a door open for an hour is no alarm by day.
    eng.feed(rows(eng, [(T0, g, "door_open", 1)]))
    assert [a.rule_id for a in raises(eng.advance(T0 + 3600))] == []
    night = T0 + 10 * 3600  # 22:00 local
    [r] = raises(eng.advance(night + 61))
    assert r.rule_id == "held" and r.at == night + 60
    [c] = clears(eng.advance(night + 8 * 3600 + 1))  # 06:00: the schedule ends the alarm
    assert c.at == night + 8 * 3600


def test_count_event_watchlist_and_missing(tmp_path):
    eng, ids = engine_for(tmp_path, """
watchlists:
  cards: ["C-1"]
rules:
  - id: denied
    kind: count
    title: "{count} denied"
    scope: {kinds: [gate]}
    codes: [denied]
    count: 5
    window: 60 s
  - id: faults
    kind: event
    title: "fault {code}"
    scope: {kinds: [elevator]}
    codes: {"01": {severity: critical}, "02": {}}
    clear_codes: ["40"]
  - id: revoked
    kind: watchlist
    title: "card {value}"
    scope: {kinds: [gate]}
    codes: [granted]
    field: card
    watchlist: cards
  - id: silent
    kind: missing
    title: silent
    scope: {devices: [lane-in]}
    after: 5 min
""")
    g, e, lane = ids["gate-north"], ids["el-b1-1"], ids["lane-in"]
    events = [(T0 + i * 14, g, "denied", None) for i in range(5)]  # 5 within 56 s
    [r] = raises(eng.feed(rows(eng, []), events))
    assert r.at == T0 + 56 and r.title == "5 denied"
    [c] = clears(eng.advance(T0 + 100))
    assert c.rule_id == "denied"
    out = eng.feed(rows(eng, []), [(T0, e, "01", {}), (T0 + 1, e, "02", None), (T0 + 2, e, "01", {})])
    assert [(a.scope_key, a.severity) for a in raises(out)] == [("demo/el-b1-1#01", "critical"), ("demo/el-b1-1#02", "major")]
    assert sorted(a.scope_key for a in clears(eng.feed(rows(eng, []), [(T0 + 9, e, "40", None)]))) == ["demo/el-b1-1#01", "demo/el-b1-1#02"]
    out = eng.feed(rows(eng, []), [(T0, g, "granted", {"card": "C-2"}), (T0 + 1, g, "granted", {"card": "C-1"})])
    assert [a.scope_key for a in raises(out)] == ["demo/gate-north#C-1"]
    assert [a.scope_key for a in clears(out)] == ["demo/gate-north#C-1"]  # momentary: cleared-unacknowledged
    eng.feed(rows(eng, [(T0, lane, "free_spaces", 10)]))
    assert raises(eng.advance(T0 + 299)) == []
    [r] = raises(eng.advance(T0 + 301))
    assert r.at == T0 + 300
    [c] = clears(eng.feed(rows(eng, [(T0 + 400, lane, "free_spaces", 9)])))
    assert c.at == T0 + 400


def test_correlation_two_detectors_in_a_zone_within_two_minutes(tmp_path):
    rule = """
rules:
  - id: confirmed
    kind: correlation
    title: "fire in {group}: {count}"
    scope: {kinds: [fire_detector]}
    condition: {metric: fire_alarm, op: "==", value: 1}
    group_by: zone
    min_devices: 2
    window: 2 min
  - id: pre
    kind: correlation
    title: "pre-alarm {group}"
    scope: {kinds: [fire_detector]}
    condition: {metric: fire_alarm, op: "==", value: 1}
    group_by: zone
    min_devices: 1
    window: 2 min
"""
    eng, ids = engine_for(tmp_path, rule)
    a, b, other = ids["smoke-b1-f1"], ids["smoke-b1-f2"], ids["smoke-b2-f1"]
    out = eng.feed(rows(eng, [(T0, a, "fire_alarm", 1), (T0 + 1, other, "fire_alarm", 1)]))
    assert sorted((x.rule_id, x.scope_key) for x in raises(out)) == [("pre", "demo/zone:b1-z1"), ("pre", "demo/zone:b2-z1")]
    [r] = raises(eng.feed(rows(eng, [(T0 + 90, b, "fire_alarm", 1)])))
    assert (r.rule_id, r.scope_key, r.title) == ("confirmed", "demo/zone:b1-z1", "fire in zone:b1-z1: 2")
    out = eng.feed(rows(eng, [(T0 + 200, a, "fire_alarm", 0), (T0 + 210, b, "fire_alarm", 0)]))
    assert sorted((x.rule_id, x.at) for x in clears(out)) == [("confirmed", T0 + 210), ("pre", T0 + 210)]
    # Two detectors 3 minutes apart: a pre-alarm only.
    eng2, _ = engine_for(tmp_path, rule)
    out = eng2.feed(rows(eng2, [(T0, a, "fire_alarm", 1), (T0 + 180, b, "fire_alarm", 1)]))
    assert [x.rule_id for x in raises(out)] == ["pre"]


def test_building_power_loss_is_one_parent_alarm(tmp_path):
    eng, ids = engine_for(tmp_path, """
rules:
  - id: offline
    kind: offline
    title: "{device} offline"
    condition: {metric: online, op: "==", value: 0}
    for: 30 s
    group: {by: building, min_devices: 3, window: 2 min, alarm: power_loss}
""")
    b1 = [ids[n] for n in ("el-b1-1", "el-b1-2", "gate-north", "fire-panel-1", "smoke-b1-f1")]
    out = eng.feed(rows(eng, []), [(T0, b1[0], "offline", None)])
    out += eng.advance(T0 + 31)
    assert [a.scope_key for a in raises(out)] == ["demo/el-b1-1"]  # alone: its own alarm
    out = eng.feed(rows(eng, []), [(T0 + 40 + i, d, "offline", None) for i, d in enumerate(b1[1:])])
    out += eng.advance(T0 + 120)
    assert [a.scope_key for a in raises(out)] == ["demo/building:b1"]
    assert [a.scope_key for a in out if isinstance(a, Link)] == ["demo/el-b1-1"]
    out = eng.feed(rows(eng, []), [(T0 + 200, d, "online", None) for d in b1])
    assert sorted(a.scope_key for a in clears(out)) == ["demo/building:b1", "demo/el-b1-1"]


def test_status_change_at_hub_time_does_not_make_data_in_flight_late(tmp_path):
    eng, ids = engine_for(tmp_path, THRESHOLD)
    d = ids["smoke-b1-f1"]
    # The hub marks the device online at its receive time, a moment after the data's own time.
    eng.feed(rows(eng, []), [(T0 + 0.5, d, "online", None)])
    eng.feed(rows(eng, [(T0, d, "temperature", 60.0)]))
    assert eng.late_rows == 0
    [r] = raises(eng.advance(T0 + 11))
    assert r.at == T0 + 10


def _reference_rows(engine, readings):
    """The conversion written row by row, as the engine's docstring states it."""
    ix, any_ix = engine.metric_ix, engine.metric_ix.get(ANY)
    out, last = [], None
    for ts, dev, name, value, text, quality in readings:
        if quality >= 2:
            continue
        m = ix.get(name)
        if m is not None:
            out.append((ts.timestamp(), dev, m, np.nan if value is None else value, text))
        elif any_ix is not None and (ts, dev) != last:
            last = (ts, dev)
            out.append((ts.timestamp(), dev, any_ix, np.nan, None))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4),
                          st.lists(st.tuples(st.sampled_from(["speed", "door_state", "temperature", "floor", "noise"]),
                                             st.one_of(st.none(), st.floats(-1e6, 1e6)), st.sampled_from([0, 0, 1, 2])),
                                   min_size=1, max_size=6)),
                max_size=40))
def test_rows_from_readings_matches_the_row_by_row_rule(messages):
    eng, _ = _ANY_ENGINE
    base = datetime(2026, 1, 1, tzinfo=UTC)
    readings = []
    for second, dev, metrics in messages:
        ts = base.replace(second=second)  # a new object per message, as the decoder makes them
        readings += [(ts, dev, name, value, None if value is not None else "x", q) for name, value, q in metrics]
    got = eng.rows_from_readings(readings)
    want = _reference_rows(eng, readings)
    assert len(got) == len(want)
    for i, (t, d, m, v, txt) in enumerate(want):
        assert (got.ts[i], got.dev[i], got.metric[i]) == (t, d, m)
        assert (np.isnan(got.value[i]) and np.isnan(v)) or got.value[i] == v
        assert got.text[i] == txt


_ANY_ENGINE = engine_for(Path(tempfile.mkdtemp(prefix="rules-any-")), """
    rules:
      - {id: slow, kind: threshold, title: slow, condition: {metric: speed, op: "<", value: 0.1}, scope: {kinds: [elevator]}}
      - {id: hot, kind: threshold, title: hot, condition: {metric: temperature, op: ">", value: 57}}
      - {id: quiet, kind: missing, title: quiet, after: 5 min}
""")


RESCUE = ENTRAPMENT.replace("    clear_for: 2 s\n", """    clear_when:
      - {metric: door_zone, op: "==", value: 1}
      - {metric: door_state, in: [open]}
    clear_for: 2 s
""")


def test_clear_when_keeps_the_alarm_until_the_car_is_level_with_doors_open(tmp_path):
    """`clear_when` replaces "condition no longer holds": a car moved during the rescue with its
    doors shut, or level but still shut, keeps the entrapment; level and open for 2 s clears it."""
    eng, ids = engine_for(tmp_path, RESCUE)
    d = ids["el-b1-1"]
    eng.feed(lift(eng, d, T0, passenger=1, door_state="closed_locked", running=0, door_zone=0))
    [r] = raises(eng.advance(T0 + 21))
    assert r.at == T0 + 20
    # The plain condition ends (the car moves), but the clear condition does not hold: no clear.
    assert clears(eng.feed(lift(eng, d, T0 + 30, running=1))) == []
    assert clears(eng.feed(lift(eng, d, T0 + 40, running=0, door_zone=1))) == []     # level, doors shut
    assert clears(eng.advance(T0 + 60)) == []
    eng.feed(lift(eng, d, T0 + 61, door_state="open"))
    assert clears(eng.advance(T0 + 62.5)) == []                                      # held only 1.5 s
    eng.feed(lift(eng, d, T0 + 62.6, door_state="closed_locked"))                     # shut again: restart
    eng.feed(lift(eng, d, T0 + 64, door_state="open"))
    assert clears(eng.advance(T0 + 65.9)) == []
    [c] = clears(eng.advance(T0 + 66.1))
    assert c.at == T0 + 66


def test_event_inactive_field_clears_only_its_own_code(tmp_path):
    eng, ids = engine_for(tmp_path, """
rules:
  - id: faults
    kind: event
    title: "fault {code}"
    scope: {kinds: [elevator]}
    codes: {"01": {severity: critical}, "04": {}}
    inactive_field: active
""")
    d = ids["el-b1-1"]
    out = eng.feed(Rows.empty(), [(T0, d, "01", {"active": True}), (T0 + 1, d, "04", {"active": True})])
    assert sorted(r.scope_key for r in raises(out)) == ["demo/el-b1-1#01", "demo/el-b1-1#04"]
    # `active: false` for 04 clears 04 only; a missing or non-boolean field does not clear.
    out = eng.feed(Rows.empty(), [(T0 + 5, d, "04", {"active": False}), (T0 + 6, d, "01", {"active": "no"}),
                                  (T0 + 7, d, "01", {})])
    assert [(c.scope_key, c.at) for c in clears(out)] == [("demo/el-b1-1#04", T0 + 5)]
    assert raises(out) == []
    out = eng.feed(Rows.empty(), [(T0 + 9, d, "01", {"active": False})])
    assert [c.scope_key for c in clears(out)] == ["demo/el-b1-1#01"]


def test_missing_data_is_not_raised_for_a_device_known_offline(tmp_path):
    eng, ids = engine_for(tmp_path, """
rules:
  - id: quiet
    kind: missing
    title: "{name} quiet"
    after: 5 min
""")
    gate, lift = ids["gate-north"], ids["el-b1-1"]
    eng.feed(rows(eng, [(T0, gate, "temperature", 1.0), (T0, lift, "temperature", 1.0)]))
    eng.feed(Rows.empty(), [(T0 + 10, gate, "offline", None)])
    scopes = [r.scope_key for r in raises(eng.advance(T0 + 400))]
    assert scopes == ["demo/el-b1-1"]          # the lift went silent; the gate is offline, not silent
    eng.feed(Rows.empty(), [(T0 + 500, gate, "online", None)])
    assert raises(eng.advance(T0 + 700)) == []  # back online: its 5 minutes start over...
    [r] = raises(eng.advance(T0 + 801))         # ...from the status change, not from its last data
    assert r.scope_key == "demo/gate-north"
