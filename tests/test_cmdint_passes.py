"""Visitor passes end to end with the real gate simulator over MQTT: the API pushes a pass to its
gates as commands, the gate decides offline and reports each use as an event the hub counts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from hub.config import parse_mqtt_url
from hub.registry import load_registry
from simulators.devices.gate import Gate
from simulators.runner import SimOptions, Simulation
from tests.api_support import ApiHub
from tests.cmdint_support import api_hub, blocking, site_registry
from tests.sims_support import (
    clean_broker,  # noqa: F401  (fixture)
    until,
)
from tests.support import create_database, drop_database, mqtt_client

pytestmark = pytest.mark.usefixtures("clean_broker")


@pytest.fixture
def db(pg_server) -> Iterator[str]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    yield url
    drop_database(pg_server.admin_url, name)


def _create(api: ApiHub, gates: list[str], max_uses: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    with api.client("olga") as c:
        r = c.post("/visitor-passes", json={
            "site_id": "demo", "gates": gates, "visitor": "Ms. Guest", "max_uses": max_uses,
            "valid_from": (now - timedelta(minutes=1)).isoformat(), "valid_until": (now + timedelta(hours=2)).isoformat()})
        assert r.status_code == 201, r.text
        return dict(r.json())


def _pushes(api: ApiHub, pass_id: int, name: str) -> dict[str, tuple[str, str]]:
    rows = api.sql("""SELECT d.device_id, c.state, c.requested_by FROM commands c JOIN devices d ON d.id = c.device_id
                       WHERE c.name = %s AND c.idempotency_key LIKE %s""", name, f"visitor\\_pass:{pass_id}:%")
    return {gate: (state, who) for gate, state, who in rows}


def _uses(api: ApiHub, pass_id: int) -> int:
    return int(api.sql("SELECT uses FROM visitor_passes WHERE id = %s", pass_id)[0][0])


def _pass_events(api: ApiHub, pass_id: int) -> list[tuple[str, str, dict]]:
    rows = api.sql("""SELECT d.device_id, e.code, e.data FROM events e JOIN devices d ON d.id = e.device_id
                       WHERE e.data->>'method' = 'visitor_pass' AND e.data->>'pass_id' = %s ORDER BY e.ts""", str(pass_id))
    return [(gate, code, data) for gate, code, data in rows]


async def test_pass_pushed_used_counted_and_revoked(db, broker, tmp_path: Path) -> None:
    folder, _ = site_registry(tmp_path)
    registry = load_registry(folder)
    opts = SimOptions(modbus=False, client_prefix=f"p{uuid.uuid4().hex[:6]}", speed=2)
    async with Simulation(registry, parse_mqtt_url(broker.url), options=opts) as sim, \
            api_hub(db, broker.url, folder) as api:
        north: Gate = sim.fleet.devices[("demo", "gate-north")]  # type: ignore[assignment]
        south: Gate = sim.fleet.devices[("demo", "gate-south")]  # type: ignore[assignment]
        vp = await blocking(_create, api, ["gate-north", "gate-south"], 3)

        # Both gates of the set get the pass through the command path; the lobby door does not.
        await until(lambda: vp["code"] in north.passes and vp["code"] in south.passes, what="pass on both gates")
        done = await _poll(lambda: _pushes(api, vp["id"], "add_visitor_pass"),
                           lambda p: p == {"gate-north": ("done", "olga"), "gate-south": ("done", "olga")})
        assert done
        assert vp["code"] not in sim.fleet.devices[("demo", "door-b2-lobby")].passes  # type: ignore[attr-defined]
        assert north.passes[vp["code"]].pass_id == vp["id"]

        # A visitor shows it at the north gate: the gate opens and reports the use.
        assert north.present_pass(vp["code"]) is True
        await _poll(lambda: _uses(api, vp["id"]), lambda n: n == 1)
        events = await _poll(lambda: _pass_events(api, vp["id"]), lambda e: len(e) == 1)
        gate, code, data = events[0]
        assert (gate, code, data["pass_id"], data["uses_left"]) == ("gate-north", "granted", vp["id"], 2)
        assert "credential" not in data   # the code is a bearer secret: not in events
        checks = await blocking(api.sql, "SELECT gate, granted, reason, source FROM visitor_pass_checks WHERE pass_id = %s", vp["id"])
        assert checks == [("gate-north", True, "ok", "gate")]
        with api.client("olga") as c:
            listed = (await blocking(c.get, "/visitor-passes", params={"site": "demo"})).json()["items"]
        assert next(p for p in listed if p["id"] == vp["id"])["uses"] == 1

        # The same event delivered again (QoS 1 redelivery) counts nothing more.
        ev = await blocking(api.sql, """SELECT e.ts FROM events e WHERE e.code = 'granted' AND e.data->>'pass_id' = %s""",
                            str(vp["id"]))
        again = {"ts": int(ev[0][0].timestamp() * 1000), "code": "granted",
                 "data": {"method": "visitor_pass", "pass_id": vp["id"], "uses_left": 2}}
        client = mqtt_client(broker.host, broker.port, f"replay-{uuid.uuid4().hex[:6]}")
        try:
            client.publish("facility/demo/gate-north/event", orjson.dumps(again), qos=1).wait_for_publish(5)
        finally:
            client.loop_stop()
            client.disconnect()
        await asyncio.sleep(1.5)
        assert await blocking(_uses, api, vp["id"]) == 1

        # Revoked in the API → revoked on both gates → the south gate denies it.
        with api.client("olga") as c:
            r = await blocking(c.post, f"/visitor-passes/{vp['id']}/revoke")
        assert r.status_code == 200, r.text
        await _poll(lambda: _pushes(api, vp["id"], "revoke_visitor_pass"),
                    lambda p: p == {"gate-north": ("done", "olga"), "gate-south": ("done", "olga")})
        assert south.present_pass(vp["code"]) is False
        events = await _poll(lambda: _pass_events(api, vp["id"]), lambda e: len(e) == 2)
        assert events[1][:2] == ("gate-south", "denied") and events[1][2]["reason"] == "revoked"
        assert await blocking(_uses, api, vp["id"]) == 1
        audit = await blocking(api.sql, """SELECT action, count(*) FROM audit_log
                                            WHERE action LIKE 'visitor_pass.%%' OR after->>'visitor_pass' = %s
                                            GROUP BY action ORDER BY action""", str(vp["id"]))
        assert dict(audit) == {"command.create": 4, "visitor_pass.create": 1, "visitor_pass.revoke": 1}


async def test_used_up_pass_is_revoked_on_every_gate(db, broker, tmp_path: Path) -> None:
    folder, _ = site_registry(tmp_path)
    registry = load_registry(folder)
    opts = SimOptions(modbus=False, client_prefix=f"q{uuid.uuid4().hex[:6]}", speed=2)
    async with Simulation(registry, parse_mqtt_url(broker.url), options=opts) as sim, \
            api_hub(db, broker.url, folder) as api:
        north: Gate = sim.fleet.devices[("demo", "gate-north")]  # type: ignore[assignment]
        south: Gate = sim.fleet.devices[("demo", "gate-south")]  # type: ignore[assignment]
        vp = await blocking(_create, api, ["gate-north", "gate-south"], 1)
        await until(lambda: vp["code"] in north.passes and vp["code"] in south.passes, what="pass on both gates")
        assert north.present_pass(vp["code"]) is True
        # One use of one is spent: the hub takes the pass off both gates by itself.
        await _poll(lambda: _pushes(api, vp["id"], "revoke_visitor_pass"),
                    lambda p: p == {"gate-north": ("done", "hub"), "gate-south": ("done", "hub")})
        assert south.present_pass(vp["code"]) is False   # the south gate alone would still allow one use
        events = await _poll(lambda: _pass_events(api, vp["id"]), lambda e: len(e) == 2)
        assert [(g, c, d.get("reason")) for g, c, d in events] == [("gate-north", "granted", None),
                                                                    ("gate-south", "denied", "revoked")]
        assert await blocking(_uses, api, vp["id"]) == 1
        used_up = await blocking(api.sql, "SELECT actor, after FROM audit_log WHERE action = 'visitor_pass.used_up'")
        assert used_up == [("hub", {"uses": 1, "max_uses": 1})]
        with api.client("olga") as c:
            check = (await blocking(c.get, f"/visitor-passes/{vp['code']}/check", params={"gate": "gate-south"})).json()
        assert check["granted"] is False and check["reason"] == "used_up"

        # A use through the online endpoint spends the pass just the same and takes it off the gates.
        online = await blocking(_create, api, ["gate-north"], 1)
        await until(lambda: online["code"] in north.passes, what="second pass on the north gate")
        with api.client("olga") as c:
            used = (await blocking(c.post, f"/visitor-passes/{online['code']}/use", params={"gate": "gate-north"})).json()
        assert used["granted"] is True and used["uses_left"] == 0
        await _poll(lambda: _pushes(api, online["id"], "revoke_visitor_pass"), lambda p: p == {"gate-north": ("done", "hub")})
        assert north.present_pass(online["code"]) is False


async def _poll(fetch: Any, ok: Any, within: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await blocking(fetch)
        if ok(value):
            return value
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting; last value {value!r}"
        await asyncio.sleep(0.2)


async def test_pass_reaches_a_gate_that_was_offline_when_it_was_issued(db, broker, tmp_path: Path) -> None:
    folder, _ = site_registry(tmp_path)
    registry = load_registry(folder)
    async with api_hub(db, broker.url, folder) as api:
        vp = await blocking(_create, api, ["gate-south"], 2)
        # No gate is connected: the broker takes the command, no reply comes, the hub keeps resending.
        await _poll(lambda: _pushes(api, vp["id"], "add_visitor_pass"), lambda p: p == {"gate-south": ("sent", "olga")})
        await asyncio.sleep(1.5)
        assert await blocking(_pushes, api, vp["id"], "add_visitor_pass") == {"gate-south": ("sent", "olga")}
        attempts = await blocking(api.sql, "SELECT attempts FROM commands WHERE name = 'add_visitor_pass'")
        assert attempts[0][0] >= 2
        opts = SimOptions(modbus=False, client_prefix=f"r{uuid.uuid4().hex[:6]}", speed=2)
        async with Simulation(registry, parse_mqtt_url(broker.url), options=opts) as sim:   # the gate comes online
            south: Gate = sim.fleet.devices[("demo", "gate-south")]  # type: ignore[assignment]
            await _poll(lambda: _pushes(api, vp["id"], "add_visitor_pass"), lambda p: p == {"gate-south": ("done", "olga")})
            assert south.present_pass(vp["code"]) is True
            await _poll(lambda: _uses(api, vp["id"]), lambda n: n == 1)
