"""`hub demo` with nothing configured: embedded servers, data flowing, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow


def test_demo_starts_everything_ingests_and_stops_cleanly_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_API_PORT"] = str(free_port())
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub", "demo", "--data-dir", str(tmp_path / "demo")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        readings = 0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "readings" in line and line.lstrip().startswith("["):
                readings = int(line.split("readings")[1].split()[0])
                if readings > 0:
                    break
        assert readings > 0, "\n".join(lines[-30:])
        text = "\n".join(lines)
        for what in ("database", "broker", "registry", "simulators", "API"):
            assert f"  {what}" in text
        # The demo's API is usable: an admin whose password sits in a private file.
        creds = tmp_path / "demo" / "demo-credentials.txt"
        assert oct(creds.stat().st_mode & 0o777) == "0o600"
        password = creds.read_text().split("password: ")[1].strip()
        assert password not in text
        api = f"http://127.0.0.1:{env['HUB_API_PORT']}"
        token = httpx.post(f"{api}/auth/token", data={"username": "demo", "password": password}, timeout=10).json()["access_token"]
        devices = httpx.get(f"{api}/devices", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert devices.status_code == 200, devices.text
        assert httpx.get(f"{api}/devices", timeout=10).status_code == 401
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        lines.extend(out.splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(lines[-30:])
    assert "hub demo stopped." in "\n".join(lines)
    assert "Traceback" not in "\n".join(lines)
