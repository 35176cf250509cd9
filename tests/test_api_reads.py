"""Reads through HTTP: live status, latest values, history from rollups, events, dead letters,
visitor passes for the gate, the alarm stream, and `hub users add`."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest

from hub.store.rollups import refresh_rollups_now
from tests.api_support import ApiHub, start_api_hub
from tests.support import ROOT, create_database, drop_database


@pytest.fixture(scope="module")
def api(pg_server, broker, tmp_path_factory) -> Iterator[ApiHub]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    try:
        yield from start_api_hub(url, broker.url, tmp_path_factory.mktemp("api-reads"), client_id="hub-api-reads")
    finally:
        drop_database(pg_server.admin_url, name)


def test_device_list_status_sort_and_pagination(api: ApiHub) -> None:
    lift = api.device_id("demo", "el-b1-1")
    api.sql("INSERT INTO device_status (device_id, online, changed_at, last_seen) VALUES (%s, true, now(), now())", lift)
    with api.client("olga") as c:
        online = c.get("/devices", params={"online": True}).json()["items"]
        assert [d["device_id"] for d in online] == ["el-b1-1"]
        assert online[0]["status"]["online"] is True
        names: list[str] = []
        cursor = None
        while True:
            params: dict[str, object] = {"sort": "device_id", "order": "desc", "limit": 4}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/devices", params=params).json()
            names += [d["device_id"] for d in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert names == sorted(names, reverse=True) and len(names) == 16
        lifts = c.get("/devices", params={"kind": "elevator", "building": "b1"}).json()["items"]
        assert {d["device_id"] for d in lifts} == {"el-b1-1", "el-b1-2"}


def test_latest_values_and_history_downsampling(api: ApiHub) -> None:
    lift = api.device_id("demo", "el-b1-2")
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=2)
    with psycopg.connect(api.db_url) as conn:
        conn.execute(
            """INSERT INTO readings (ts, device_id, metric, value)
               SELECT t, %s, 'floor', extract(minute FROM t)::int %% 10 FROM generate_series(%s::timestamptz, %s, interval '30 seconds') t""",
            (lift, start, end - timedelta(seconds=30)),
        )
        conn.execute("INSERT INTO readings (ts, device_id, metric, value, text_value) VALUES (%s, %s, 'door_state', 1, 'open')",
                     (end - timedelta(minutes=5), lift))
        conn.commit()
        refresh_rollups_now(conn, start, end)
    with api.client("tom") as c:
        detail = c.get(f"/devices/{lift}").json()
        latest = {v["metric"]: v for v in detail["latest"]}
        assert latest["door_state"]["text_value"] == "open"
        assert latest["floor"]["ts"].startswith((end - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:30"))
        raw = c.get(f"/devices/{lift}/history", params={"metric": "floor", "from": (end - timedelta(hours=1)).isoformat(),
                                                        "to": end.isoformat()}).json()
        assert raw["resolution"] == "raw" and len(raw["points"]) == 120
        minute = c.get(f"/devices/{lift}/history", params={"metric": "floor", "from": (end - timedelta(days=1)).isoformat(),
                                                           "to": end.isoformat()}).json()
        assert minute["resolution"] == "1m" and len(minute["points"]) == 1440
        assert all(p["samples"] == 2 for p in minute["points"])
        hourly = c.get(f"/devices/{lift}/history", params={"metric": "floor", "from": start.isoformat(), "to": end.isoformat(),
                                                           "resolution": "1h"}).json()
        assert len(hourly["points"]) == 48 and hourly["points"][0]["min"] == 0 and hourly["points"][0]["max"] == 9
        bad = c.get(f"/devices/{lift}/history", params={"metric": "floor", "from": end.isoformat(), "to": start.isoformat()})
        assert bad.status_code == 422
        naive = c.get(f"/devices/{lift}/history", params={"metric": "floor", "from": "2026-01-01T00:00:00"})
        assert naive.status_code == 422 and "time zone" in naive.json()["error"]["message"]


def test_events_and_dead_letters(api: ApiHub) -> None:
    gate = api.device_id("demo", "gate-north")
    rgate = api.device_id("riverside", "gate-r")
    api.sql("INSERT INTO events (ts, device_id, code, data) VALUES (now(), %s, 'door_forced', '{}'), (now(), %s, 'door_forced', '{}')",
            gate, rgate)
    api.sql("INSERT INTO dead_letters (source, topic, payload, reason) VALUES ('mqtt', 't', '\\x7b7d', 'bad JSON')")
    with api.client("rita") as c:
        events = c.get("/events", params={"code": "door_forced"}).json()["items"]
        assert [e["device"] for e in events] == ["gate-r"]
    with api.client("root") as c:
        assert len(c.get("/events", params={"code": "door_forced"}).json()["items"]) == 2
        dead = c.get("/dead-letters").json()["items"]
        assert dead[0]["reason"] == "bad JSON" and dead[0]["payload"] == "{}"


def test_visitor_pass_window_gates_uses_and_revocation(api: ApiHub) -> None:
    now = datetime.now(UTC)
    with api.client("bella") as c:
        r = c.post("/visitor-passes", json={"site_id": "demo", "gates": ["gate-north", "gate-south"], "visitor": "Ms Wu",
                                            "valid_from": (now - timedelta(minutes=1)).isoformat(),
                                            "valid_until": (now + timedelta(hours=1)).isoformat(), "max_uses": 2})
        assert r.status_code == 201, r.text
        code, pid = r.json()["code"], r.json()["id"]
        assert c.post("/visitor-passes", json={"site_id": "demo", "gates": ["el-b1-1"], "visitor": "x",
                                               "valid_from": now.isoformat(), "valid_until": (now + timedelta(hours=1)).isoformat()}
                      ).status_code == 422
        assert c.get(f"/visitor-passes/{code}/check", params={"gate": "gate-north"}).json()["reason"] == "ok"
        assert c.get(f"/visitor-passes/{code}/check", params={"gate": "door-b2-lobby"}).json()["reason"] == "wrong_gate"
        uses = [c.post(f"/visitor-passes/{code}/use", params={"gate": "gate-north"}).json() for _ in range(3)]
        assert [(u["granted"], u["reason"], u["uses_left"]) for u in uses] == [(True, "ok", 1), (True, "ok", 0), (False, "used_up", 0)]
        assert c.get("/visitor-passes/nosuchcode/check", params={"gate": "gate-north"}).json()["reason"] == "unknown"
        r2 = c.post("/visitor-passes", json={"site_id": "demo", "gates": ["gate-north"], "visitor": "Mr Ma",
                                             "valid_from": now.isoformat(), "valid_until": (now + timedelta(hours=1)).isoformat()})
        assert c.post(f"/visitor-passes/{r2.json()['id']}/revoke").status_code == 200
        assert c.post(f"/visitor-passes/{r2.json()['code']}/use", params={"gate": "gate-north"}).json()["reason"] == "revoked"
    with api.client("rita") as c:  # another site's user learns nothing about the pass
        assert c.get(f"/visitor-passes/{code}/check", params={"gate": "gate-north"}).json()["reason"] == "unknown"
        assert c.post(f"/visitor-passes/{pid}/revoke").status_code == 404
    logged = api.sql("SELECT granted, reason FROM visitor_pass_checks WHERE pass_id = %s ORDER BY id", pid)
    assert logged == [(True, "ok"), (True, "ok"), (False, "used_up")]


def test_alarm_stream_is_filtered_by_scope(api: ApiHub) -> None:
    lines: list[str] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token('olga')}"}, timeout=30) as c, \
                c.stream("GET", "/streams/alarms") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                ready.set()
                lines.append(line)
                if "stream-demo" in line:
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10)
    time.sleep(0.3)
    tag = uuid.uuid4().hex[:6]
    for site in ("riverside", "demo"):
        api.sql("""INSERT INTO alarms (rule_id, site_id, scope_key, kind, severity, title, raised_at)
                   VALUES (%s, %s, %s, 'test', 'minor', 't', now())""", f"stream-{site}", site, tag)
    t.join(10)
    data = [ln for ln in lines if ln.startswith("data:")]
    assert len(data) == 1 and '"site_id":"demo"' in data[0], lines


def test_alarm_list_top_level_leaves_out_grouped_children(api: ApiHub) -> None:
    """`top_level=true`: incidents only, by the dashboards' rule (rules.alarms.OWN_INCIDENT);
    without it (or `false`) every alarm, as before."""
    t0 = datetime(2021, 3, 1, 8, 0, tzinfo=UTC)   # a window of its own in the shared database
    lift, gate = api.device_id("demo", "el-b2-1"), api.device_id("demo", "door-b2-lobby")

    def alarm(rule: str, device: int | None, kind: str, minutes: int, *, parent: int | None = None,
              cleared: bool = False, closed: bool = False) -> int:
        state = "cleared" if closed else "cleared_unack" if cleared else "active"
        at = t0 + timedelta(minutes=minutes)
        [(aid,)] = api.sql(
            """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, state, title, raised_at,
                                   cleared_at, closed_at, parent_id)
               VALUES (%s, 'demo', %s, %s, %s, 'major', %s, %s, %s, %s, %s, %s) RETURNING id""",
            f"top-{rule}", device, f"demo/top-{rule}", kind, state, rule, at, at if cleared or closed else None,
            at if closed else None, parent)
        return int(aid)

    power = alarm("power", None, "building_power_loss", 2)
    offline = alarm("offline", gate, "device_offline", 1, parent=power)        # under a root that is up
    rescued = alarm("trapped", lift, "entrapment", 10, closed=True)
    fault = alarm("fault", lift, "elevator_fault", 9, parent=rescued)          # left up by its root
    button = alarm("button", lift, "alarm_button", 9, parent=rescued, closed=True)  # history: stays grouped
    window = {"from": t0.isoformat(), "to": (t0 + timedelta(hours=1)).isoformat()}
    with api.client("olga") as c:
        def ids(**params: object) -> list[int]:
            r = c.get("/alarms", params={**window, **params})
            assert r.status_code == 200, r.text
            return [a["id"] for a in r.json()["items"]]

        assert ids() == ids(top_level=False) == [rescued, button, fault, power, offline]   # newest first
        assert ids(top_level=True) == [rescued, fault, power]
        assert ids(top_level=True, open=True) == [fault, power]
        assert ids(top_level=True, open=False) == [rescued]
        assert c.get("/alarms", params={"top_level": "maybe"}).status_code == 422
        page = c.get("/alarms", params={**window, "top_level": True, "limit": 2}).json()
        rest = c.get("/alarms", params={**window, "top_level": True, "cursor": page["next_cursor"]}).json()
        assert [a["id"] for a in page["items"] + rest["items"]] == [rescued, fault, power]


def test_hub_users_add_cli_reads_password_without_echo(api: ApiHub) -> None:
    env = {**os.environ, "HUB_DATABASE_URL": api.db_url, "PATH": os.environ.get("PATH", "")}
    env.pop("HUB_NEW_PASSWORD", None)
    done = subprocess.run([sys.executable, "-m", "hub", "users", "add", "cli-op", "--role", "operator", "--sites", "demo,riverside",
                           "--password-stdin"], input="a fine password\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "a fine password" not in done.stdout + done.stderr
    with httpx.Client(base_url=api.url) as c:
        tok = c.post("/auth/token", data={"username": "cli-op", "password": "a fine password"}).json()["access_token"]
        me = c.get("/auth/me", headers={"Authorization": f"Bearer {tok}"}).json()
    assert (me["role"], me["sites"]) == ("operator", ["demo", "riverside"])
    short = subprocess.run([sys.executable, "-m", "hub", "users", "add", "x", "--role", "admin", "--password-stdin"],
                           input="short\n", capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert short.returncode == 2 and "8 characters" in short.stderr
    assert api.sql("SELECT actor LIKE 'cli:%%', action FROM audit_log WHERE target = (SELECT 'user:' || id FROM api_users WHERE username = 'cli-op') ORDER BY id") \
        == [(True, "user.create"), (False, "auth.login")]
