"""`hub mqtt credentials` output loaded by a real Mosquitto: a device cannot publish as another."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from api.mqtt_credentials import mosquitto_hash, verify_mosquitto_hash
from hub.embedded.broker import MosquittoProcess
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.skipif(not MosquittoProcess.available(), reason="mosquitto not installed")


def _client(port: int, user: str, password: str) -> tuple[paho.Client, list[int]]:
    rc: list[int] = []
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{user}-{time.monotonic_ns()}")
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, ud, flags, reason, props: rc.append(reason.value)
    c.connect("127.0.0.1", port)
    c.loop_start()
    wait_for(lambda: rc, 5, message="CONNACK")
    return c, rc


def test_hash_format_matches_mosquitto_passwd(tmp_path) -> None:
    encoded = mosquitto_hash("s3cret-pass")
    assert encoded.startswith("$7$101$")
    assert verify_mosquitto_hash("s3cret-pass", encoded) and not verify_mosquitto_hash("wrong", encoded)
    passwd = tmp_path / "p"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "u", "s3cret-pass"], check=True)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("s3cret-pass", theirs)


def test_generated_acl_confines_each_device_to_its_own_topics(tmp_path) -> None:
    out = tmp_path / "auth"
    env = {"HUB_REGISTRY": str(ROOT / "examples" / "sites" / "demo.yaml"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "hub", "mqtt", "credentials", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    passwords = json.loads((out / "passwords.json").read_text())
    assert (out / "passwords.json").stat().st_mode & 0o077 == 0
    assert "demo.el-b1-1" in passwords and "demo.el-b3-1" not in passwords  # Modbus devices need none
    for pw in passwords.values():
        assert pw not in done.stdout and pw not in (out / "passwd").read_text()
    # (As root, MosquittoProcess keeps Mosquitto running as root so it can read pytest's 0700 folders.)
    broker = MosquittoProcess(tmp_path / "mosq", extra_config=(
        f"allow_anonymous false\npassword_file {out / 'passwd'}\nacl_file {out / 'acl'}\n"))
    broker.start()
    try:
        hub, rc = _client(broker.port, "hub", passwords["hub"])
        assert rc == [0]
        got: list[tuple[str, bytes]] = []
        lock = threading.Lock()

        def on_message(cl: paho.Client, ud: object, msg: paho.MQTTMessage) -> None:
            with lock:
                got.append((msg.topic, bytes(msg.payload)))

        hub.on_message = on_message
        hub.subscribe("facility/#", qos=1)
        time.sleep(0.3)
        lift, rc = _client(broker.port, "demo.el-b1-1", passwords["demo.el-b1-1"])
        assert rc == [0]
        lift.subscribe("facility/demo/el-b1-1/cmd/+", qos=1)
        lift_cmds: list[str] = []
        lift.on_message = lambda cl, ud, msg: lift_cmds.append(msg.topic)
        # As another device: the broker accepts the PUBACK but drops the message (MQTT 3.1.1 ACL).
        lift.publish("facility/demo/el-b1-2/telemetry", b'{"floor": 99}', qos=1).wait_for_publish(5)
        lift.publish("facility/demo/gate-north/event", b'{"code": "granted"}', qos=1).wait_for_publish(5)
        lift.publish("facility/demo/el-b1-1/telemetry", b'{"floor": 3}', qos=1).wait_for_publish(5)
        lift.publish("facility/demo/el-b1-1/cmd/abc/reply", b'{"status": "done"}', qos=1).wait_for_publish(5)
        wait_for(lambda: len(got) >= 2, 5, message="own messages at the hub")
        # The hub commands both lifts; only the lift's own command arrives.
        hub.publish("facility/demo/el-b1-2/cmd/c1", b"{}", qos=1).wait_for_publish(5)
        hub.publish("facility/demo/el-b1-1/cmd/c2", b"{}", qos=1).wait_for_publish(5)
        wait_for(lambda: lift_cmds, 5, message="own command")
        time.sleep(0.5)
        topics = sorted(t for t, _ in got if not t.endswith("/cmd/c1") and not t.endswith("/cmd/c2"))
        assert topics == ["facility/demo/el-b1-1/cmd/abc/reply", "facility/demo/el-b1-1/telemetry"]
        assert lift_cmds == ["facility/demo/el-b1-1/cmd/c2"]
        _, bad = _client(broker.port, "demo.el-b1-1", "wrong password")
        assert bad and bad[0] != 0
        lift.disconnect()
        hub.disconnect()
    finally:
        broker.stop()
