"""Root cause within one device (`root_cause_of`) through the engine and the store, against the
database: symptoms raised shortly before the root are adopted, those raised while it is up are
born its children, everything else stays top-level; and since the parent is resolved from the
open alarms in the database, a restart (a fresh engine, a warm start) keeps the grouping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hub.registry import load_registry
from hub.store.registry_sync import sync_registry
from rules import alarms
from rules.devices import device_metas
from rules.engine import Engine, Rows
from rules.model import load_rules
from rules.store import apply_actions, warm_start
from tests.rules_support import DEMO, rows, write_rules

RULES = """
rules:
  - id: trapped
    kind: composite
    title: "trapped in {name}"
    severity: critical
    alarm: entrapment
    scope: {kinds: [elevator]}
    all:
      - {metric: passenger, op: "==", value: 1}
      - {metric: running, op: "==", value: 0}
    for: 20 s
    root_cause_of: {kinds: [elevator_fault, alarm_button, stopped_outside_door_zone], window: 2 min}
  - id: outside-zone
    kind: composite
    title: "{name} outside the door zone"
    alarm: stopped_outside_door_zone
    scope: {kinds: [elevator]}
    all:
      - {metric: running, op: "==", value: 0}
      - {metric: door_zone, op: "==", value: 0}
    for: 45 s
  - id: overload
    kind: threshold
    title: "{name} overloaded"
    scope: {kinds: [elevator]}
    condition: {metric: load, op: ">=", value: 110}
  - id: faults
    kind: event
    title: "{name}: fault {code}"
    alarm: elevator_fault
    scope: {kinds: [elevator]}
    codes: ["01", "02", "07"]
    inactive_field: active
  - id: button
    kind: event
    title: "{name}: alarm button"
    alarm: alarm_button
    scope: {kinds: [elevator]}
    codes: ["90"]
    clear_after: 0 s
