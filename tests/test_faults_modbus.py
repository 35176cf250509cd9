"""Modbus devices disappearing and coming back: pymodbus's own TCP servers stopped and started
under the hub's poller. While a device is away its readings are stored with bad quality and no
value (never 0), it goes offline, and it comes back online with good readings."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import psycopg
import pytest

from tests import faults
from tests.hubproc import RunningHub
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow]

_MISSING = [m for m in ("drivers.modbus.component", "tests.modbus_testserver") if importlib.util.find_spec(m) is None]


def _rows(db_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute(sql, params).fetchall()


def _status(db_url: str, device: str) -> bool | None:
    rows = _rows(db_url, "SELECT online FROM device_status s JOIN devices d ON d.id = s.device_id WHERE d.device_id = %s", device)
    return rows[0][0] if rows else None


def _quality_counts(db_url: str, device: str) -> dict[int, int]:
    return dict(_rows(db_url, """SELECT r.quality, count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                                  WHERE d.device_id = %s GROUP BY 1""", device))


@pytest.mark.skipif(bool(_MISSING), reason=f"Modbus poller not present: {', '.join(_MISSING)} missing "
                    "(the Modbus driver lands from the modbus branch)")
def test_modbus_device_disappears_and_comes_back(fresh_db_url: str, broker, tmp_path: Path) -> None:
    from drivers.modbus.component import ModbusComponent
    from tests.modbus_testserver import PymodbusServer

    cycles = faults.size(1, 3)
    away_s = faults.size(4, 10)
    with PymodbusServer(units=[1]) as lift, PymodbusServer(units=[1]) as meter:
        text = (ROOT / "examples/sites/demo.yaml").read_text()
        text = text.replace("port: 15020", f"port: {lift.port}").replace("port: 15021", f"port: {meter.port}")
        text = text.replace("heartbeat_s: 10", "heartbeat_s: 1")  # offline after a few seconds
        registry = tmp_path / "demo.yaml"
        registry.write_text(text)
        lift.set_words(1, "holding", 0, [0b000011, 1, 7, 0, 1, 150, 455, 0])
        meter.set_words(1, "input", 0, [42, 58, 0, 12345])
        with RunningHub(fresh_db_url, broker.url, registry, client_id="faults-modbus", components=[ModbusComponent()]):
            wait_for(lambda: _status(fresh_db_url, "el-b3-1") is True, 20, message="lift online")
            for _ in range(cycles):
                lift.stop()
                wait_for(lambda: _status(fresh_db_url, "el-b3-1") is False, 20, message="lift offline")
                time.sleep(away_s)
                good_before = _quality_counts(fresh_db_url, "el-b3-1").get(0, 0)
                lift.start()
                wait_for(lambda: _status(fresh_db_url, "el-b3-1") is True, 20, message="lift back online")
                wait_for(lambda before=good_before: _quality_counts(fresh_db_url, "el-b3-1").get(0, 0) > before, 10,
                         message="good reads again")
            assert _status(fresh_db_url, "meter-garage") is True  # the other endpoint was unaffected
    q = _quality_counts(fresh_db_url, "el-b3-1")
    zeros = _rows(fresh_db_url, """SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                                    WHERE d.device_id = 'el-b3-1' AND r.quality <> 0 AND r.value IS NOT NULL""")[0][0]
    events = [c for (c,) in _rows(fresh_db_url, """SELECT e.code FROM events e JOIN devices d ON d.id = e.device_id
                                                   WHERE d.device_id = 'el-b3-1' AND e.code IN ('online', 'offline')
                                                   ORDER BY e.ts""")]
    good, bad = q.get(0, 0), q.get(2, 0)
    stored = faults.count_stored(fresh_db_url)
    tally = faults.record(faults.Tally(
        scenario=f"Modbus lift controller away {cycles}× {away_s} s", sent=good + bad, stored=good + bad,
        duplicated=stored.rows - stored.distinct_rows, dead_lettered=stored.distinct_dead, expected_dead=0,
        detail=f"{good:,} good readings, {bad:,} bad-quality (no value) while away, {zeros} failures stored as values; "
               f"status events {' → '.join(events)}"))
    assert bad > 0 and zeros == 0
    assert events.count("offline") == cycles and events[-1] == "online"
    assert tally.lost == 0 and tally.duplicated == 0 and stored.dead == 0
