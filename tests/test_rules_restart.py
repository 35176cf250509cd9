"""kill -9 of a real `hub run` process in the middle of a duration window, and after a raise:
no alarm is missed, none is duplicated, and the open one is still cleared afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from tests.support import ROOT, free_port, mqtt_client, wait_for

pytestmark = pytest.mark.slow

RULES = """
rules:
  - id: trapped
    kind: composite
    title: "trapped in {name}"
    severity: critical
    scope: {kinds: [elevator]}
    all:
      - {metric: passenger, op: "==", value: 1}
      - {metric: door_state, in: [closed_locked]}
      - {metric: running, op: "==", value: 0}
    for: 4 s
"""


def _registry(tmp: Path) -> Path:
    """The demo site with its Modbus devices on free ports: on a shared machine another `hub demo`
    may serve the fixed ones, and its lift's readings would land in this test's store."""
    path = tmp / "demo.yaml"
    if not path.exists():
        text = (ROOT / "examples" / "sites" / "demo.yaml").read_text(encoding="utf-8")
        for port in ("15020", "15021"):
            text = text.replace(f"port: {port}", f"port: {free_port()}")
        path.write_text(text, encoding="utf-8")
    return path


def _start(db_url: str, broker_url: str, rules: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HUB_DATABASE_URL": db_url, "HUB_MQTT_URL": broker_url, "HUB_RULES": str(rules),
           "HUB_REGISTRY": str(_registry(rules.parent)), "HUB_API_ENABLED": "false",
           "HUB_MQTT_CLIENT_ID": "hub-restart-test"}
    proc = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, cwd=ROOT,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    starts = log.read_bytes().count(b"hub worker") if log.exists() else 0
    # `hub worker …` is logged once the ingest session is subscribed (after the components).
    wait_for(lambda: (log.read_bytes().count(b"hub worker") > starts
                      and _one(db_url, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                       " AND application_name = 'hub-rules'") >= 1) or proc.poll() is not None,
             60, message="hub run up")
    assert proc.poll() is None, log.read_text()
    return proc


# The lift's own readings: `hub run` also polls the Modbus devices, and failed polls are stored
# as bad-quality readings of every metric (passenger included).
PASSENGER_READINGS = ("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
                      " WHERE d.device_id = 'el-b1-1' AND r.metric = 'passenger'")


def _one(db_url: str, sql: str, *params: object) -> int:
    with psycopg.connect(db_url) as c:
        row = c.execute(sql, params).fetchone()
        return int(row[0]) if row else 0


def _alarms(db_url: str) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute("SELECT id, state, raised_at, scope_key FROM alarms WHERE rule_id = 'trapped' ORDER BY id").fetchall()


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def test_kill_9_mid_window_and_after_raise(fresh_db_url, broker, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    log = tmp_path / "hub.log"
    client = mqtt_client(broker.host, broker.port)
    proc = _start(fresh_db_url, broker.url, rules, log)
    try:
        # 1. Killed two seconds into a four-second window, down for five: raised once, on time.
        t = datetime.now(UTC)
        client.publish("facility/demo/el-b1-1/telemetry", json.dumps(
            {"ts": t.isoformat(), "passenger": 1, "door_state": "closed_locked", "running": 0}), qos=1).wait_for_publish(5)
        wait_for(lambda: _one(fresh_db_url, PASSENGER_READINGS) == 1, 10,
                 message="reading committed")
        wait_for(lambda: (datetime.now(UTC) - t).total_seconds() > 2, 5)
        _kill9(proc)
        assert _alarms(fresh_db_url) == []
        wait_for(lambda: (datetime.now(UTC) - t).total_seconds() > 6, 10)
        proc = _start(fresh_db_url, broker.url, rules, log)
        wait_for(lambda: _alarms(fresh_db_url), 10, message="the missed alarm")
        [(alarm_id, state, raised_at, scope)] = _alarms(fresh_db_url)
        assert state == "active" and scope == "demo/el-b1-1"
        assert abs((raised_at - t).total_seconds() - 4.0) < 0.01  # since + 4 s in data time

        # 2. Killed after the raise: the restarted hub adopts it (no duplicate) and still clears it.
        _kill9(proc)
        proc = _start(fresh_db_url, broker.url, rules, log)
        client.publish("facility/demo/el-b1-1/telemetry", json.dumps(
            {"ts": datetime.now(UTC).isoformat(), "passenger": 1, "door_state": "closed_locked", "running": 0}),
            qos=1).wait_for_publish(5)
        wait_for(lambda: _one(fresh_db_url, PASSENGER_READINGS) == 2, 10)
        client.publish("facility/demo/el-b1-1/telemetry", json.dumps(
            {"ts": datetime.now(UTC).isoformat(), "door_state": "open"}), qos=1).wait_for_publish(5)
        wait_for(lambda: _alarms(fresh_db_url)[0][1] == "cleared_unack", 10, message="cleared after restart")
        assert [a[0] for a in _alarms(fresh_db_url)] == [alarm_id]

        # 3. Killed mid-window, back before the window ends: raised exactly once as well.
        t2 = datetime.now(UTC)
        client.publish("facility/demo/el-b1-2/telemetry", json.dumps(
            {"ts": t2.isoformat(), "passenger": 1, "door_state": "closed_locked", "running": 0}), qos=1).wait_for_publish(5)
        wait_for(lambda: _one(fresh_db_url, "SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
                                            " WHERE d.device_id = 'el-b1-2'") == 3, 10)
        _kill9(proc)
        proc = _start(fresh_db_url, broker.url, rules, log)
        wait_for(lambda: len(_alarms(fresh_db_url)) == 2, 15, message="second alarm")
        [_, (_, _, raised2, scope2)] = _alarms(fresh_db_url)
        assert scope2 == "demo/el-b1-2" and abs((raised2 - t2).total_seconds() - 4.0) < 0.01
    finally:
        client.disconnect()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