"""

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC).timestamp()


class Lifts:
    def __init__(self, conn: psycopg.Connection, tmp_path: Path) -> None:
        registry = load_registry(DEMO)
        self.conn = conn
        self.ids = sync_registry(conn, registry, actor="test")
        self.metas = device_metas(registry, self.ids)
        self.ruleset = load_rules(write_rules(tmp_path, RULES))
        self.engine = Engine(self.ruleset, self.metas)
        self.a, self.b = self.ids[("demo", "el-b1-1")], self.ids[("demo", "el-b1-2")]

    def fresh_engine(self) -> None:
        """What a restart leaves: an engine that knows nothing of the alarms already written."""
        self.engine = Engine(self.ruleset, self.metas)

    def feed(self, readings: list[tuple[float, int, str, Any]] = (), events: list[tuple[float, int, str, Any]] = ()) -> None:
        r = rows(self.engine, [(T0 + t, d, m, v) for t, d, m, v in readings]) if readings else Rows.empty()
        apply_actions(self.conn, self.engine.feed(r, [(T0 + t, d, c, x) for t, d, c, x in events]), ruleset=self.ruleset)

    def advance(self, t: float) -> None:
        apply_actions(self.conn, self.engine.advance(T0 + t), ruleset=self.ruleset)

    def alarm(self, rule: str, scope: str) -> tuple[int, int | None]:
        row = self.conn.execute("SELECT id, parent_id FROM alarms WHERE rule_id = %s AND scope_key = %s"
                                " ORDER BY id DESC LIMIT 1", (rule, f"demo/{scope}")).fetchone()
        assert row is not None, f"no alarm {rule} {scope}"
        return row

    def links(self, alarm_id: int) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT note FROM alarm_history WHERE alarm_id = %s AND action = 'link'"
                                                " ORDER BY id", (alarm_id,))]


@pytest.fixture
def lifts(fresh_db_url: str, tmp_path: Path):
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        yield Lifts(conn, tmp_path)


def test_symptoms_before_the_root_are_adopted_and_later_ones_born_children(lifts: Lifts) -> None:
    a, b = lifts.a, lifts.b
    lifts.feed(events=[(-200, a, "02", {"active": True})])     # door fault 200 s before the root: too early
    lifts.feed([(0, a, "passenger", 1), (0, a, "running", 0), (0, a, "door_zone", 0), (0, a, "load", 30)],
               [(0, a, "01", {"active": True}), (1, a, "90", None), (1, b, "01", {"active": True})])
    fault, button, other_lift = (lifts.alarm("faults", "el-b1-1#01"), lifts.alarm("button", "el-b1-1#90"),
                                 lifts.alarm("faults", "el-b1-2#01"))
    assert fault[1] is None and button[1] is None   # no root yet: top-level for now
    lifts.advance(20)
    root, root_parent = lifts.alarm("trapped", "el-b1-1")
    assert root_parent is None
    # Raised 20 s and 19 s before the root, on its lift: adopted, the momentary button too
    # (cleared_unack, still open). The other lift's fault and the 200 s old one stay top-level.
    assert lifts.alarm("faults", "el-b1-1#01") == (fault[0], root)
    assert lifts.alarm("button", "el-b1-1#90") == (button[0], root)
    assert lifts.alarm("faults", "el-b1-2#01")[1] is None and other_lift[1] is None
    assert lifts.alarm("faults", "el-b1-1#02")[1] is None
    assert lifts.links(fault[0]) == [f"grouped under alarm {root} (root cause)"]
    # While the root is up: a listed kind is born its child, another kind is not.
    lifts.feed([(40, a, "load", 120)], [(42, a, "07", {"active": True})])
    lifts.advance(46)
    outside = lifts.alarm("outside-zone", "el-b1-1")
    assert outside[1] == root and lifts.links(outside[0]) == [f"raised under alarm {root}"]
    assert lifts.alarm("faults", "el-b1-1#07")[1] == root
    assert lifts.alarm("overload", "el-b1-1")[1] is None
    # Children keep their own lifecycle: the fault clears on its own, the root stays up.
    lifts.feed(events=[(50, a, "01", {"active": False})])
    states = dict(lifts.conn.execute("SELECT id, state FROM alarms WHERE id = ANY(%s)", ([fault[0], root],)).fetchall())
    assert states == {fault[0]: "cleared_unack", root: "active"}
    # The rescue: the car moves, the root clears. A fault after that is an incident of its own.
    lifts.feed([(60, a, "running", 1), (61, a, "running", 0), (61, a, "door_zone", 1), (61, a, "passenger", 0)])
    assert lifts.conn.execute("SELECT state FROM alarms WHERE id = %s", (root,)).fetchone() == ("cleared_unack",)
    alarms.acknowledge(lifts.conn, fault[0], "operator")  # cleared_unack → closed: the next 01 is a new alarm
    lifts.feed(events=[(70, a, "01", {"active": True})])
    again = lifts.alarm("faults", "el-b1-1#01")
    assert again[0] != fault[0] and again[1] is None


def test_a_child_raised_after_a_restart_still_finds_its_root(lifts: Lifts) -> None:
    a = lifts.a
    lifts.feed([(0, a, "passenger", 1), (0, a, "running", 0), (0, a, "door_zone", 1)])
    lifts.advance(20)
    root, _ = lifts.alarm("trapped", "el-b1-1")
    lifts.fresh_engine()                      # the hub restarted; the root is open in the database only
    lifts.feed(events=[(30, a, "90", None)])
    assert lifts.alarm("button", "el-b1-1#90")[1] == root


def test_warm_start_writing_a_missed_root_adopts_the_open_symptoms(lifts: Lifts) -> None:
    a, now = lifts.a, datetime.now(UTC).replace(microsecond=0)
    t = now - timedelta(seconds=60)
    lifts.conn.cursor().executemany("INSERT INTO readings (ts, device_id, metric, value) VALUES (%s, %s, %s, %s)",
                                    [(t, a, "passenger", 1.0), (t, a, "running", 0.0), (t, a, "door_zone", 1.0)])
    # The terminal's fault was written; the hub died before the entrapment was (20 s later).
    fault, _ = alarms.raise_alarm(lifts.conn, rule_id="faults", scope_key="demo/el-b1-1#01", site_id="demo", device_id=a,
                                  kind="elevator_fault", severity="major", title="fault 01", raised_at=t)
    result = warm_start(lifts.conn, lifts.engine, now)
    assert result.raised == 1
    root, parent = lifts.alarm("trapped", "el-b1-1")
    assert parent is None and lifts.alarm("faults", "el-b1-1#01") == (fault, root)
