"""Command lifecycle through HTTP, the real broker and a simulated device that replies (paho)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest

from tests.api_support import ApiHub, add_users, start_api_hub
from tests.support import create_database, drop_database, mqtt_client, wait_for


class FakeDevice:
    """Subscribes to its command topics and answers each command with the scripted replies."""

    def __init__(self, host: str, port: int, site: str, device: str, replies: list[str]) -> None:
        self.site, self.device, self.replies = site, device, replies
        self.received: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.client = mqtt_client(host, port, f"dev-{device}-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.subscribe(f"facility/{site}/{device}/cmd/+", qos=1)[1]

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        command_id = msg.topic.rsplit("/", 1)[1]
        payload = json.loads(msg.payload)
        with self.lock:
            self.received.append((command_id, payload))
        for status in self.replies:
            client.publish(f"{msg.topic}/reply", json.dumps({"status": status, "detail": f"sim {status}"}), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def db(pg_server) -> Iterator[str]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    yield url
    drop_database(pg_server.admin_url, name)


@pytest.fixture
def api(db, broker, tmp_path) -> Iterator[ApiHub]:
    yield from start_api_hub(db, broker.url, tmp_path, client_id=f"hub-cmd-{uuid.uuid4().hex[:6]}")


def _state(api: ApiHub, user: str, command_id: str) -> str:
    with api.client(user) as c:
        return str(c.get(f"/commands/{command_id}").json()["state"])


def _send(api: ApiHub, user: str, device: str, name: str, args: dict | None = None, *, key: str | None = None,
          site: str = "demo", **extra: object):
    with api.client(user) as c:
        return c.post(f"/devices/{api.device_id(site, device)}/commands", json={"name": name, "args": args or {}, **extra},
                      headers={"Idempotency-Key": key or uuid.uuid4().hex})


def test_device_that_replies_accepted_then_done(api: ApiHub, broker) -> None:
    dev = FakeDevice(broker.host, broker.port, "demo", "gate-north", ["accepted", "done"])
    try:
        r = _send(api, "bella", "gate-north", "open_once")
        assert r.status_code == 201, r.text
        cmd = r.json()
        assert cmd["state"] == "queued" and not cmd["dangerous"]
        wait_for(lambda: _state(api, "bella", cmd["id"]) == "done", 10, message="done")
        with api.client("bella") as c:
            final = c.get(f"/commands/{cmd['id']}").json()
        assert final["accepted_at"] is not None and final["finished_at"] is not None
        assert final["detail"] == "sim done"
        assert dev.received[0][0] == cmd["id"]
        assert dev.received[0][1]["name"] == "open_once" and dev.received[0][1]["args"] == {}
        assert datetime.fromisoformat(dev.received[0][1]["expires_at"]) > datetime.now(UTC)
    finally:
        dev.close()
    audit = api.sql("SELECT actor, origin, action, before->>'state', after->>'state' FROM audit_log WHERE target = %s ORDER BY id",
                    f"command:{cmd['id']}")
    assert audit == [("bella", "127.0.0.1", "command.create", None, "queued"),
                     ("device:demo/gate-north", "mqtt", "command.accepted", "sent", "accepted"),
                     ("device:demo/gate-north", "mqtt", "command.done", "accepted", "done")]


def test_device_that_rejects(api: ApiHub, broker) -> None:
    dev = FakeDevice(broker.host, broker.port, "demo", "el-b1-1", ["rejected"])
    try:
        r = _send(api, "tom", "el-b1-1", "back_to_service")
        assert r.status_code == 201, r.text
        wait_for(lambda: _state(api, "tom", r.json()["id"]) == "rejected", 10, message="rejected")
    finally:
        dev.close()


def test_silent_device_times_out_after_retries_and_late_reply_is_kept(api: ApiHub, broker) -> None:
    dev = FakeDevice(broker.host, broker.port, "demo", "gate-south", [])  # receives, never answers
    try:
        r = _send(api, "olga", "gate-south", "open_once", expires_in_s=2.5)
        cid = r.json()["id"]
        wait_for(lambda: _state(api, "olga", cid) == "sent", 5, message="sent")
        assert _state(api, "olga", cid) != "done"  # delivered is not done
        wait_for(lambda: _state(api, "olga", cid) == "timed_out", 10, message="timed_out")
        with api.client("olga") as c:
            final = c.get(f"/commands/{cid}").json()
        assert final["attempts"] >= 3  # resent every 0.5 s within expiry
        assert len({m[0] for m in dev.received}) == 1 and len(dev.received) >= 2
        late = mqtt_client(broker.host, broker.port)
        late.publish(f"facility/demo/gate-south/cmd/{cid}/reply", json.dumps({"status": "done"}), qos=1).wait_for_publish(5)
        late.disconnect()
        wait_for(lambda: api.sql("SELECT late_reply FROM commands WHERE id = %s", cid)[0][0] is not None, 10, message="late reply")
        assert _state(api, "olga", cid) == "timed_out"
        assert api.sql("SELECT actor, action, before->>'state' FROM audit_log WHERE target = %s AND actor = 'hub'",
                       f"command:{cid}") == [("hub", "command.timed_out", "sent")]
    finally:
        dev.close()


def test_reply_for_unknown_command_is_dead_lettered(api: ApiHub, broker) -> None:
    c = mqtt_client(broker.host, broker.port)
    c.publish("facility/demo/gate-south/cmd/nosuchcommand/reply", json.dumps({"status": "done"}), qos=1).wait_for_publish(5)
    c.disconnect()
    wait_for(lambda: api.sql("SELECT reason FROM dead_letters WHERE topic LIKE %s", "%nosuchcommand%"), 10, message="dead letter")


def test_idempotent_retries_create_one_command(api: ApiHub) -> None:
    key = "retry-" + uuid.uuid4().hex
    first = _send(api, "olga", "gate-north", "open_once", key=key)
    again = [_send(api, "olga", "gate-north", "open_once", key=key) for _ in range(3)]
    assert first.status_code == 201
    assert [r.status_code for r in again] == [200, 200, 200]
    assert {r.json()["id"] for r in again} == {first.json()["id"]}
    assert api.sql("SELECT count(*) FROM commands WHERE idempotency_key = %s", key) == [(1,)]
    other = _send(api, "olga", "gate-north", "back_to_normal", key=key)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    with api.client("olga") as c:
        missing = c.post(f"/devices/{api.device_id('demo', 'gate-north')}/commands", json={"name": "open_once"})
    assert missing.status_code == 422 and "idempotency-key" in missing.json()["error"]["message"].lower()


def test_dangerous_command_waits_for_confirmation(api: ApiHub, broker) -> None:
    dev = FakeDevice(broker.host, broker.port, "demo", "fire-panel-1", ["accepted", "done"])
    try:
        r = _send(api, "tom", "fire-panel-1", "silence")
        cmd = r.json()
        assert r.status_code == 201 and cmd["state"] == "awaiting_confirmation" and cmd["dangerous"]
        with api.client("bella") as c:  # another user of lower role may not confirm (nor send it)
            assert c.post(f"/commands/{cmd['id']}/confirm").status_code == 403
        assert dev.received == []
        with api.client("tom") as c:
            assert c.post(f"/commands/{cmd['id']}/confirm").json()["state"] == "queued"
            assert c.post(f"/commands/{cmd['id']}/confirm").status_code == 409
        wait_for(lambda: _state(api, "tom", cmd["id"]) == "done", 10, message="done")
        assert api.sql("SELECT confirmed_by FROM commands WHERE id = %s", cmd["id"]) == [("tom",)]
    finally:
        dev.close()


def test_unconfirmed_command_expires(api: ApiHub) -> None:
    r = _send(api, "olga", "el-b1-2", "return_to_main_floor", expires_in_s=1)
    wait_for(lambda: _state(api, "olga", r.json()["id"]) == "expired", 10, message="expired")


@pytest.mark.parametrize(("user", "device", "name", "args", "status", "code"), [
    ("olga", "el-b1-1", "open_once", {}, 422, "command_not_allowed"),
    ("olga", "gate-north", "self_destruct", {}, 422, "command_not_allowed"),
    ("bella", "el-b1-1", "back_to_service", {}, 403, "forbidden"),
    ("tom", "gate-north", "lock", {"reason": "intruder"}, 403, "forbidden"),
    ("olga", "gate-north", "hold_open", {"duration_s": 99999, "reason": "move-in day"}, 422, "invalid"),
    ("olga", "gate-north", "open_once", {"force": True}, 422, "invalid"),
    ("olga", "fire-panel-1", "disable_detector", {"detector": "smoke-b1-f1"}, 422, "invalid"),
    ("olga", "fire-panel-1", "disable_detector", {"detector": "smoke-b1-f1", "reason": "dusty works",
                                                  "until": "2099-01-01T00:00:00Z"}, 422, "invalid"),
    ("olga", "fire-panel-1", "disable_detector", {"detector": "smoke-b1-f1", "reason": "dusty works",
                                                  "until": "+1h"}, 422, "command_not_supported"),
    ("olga", "el-r1", "back_to_service", {}, 404, "not_found"),
])
def test_safety_allow_list_and_roles(api: ApiHub, user, device, name, args, status, code) -> None:
    if args.get("until") == "+1h":
        args = {**args, "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    site = "riverside" if device == "el-r1" else "demo"
    r = _send(api, user, device, name, args, site=site)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert api.sql("SELECT count(*) FROM commands") == [(0,)]


def test_one_control_lease_per_device(api: ApiHub) -> None:
    assert _send(api, "olga", "gate-north", "open_once").status_code == 201
    r = _send(api, "bella", "gate-north", "open_once")
    assert r.status_code == 409 and r.json()["error"]["detail"]["holder"] == "olga"
    with api.client("bella") as c:
        assert c.delete(f"/devices/{api.device_id('demo', 'gate-north')}/lease").status_code == 409
        assert c.post(f"/devices/{api.device_id('demo', 'gate-north')}/lease").status_code == 409
    with api.client("olga") as c:
        assert c.delete(f"/devices/{api.device_id('demo', 'gate-north')}/lease").status_code == 204
    with api.client("bella") as c:
        lease = c.post(f"/devices/{api.device_id('demo', 'gate-north')}/lease")
        assert lease.status_code == 200 and lease.json()["holder"] == "bella"
    assert _send(api, "bella", "gate-north", "open_once").status_code == 201
    assert _send(api, "olga", "gate-north", "open_once").status_code == 409


def test_rate_limit_per_user_and_device(api: ApiHub) -> None:
    codes = [_send(api, "olga", "gate-south", "open_once").status_code for _ in range(7)]
    assert codes == [201] * 6 + [429]
    r = _send(api, "olga", "gate-south", "open_once")
    assert r.headers["retry-after"] == "60"


def test_modbus_device_without_a_writer_fails_honestly(api: ApiHub) -> None:
    r = _send(api, "olga", "el-b3-1", "back_to_service")
    wait_for(lambda: _state(api, "olga", r.json()["id"]) == "failed", 10, message="failed")
    assert "no Modbus command writer" in api.sql("SELECT detail FROM commands WHERE id = %s", r.json()["id"])[0][0]


def test_command_survives_a_hub_restart(db, broker, tmp_path) -> None:
    gen = iter(start_api_hub(db, broker.url, tmp_path / "a", client_id="hub-restart-a", api={"command_expiry_s": 30}))
    first = next(gen)
    r = _send(first, "olga", "gate-north", "open_once")
    cid = r.json()["id"]
    wait_for(lambda: _state(first, "olga", cid) == "sent", 5, message="sent")  # device offline: nobody answers
    next(gen, None)  # stop the hub
    assert first.sql("SELECT state FROM commands WHERE id = %s", cid) == [("sent",)]
    gen2 = iter(start_api_hub(db, broker.url, tmp_path / "b", client_id="hub-restart-a"))
    second = next(gen2)
    add_users(db)
    dev = FakeDevice(broker.host, broker.port, "demo", "gate-north", ["accepted", "done"])
    try:
        wait_for(lambda: _state(second, "olga", cid) == "done", 15, message="done after restart")
        assert dev.received[0][0] == cid
    finally:
        dev.close()
        next(gen2, None)
