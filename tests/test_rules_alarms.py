"""Alarm lifecycle on the real database: states, history, audit, one open alarm per scope."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hub.registry import load_registry
from hub.store.registry_sync import sync_registry
from rules import alarms
from tests.support import ROOT


@pytest.fixture
def db(fresh_db_url):
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        ids = sync_registry(conn, load_registry(ROOT / "examples" / "sites" / "demo.yaml"), actor="test")
        yield fresh_db_url, conn, ids


def _raise(conn, scope="demo/el-b1-1", rule="entrapment", device=None):
    return alarms.raise_alarm(conn, rule_id=rule, scope_key=scope, site_id="demo", device_id=device, kind="entrapment",
                              severity="critical", title="trapped", raised_at=datetime.now(UTC), detail={"x": 1})


def _history(conn, alarm_id):
    return conn.execute("SELECT from_state, to_state, actor, action FROM alarm_history WHERE alarm_id = %s ORDER BY id",
                        (alarm_id,)).fetchall()


def test_lifecycle_active_ack_clear_writes_history_and_audit(db):
    _, conn, ids = db
    alarm_id, new = _raise(conn, device=ids[("demo", "el-b1-1")])
    assert new
    again, new2 = _raise(conn)
    assert (again, new2) == (alarm_id, False)
    assert alarms.acknowledge(conn, alarm_id, "op-1", "on it") == "acknowledged"
    with pytest.raises(alarms.InvalidTransition):
        alarms.acknowledge(conn, alarm_id, "op-1")
    alarms.comment(conn, alarm_id, "op-1", "called the lift company")
    alarms.assign(conn, alarm_id, "op-1", "tech-liu")
    alarms.condition_cleared(conn, rule_id="entrapment", scope_key="demo/el-b1-1", at=datetime.now(UTC))
    row = alarms.get_alarm(conn, alarm_id)
    assert row["state"] == "cleared" and row["closed_at"] is not None and row["assignee"] == "tech-liu"
    assert _history(conn, alarm_id) == [
        (None, "active", "rules", "raise"), ("active", "acknowledged", "op-1", "acknowledge"),
        ("acknowledged", "acknowledged", "op-1", "comment"), ("acknowledged", "acknowledged", "op-1", "assign"),
        ("acknowledged", "cleared", "rules", "clear")]
    audit = conn.execute("SELECT actor, action, target FROM audit_log WHERE target = %s ORDER BY id", (f"alarm:{alarm_id}",)).fetchall()
    assert audit == [("op-1", "alarm.acknowledge", f"alarm:{alarm_id}"), ("op-1", "alarm.comment", f"alarm:{alarm_id}"),
                     ("op-1", "alarm.assign", f"alarm:{alarm_id}")]
    # Closed: the next raise is a new alarm.
    third, new3 = _raise(conn)
    assert new3 and third != alarm_id


def test_cleared_unacknowledged_returns_to_active_and_ack_closes(db):
    _, conn, _ = db
    alarm_id, _ = _raise(conn, scope="demo/x")
    alarms.condition_cleared(conn, rule_id="entrapment", scope_key="demo/x", at=datetime.now(UTC))
    assert alarms.get_alarm(conn, alarm_id)["state"] == "cleared_unack"
    assert _raise(conn, scope="demo/x") == (alarm_id, False)
    assert alarms.get_alarm(conn, alarm_id)["state"] == "active"
    alarms.condition_cleared(conn, rule_id="entrapment", scope_key="demo/x", at=datetime.now(UTC))
    assert alarms.acknowledge(conn, alarm_id, "op") == "cleared"
    assert alarms.get_alarm(conn, alarm_id)["closed_at"] is not None


def test_shelve_expiry_unshelve_and_operator_clear(db):
    _, conn, _ = db
    alarm_id, _ = _raise(conn, scope="demo/s")
    with pytest.raises(alarms.AlarmError):
        alarms.shelve(conn, alarm_id, "op", datetime.now(UTC) - timedelta(seconds=1))
    alarms.shelve(conn, alarm_id, "op", datetime.now(UTC) + timedelta(hours=1), "known issue")
    assert alarms.get_alarm(conn, alarm_id)["state"] == "shelved"
    assert alarms.expire_shelves(conn) == []
    assert alarms.expire_shelves(conn, datetime.now(UTC) + timedelta(hours=2)) == [alarm_id]
    assert alarms.get_alarm(conn, alarm_id)["state"] == "active"
    alarms.shelve(conn, alarm_id, "op", datetime.now(UTC) + timedelta(hours=1))
    assert alarms.unshelve(conn, alarm_id, "op") == "active"
    assert alarms.clear(conn, alarm_id, "op", "false alarm") == "cleared"
    with pytest.raises(alarms.InvalidTransition):
        alarms.clear(conn, alarm_id, "op")
    with pytest.raises(alarms.AlarmNotFound):
        alarms.acknowledge(conn, 999_999, "op")


def test_maintenance_windows(db):
    _, conn, ids = db
    d = ids[("demo", "gate-south")]
    assert alarms.devices_in_maintenance(conn) == set()
    alarms.start_maintenance(conn, d, "tech-zhou", reason="replacing reader")
    assert alarms.devices_in_maintenance(conn) == {d}
    assert alarms.end_maintenance(conn, d, "tech-zhou") == 1
    assert alarms.devices_in_maintenance(conn) == set()


def test_two_evaluators_raising_at_once_make_one_row(db):
    url, conn, _ = db
    rounds, workers = 25, 4
    barrier = threading.Barrier(workers)
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def evaluator() -> None:
        with psycopg.connect(url, autocommit=True) as own:
            for i in range(rounds):
                barrier.wait()
                got = _raise(own, scope=f"demo/race-{i}", rule="race")
                with lock:
                    results.append(got)

    threads = [threading.Thread(target=evaluator) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = conn.execute("SELECT scope_key, count(*) FROM alarms WHERE rule_id = 'race' GROUP BY scope_key").fetchall()
    assert len(rows) == rounds and all(n == 1 for _, n in rows)
    assert sum(new for _, new in results) == rounds  # exactly one evaluator created each


def _child(conn, root_id, rule, scope, device):
    alarm_id, _ = alarms.raise_alarm(conn, rule_id=rule, scope_key=scope, site_id="demo", device_id=device, kind=rule,
                                     severity="major", title=rule, raised_at=datetime.now(UTC), parent_id=root_id)
    return alarm_id


def test_acknowledging_an_incident_acknowledges_the_symptoms_grouped_under_it(db):
    """Operators see incidents, not their children: acknowledging the root must not leave its
    symptoms active and unacknowledged where nobody looks."""
    _, conn, ids = db
    dev = ids[("demo", "el-b1-1")]
    root, _ = _raise(conn, device=dev)
    fault = _child(conn, root, "elevator_fault", "demo/el-b1-1#02", dev)
    button = _child(conn, root, "alarm_button", "demo/el-b1-1", dev)
    shelved = _child(conn, root, "stopped_outside_door_zone", "demo/el-b1-1", dev)
    alarms.condition_cleared(conn, rule_id="alarm_button", scope_key="demo/el-b1-1", at=datetime.now(UTC))
    alarms.shelve(conn, shelved, "op-1", datetime.now(UTC) + timedelta(hours=1), "known")
    other, _ = _raise(conn, scope="demo/el-b1-2", device=ids[("demo", "el-b1-2")])  # another incident

    assert alarms.acknowledge(conn, root, "op-1", "crew on the way") == "acknowledged"

    state = {a: alarms.get_alarm(conn, a)["state"] for a in (fault, button, shelved, other)}
    assert state == {fault: "acknowledged", button: "cleared", shelved: "shelved", other: "active"}
    assert alarms.get_alarm(conn, fault)["acknowledged_by"] == "op-1"
    assert _history(conn, fault)[-1] == ("active", "acknowledged", "op-1", "acknowledge")
    note = conn.execute("SELECT note FROM alarm_history WHERE alarm_id = %s ORDER BY id DESC LIMIT 1", (fault,)).fetchone()
    assert note == (f"with incident {root}: crew on the way",)
    audited = conn.execute("SELECT target FROM audit_log WHERE action = 'alarm.acknowledge' ORDER BY id").fetchall()
    assert audited == [(f"alarm:{root}",), (f"alarm:{fault}",), (f"alarm:{button}",)]


def test_a_child_still_up_after_its_root_cleared_is_its_own_incident_and_not_acknowledged_with_it(db):
    _, conn, ids = db
    dev = ids[("demo", "el-b1-1")]
    root, _ = _raise(conn, device=dev)
    fault = _child(conn, root, "elevator_fault", "demo/el-b1-1#02", dev)
    alarms.condition_cleared(conn, rule_id="entrapment", scope_key="demo/el-b1-1", at=datetime.now(UTC))
    assert alarms.acknowledge(conn, root, "op-1") == "cleared"
    assert alarms.get_alarm(conn, fault)["state"] == "active"
