"""Commands to a Modbus lift end to end: API → commands table → dispatcher → Modbus driver →
the project's lift simulator (a real pymodbus server) → read-back → command `done` or `failed`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.modbus.component import ModbusComponent
from hub.registry import load_registry
from simulators.runner import SimOptions, Simulation
from tests.api_support import ApiHub
from tests.cmdint_support import api_hub, blocking, command, send_command, site_registry
from tests.sims_support import until
from tests.support import create_database, drop_database

LIFT = ("demo", "el-b3-1")


@pytest.fixture
def db(pg_server) -> Iterator[str]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    yield url
    drop_database(pg_server.admin_url, name)


async def _finished(api: ApiHub, command_id: str, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        cmd = await blocking(command, api, "olga", command_id)
        if cmd["state"] in ("done", "failed", "rejected", "expired", "timed_out"):
            return cmd
        assert time.monotonic() < deadline, f"command {command_id} still {cmd['state']}"
        await asyncio.sleep(0.2)


def _latest(api: ApiHub, metric: str) -> tuple[float | None, int] | None:
    rows = api.sql("""SELECT r.value, r.quality FROM readings r JOIN devices d ON d.id = r.device_id
                       WHERE d.site_id = %s AND d.device_id = %s AND r.metric = %s ORDER BY r.ts DESC LIMIT 1""",
                   *LIFT, metric)
    return (rows[0][0], rows[0][1]) if rows else None


async def test_lift_commands_are_written_read_back_and_audited(db, broker, tmp_path: Path) -> None:
    folder, ports = site_registry(tmp_path)
    registry = load_registry(folder)
    async with Simulation(registry, None, options=SimOptions(mqtt=False, modbus_ports=ports, speed=5)) as sim, \
            api_hub(db, broker.url, folder, extra=[ModbusComponent()]) as api:
        lift = sim.fleet.devices[LIFT]
        assert lift.service_mode == 1

        out = await blocking(send_command, api, "olga", *LIFT, "out_of_service", {"reason": "annual inspection"})
        done = await _finished(api, out["id"])
        assert done["state"] == "done", done
        assert "service_mode='out_of_service'" in done["detail"] or "service_mode=0" in done["detail"]
        assert lift.service_mode == 0                       # the simulated controller changed mode
        await until(lambda: _latest(api, "service_mode") == (0.0, 0), what="read-back stored as a reading")

        back = await blocking(send_command, api, "olga", *LIFT, "back_to_service")
        assert (await _finished(api, back["id"]))["state"] == "done"
        assert lift.service_mode == 1

        home = await blocking(send_command, api, "olga", *LIFT, "return_to_main_floor")
        finished = await _finished(api, home["id"])
        assert finished["state"] == "done", finished
        assert "call_floor=1" in finished["detail"]
        # The car really goes to the main floor and the call clears once it is there.
        await until(lambda: lift.floor == 1 and lift.landing_call is None and lift.door_state in (1, 2), within=60,
                    what="car at the main floor with the call served")

        # Every register write is in the audit log with what was asked and what read back.
        writes = api.sql("""SELECT after->>'metric', after->>'requested', after->>'read_back', after->>'verified', after->>'command'
                              FROM audit_log WHERE action = 'modbus.write' AND target = 'device:demo/el-b3-1' ORDER BY id""")
        assert [(m, req, ok) for m, req, _, ok, _ in writes] == [
            ("service_mode", "out_of_service", "true"), ("service_mode", "normal", "true"), ("call_floor", "1.0", "true")]
        assert [c for *_, c in writes] == [out["id"], back["id"], home["id"]]
        states = api.sql("SELECT target, after->>'state' FROM audit_log WHERE action = 'command.done' ORDER BY id")
        assert [t for t, _ in states] == [f"command:{out['id']}", f"command:{back['id']}", f"command:{home['id']}"]


async def test_refused_value_and_silent_lift_end_failed_with_the_reason(db, broker, tmp_path: Path) -> None:
    folder, ports = site_registry(tmp_path)
    registry = load_registry(folder)
    async with Simulation(registry, None, options=SimOptions(mqtt=False, modbus_ports=ports, speed=5)) as sim, \
            api_hub(db, broker.url, folder, extra=[ModbusComponent()]) as api:
        lift = sim.fleet.devices[LIFT]
        await until(lambda: _latest(api, "floor") is not None, what="first poll")
        lift.set_mode(2)  # inspection: the controller refuses landing calls (exception 3)
        refused = await blocking(send_command, api, "olga", *LIFT, "return_to_main_floor")
        failed = await _finished(api, refused["id"])
        assert failed["state"] == "failed"
        assert "call_floor" in failed["detail"] and "refused the value" in failed["detail"], failed["detail"]
        assert lift.landing_call is None and lift.service_mode == 2

        lift.powered = False  # the controller stops answering: timeouts
        silent = await blocking(send_command, api, "olga", *LIFT, "back_to_service")
        failed = await _finished(api, silent["id"], within=30)
        assert failed["state"] == "failed"
        assert "no answer" in failed["detail"] or "unreachable" in failed["detail"], failed["detail"]
        assert lift.service_mode == 2
        audited = api.sql("""SELECT after->>'verified', after->>'error' FROM audit_log
                              WHERE action = 'modbus.write' ORDER BY id""")
        assert len(audited) == 2 and all(v == "false" and e for v, e in audited)
        assert api.sql("SELECT count(*) FROM audit_log WHERE action = 'command.failed'") == [(2,)]
