"""`hub simulate` as a process: options, scenario output on the broker, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.sims_support import (
    Recorder,
    clean_broker,  # noqa: F401  (fixture)
)
from tests.support import ROOT, free_port

pytestmark = pytest.mark.usefixtures("clean_broker")


def hub(*args: str, mqtt_url: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HUB_MQTT_URL": mqtt_url}
    return subprocess.run([sys.executable, "-m", "hub", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def test_hub_simulate_runs_a_scenario_for_a_duration(broker, demo_registry_path, tmp_path):
    rec = Recorder(broker.url)
    offset = _two_free_ports() - 15020
    out = tmp_path / "fleet.yaml"
    try:
        proc = hub("simulate", "--site", str(demo_registry_path), "--scale", "2", "--speed", "30", "--scenario", "fire",
                   "--duration", "5", "--seed", "3", "--modbus-port-offset", str(offset), "--write-registry", str(out),
                   mqtt_url=broker.url)
        assert proc.returncode == 0, proc.stderr
        assert "32 devices (28 MQTT" in proc.stdout and "4 Modbus" in proc.stdout and f":{15020 + offset}" in proc.stdout
        confirmed = {t.split("/")[2] for t, b in rec.json("/event") if b["code"] == "fire_confirmed"}
        assert confirmed == {"fire-panel-1-c01", "fire-panel-1-c02"}
        assert out.exists() and "el-b3-1-c02" in out.read_text()
    finally:
        rec.close()


def _two_free_ports() -> int:
    import socket

    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def test_hub_simulate_reports_a_busy_modbus_port(broker, demo_registry_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = hub("simulate", "--site", str(demo_registry_path), "--duration", "1",
                   "--modbus-port-offset", str(port - 15020), mqtt_url=broker.url)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (port in use?)" in proc.stderr and "Traceback" not in proc.stderr


def test_hub_simulate_rejects_unknown_scenario_and_bad_faults(broker, demo_registry_path):
    proc = hub("simulate", "--site", str(demo_registry_path), "--scenario", "meteor", mqtt_url=broker.url)
    assert proc.returncode == 2 and "unknown scenario 'meteor'" in proc.stderr and "entrapment" in proc.stderr
    proc = hub("simulate", "--site", str(demo_registry_path), "--faults", "drop=lots", mqtt_url=broker.url)
    assert proc.returncode == 2 and "'drop': 'lots' is not a number" in proc.stderr


def test_hub_simulate_says_when_the_broker_is_unreachable(demo_registry_path):
    port = free_port()
    offset = _two_free_ports() - 15020
    proc = hub("simulate", "--site", str(demo_registry_path), "--duration", "1", "--modbus-port-offset", str(offset),
               mqtt_url=f"mqtt://127.0.0.1:{port}")
    assert proc.returncode == 1
    assert f"MQTT broker 127.0.0.1:{port} unreachable" in proc.stderr and "Traceback" not in proc.stderr
