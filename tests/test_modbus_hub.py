"""End to end: the demo site's Modbus devices, served by pymodbus's own TCP servers, polled by
the hub (`RunningHub` + `ModbusComponent`) into PostgreSQL: readings, status, events."""

from __future__ import annotations

import struct
from pathlib import Path

import psycopg

from drivers.modbus.component import ModbusComponent
from tests.hubproc import RunningHub
from tests.modbus_testserver import PymodbusServer
from tests.support import ROOT, wait_for


def _rows(db_url: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(db_url) as c:
        return c.execute(sql, params).fetchall()


def _latest(db_url: str, device: str) -> dict[str, tuple]:
    rows = _rows(db_url, """SELECT DISTINCT ON (r.metric) r.metric, r.value, r.text_value, r.quality
                              FROM readings r JOIN devices d ON d.id = r.device_id
                             WHERE d.device_id = %s ORDER BY r.metric, r.ts DESC""", device)
    return {metric: (value, text, quality) for metric, value, text, quality in rows}


def _status(db_url: str, device: str) -> bool | None:
    rows = _rows(db_url, "SELECT online FROM device_status s JOIN devices d ON d.id = s.device_id WHERE d.device_id = %s", device)
    return rows[0][0] if rows else None


def _events(db_url: str, device: str) -> list[str]:
    rows = _rows(db_url, """SELECT e.code FROM events e JOIN devices d ON d.id = e.device_id
                             WHERE d.device_id = %s ORDER BY e.ts""", device)
    return [code for (code,) in rows]


def test_demo_modbus_devices_poll_into_the_store(fresh_db_url: str, broker, tmp_path: Path) -> None:
    with PymodbusServer(units=[1]) as lift, PymodbusServer(units=[1]) as meter:
        text = (ROOT / "examples/sites/demo.yaml").read_text()
        text = text.replace("port: 15020", f"port: {lift.port}").replace("port: 15021", f"port: {meter.port}")
        text = text.replace("heartbeat_s: 10", "heartbeat_s: 1")  # offline after 3 s, not 30
        registry = tmp_path / "demo.yaml"
        registry.write_text(text)
        # The demo lift's register map (docs/modbus.md): flags word, then numbers, uint32, float32.
        lift.set_words(1, "holding", 0, [0b000011, 1, 7, 0, 1, 150, 455, 0])
        lift.set_words(1, "holding", 8, [0x0001, 0xE240])  # trips 123456
        lift.set_words(1, "holding", 10, list(struct.unpack(">HH", struct.pack(">f", 1234.5))))
        meter.set_words(1, "input", 0, [42, 58, 0, 12345])
        with RunningHub(fresh_db_url, broker.url, registry, components=[ModbusComponent()]):
            wait_for(lambda: len(_latest(fresh_db_url, "el-b3-1")) == 15 and len(_latest(fresh_db_url, "meter-garage")) == 4,
                     15, message="all Modbus metrics stored")
            lift_now = _latest(fresh_db_url, "el-b3-1")
            assert lift_now["running"] == (1.0, None, 0)
            assert lift_now["door_zone"] == (1.0, None, 0)
            assert lift_now["passenger"] == (0.0, None, 0)
            assert lift_now["direction"] == (1.0, "up", 0)
            assert lift_now["floor"] == (7.0, None, 0)
            assert lift_now["door_state"] == (0.0, "closed_locked", 0)
            assert lift_now["service_mode"] == (1.0, "normal", 0)
            assert lift_now["speed"][0] == 1.5 and lift_now["load"][0] == 45.5
            assert lift_now["trips"] == (123456.0, None, 0)
            assert lift_now["running_hours"] == (1234.5, None, 0)
            meter_now = _latest(fresh_db_url, "meter-garage")
            assert meter_now == {"free_spaces": (42.0, None, 0), "occupied_spaces": (58.0, None, 0),
                                 "fees_today": (123.45, None, 0), "barrier_fault": (0.0, None, 0)}
            wait_for(lambda: _status(fresh_db_url, "el-b3-1") is True, 5, message="lift online")
            assert {"running.on", "door_zone.on", "online"} <= set(_events(fresh_db_url, "el-b3-1"))

            meter.set_bits(1, "discrete", 0, [True])
            wait_for(lambda: "barrier_fault.on" in _events(fresh_db_url, "meter-garage"), 10, message="fault event")

            lift.stop()  # the lift controller goes away mid-run
            wait_for(lambda: _status(fresh_db_url, "el-b3-1") is False, 15, message="lift offline")
            bad = _rows(fresh_db_url, """SELECT r.value, r.text_value FROM readings r JOIN devices d ON d.id = r.device_id
                                          WHERE d.device_id = 'el-b3-1' AND r.quality = 2""")
            assert bad and all(value is None and text is None for value, text in bad)
            zeros = _rows(fresh_db_url, """SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id
                                            WHERE d.device_id = 'el-b3-1' AND r.quality <> 0 AND r.value IS NOT NULL""")
            assert zeros == [(0,)]
            assert _events(fresh_db_url, "el-b3-1")[-1] == "offline"
            assert _status(fresh_db_url, "meter-garage") is True  # the other endpoint is unaffected

            lift.start()
            wait_for(lambda: _status(fresh_db_url, "el-b3-1") is True, 15, message="lift back online")
            assert _events(fresh_db_url, "el-b3-1")[-1] == "online"
            wait_for(lambda: _latest(fresh_db_url, "el-b3-1")["floor"] == (7.0, None, 0), 5, message="good reads again")
