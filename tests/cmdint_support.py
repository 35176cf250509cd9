"""A hub with the API (and optionally the Modbus driver) running beside the project's simulators.

The simulators run in the test's event loop, so every blocking call (HTTP, SQL, starting the
hub) goes through `asyncio.to_thread` to keep the simulated devices answering.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from api.component import ApiComponent
from tests.api_support import ApiHub, add_users, registry_dir
from tests.hubproc import RunningHub
from tests.sims_support import modbus_ports


def site_registry(tmp: Path) -> tuple[Path, dict[int, int]]:
    """The demo site (plus the API tests' second site) with its Modbus ports moved to free ones."""
    folder = registry_dir(tmp)
    ports = modbus_ports()
    demo = folder / "demo.yaml"
    text = demo.read_text(encoding="utf-8")
    for old, new in ports.items():
        text = text.replace(f"port: {old}", f"port: {new}")
    demo.write_text(text, encoding="utf-8")
    return folder, ports


@asynccontextmanager
async def api_hub(db_url: str, broker_url: str, registry: Path, *, extra: list[Any] | None = None,
                  **settings: Any) -> AsyncIterator[ApiHub]:
    hub = RunningHub(db_url, broker_url, registry, components=[*(extra or []), ApiComponent()],
                     client_id=f"hub-ci-{uuid.uuid4().hex[:6]}", api_port=0,
                     secret_key="test-secret-key-not-for-production", api={"command_retry_s": 0.5}, **settings)
    await asyncio.to_thread(hub.__enter__)
    try:
        assert hub.ctx is not None
        await asyncio.to_thread(add_users, db_url)
        yield ApiHub(hub, hub.ctx.extras["api_url"], db_url)
    finally:
        await asyncio.to_thread(hub.__exit__, None, None, None)


async def blocking(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kw)


def send_command(api: ApiHub, user: str, site: str, device: str, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Create a command (and confirm it when it is dangerous); the command as the API shows it."""
    with api.client(user) as c:
        r = c.post(f"/devices/{api.device_id(site, device)}/commands", json={"name": name, "args": args or {}},
                   headers={"Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 201, r.text
        cmd: dict[str, Any] = r.json()
        if cmd["state"] == "awaiting_confirmation":
            r = c.post(f"/commands/{cmd['id']}/confirm")
            assert r.status_code == 200, r.text
            cmd = r.json()
        return cmd


def command(api: ApiHub, user: str, command_id: str) -> dict[str, Any]:
    with api.client(user) as c:
        r = c.get(f"/commands/{command_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())
