"""Warm start against the database: the replay raises what was missed, clears what recovered,
adopts what is still up, and takes long outages from device_status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from hub.registry import load_registry
from hub.store.registry_sync import sync_registry
from rules import alarms
from rules.devices import device_metas
from rules.engine import Engine
from rules.model import load_rules
from rules.store import warm_start
from tests.rules_support import DEMO, write_rules

RULES = """
rules:
  - id: trapped
    kind: composite
    title: "trapped in {name}"
    scope: {kinds: [elevator]}
    all:
      - {metric: passenger, op: "==", value: 1}
      - {metric: running, op: "==", value: 0}
    for: 4 s
  - id: offline
    kind: offline
    title: "{name} offline"
    condition: {metric: online, op: "==", value: 0}
    for: 60 s
"""


def test_warm_start_raises_missed_clears_recovered_adopts_open(fresh_db_url, tmp_path):
    registry = load_registry(DEMO)
    now = datetime.now(UTC)
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        ids = sync_registry(conn, registry, actor="test")
        a, b, gate = ids[("demo", "el-b1-1")], ids[("demo", "el-b1-2")], ids[("demo", "gate-north")]
        t = now - timedelta(seconds=10)
        rows = [(t, a, "passenger", 1.0), (t, a, "running", 0.0),  # trapped since t: missed alarm
                (t, b, "passenger", 1.0), (t, b, "running", 1.0)]  # b moving: its open alarm recovered
        conn.cursor().executemany("INSERT INTO readings (ts, device_id, metric, value) VALUES (%s, %s, %s, %s)", rows)
        b_alarm, _ = alarms.raise_alarm(conn, rule_id="trapped", scope_key="demo/el-b1-2", site_id="demo", device_id=b,
                                        kind="trapped", severity="major", title="old", raised_at=now - timedelta(minutes=1))
        # The gate has been offline for two hours and its alarm is open: adopted, not raised again.
        conn.execute("INSERT INTO device_status (device_id, online, changed_at, last_seen) VALUES (%s, false, %s, %s)",
                     (gate, now - timedelta(hours=2), now - timedelta(hours=2)))
        gate_alarm, _ = alarms.raise_alarm(conn, rule_id="offline", scope_key="demo/gate-north", site_id="demo", device_id=gate,
                                           kind="offline", severity="major", title="gate offline",
                                           raised_at=now - timedelta(hours=2) + timedelta(seconds=60))
        engine = Engine(load_rules(write_rules(tmp_path, RULES)), device_metas(registry, ids))
        result = warm_start(conn, engine, now)
        assert (result.raised, result.cleared) == (1, 1)
        rows = conn.execute("SELECT id, rule_id, scope_key, state, raised_at FROM alarms ORDER BY id").fetchall()
        by_scope = {(r[1], r[2]): r for r in rows}
        assert len(rows) == 3
        assert by_scope[("trapped", "demo/el-b1-2")][3] == "cleared_unack"
        missed = by_scope[("trapped", "demo/el-b1-1")]
        assert missed[3] == "active" and abs((missed[4] - t).total_seconds() - 4.0) < 0.001
        assert by_scope[("offline", "demo/gate-north")][0] == gate_alarm
        assert b_alarm == by_scope[("trapped", "demo/el-b1-2")][0]
        # A second warm start (another restart) changes nothing.
        again = warm_start(conn, Engine(engine.ruleset, device_metas(registry, ids)), now + timedelta(seconds=1))
        assert (again.raised, again.cleared) == (0, 0)
        assert conn.execute("SELECT count(*) FROM alarms").fetchone() == (3,)
        # The gate comes back: the adopted alarm clears.
        back = engine.feed(engine.rows_from_readings([]), [(now.timestamp() + 5, gate, "online", None)])
        assert [(type(x).__name__, x.scope_key) for x in back] == [("Clear", "demo/gate-north")]
