"""`hub demo`: embedded database and broker, the demo site's simulators, the whole hub."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from pathlib import Path

from hub.cli import DEMO_REGISTRY, PROJECT_ROOT, _install_stop, _setup_logging
from hub.config import load_settings


def run_demo(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir or PROJECT_ROOT / ".demo"
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        print("hub demo: starting …", flush=True)
        if not os.environ.get("HUB_DATABASE_URL"):
            from hub.embedded.postgres import embedded_postgres

            overrides["database_url"] = stack.enter_context(embedded_postgres(data_dir / "pg"))
            db_note = f"embedded PostgreSQL (data in {data_dir / 'pg'})"
        else:
            db_note = "configured database (HUB_DATABASE_URL)"
        if not os.environ.get("HUB_MQTT_URL"):
            from hub.embedded.broker import embedded_broker

            overrides["mqtt_url"] = stack.enter_context(embedded_broker(data_dir))
            broker_note = "embedded broker"
        else:
            broker_note = "configured broker (HUB_MQTT_URL)"
        if not os.environ.get("HUB_REGISTRY"):
            overrides["registry"] = DEMO_REGISTRY
        if not os.environ.get("HUB_DATA_DIR"):
            overrides["data_dir"] = data_dir
        overrides.setdefault("mqtt_client_id", "hub-demo")
        settings = load_settings(getattr(args, "config", None), **overrides)
        _setup_logging(settings.log_level)
        return asyncio.run(_demo(settings, args.duration, db_note, broker_note))


def _demo_user(settings: object) -> Path:
    """An admin for the demo's API; its random password goes to a 0600 file, never to a log."""
    import secrets

    from api.cli import save_user
    from api.security import hash_password
    from hub.config import Settings
    from hub.store.db import connect

    assert isinstance(settings, Settings)
    password = secrets.token_urlsafe(12)
    path = settings.data_dir / "demo-credentials.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(f"username: demo\npassword: {password}\n", encoding="utf-8")
    with connect(settings.dsn) as conn:
        save_user(conn, username="demo", password_hash=hash_password(password), role="admin", sites=["*"], actor="hub demo")
    return path


async def _demo(settings: object, duration: float | None, db_note: str, broker_note: str) -> int:
    from hub.config import Settings
    from hub.registry import load_registry
    from hub.runtime import HubRuntime
    from hub.store.db import redact
    from simulators.runner import SimOptions, Simulation

    assert isinstance(settings, Settings)
    stop = asyncio.Event()
    _install_stop(stop)
    runtime = HubRuntime(settings, worker="demo")
    ctx = await runtime.start()
    assert settings.registry is not None
    sim = Simulation(load_registry(settings.registry), settings.mqtt, options=SimOptions(seed=1, client_prefix="demo-sim"))
    try:
        await sim.__aenter__()
    except BaseException:
        await runtime.stop()
        raise
    api = ctx.extras.get("api_url", "(API disabled)")
    credentials = _demo_user(settings) if settings.api_enabled else None
    print(
        "\n".join([
            "",
            "hub demo is running — Ctrl-C stops everything cleanly.",
            f"  database   {redact(settings.dsn)}  [{db_note}]",
            f"  timescale  {'ON' if ctx.migration.timescale else 'OFF'} ({ctx.migration.timescale_note})",
            f"  broker     mqtt://{settings.mqtt.host}:{settings.mqtt.port}  [{broker_note}]",
            f"  registry   {settings.registry}: {len(ctx.catalog)} devices",
            f"  simulators {sim.mqtt_devices} MQTT devices, {sim.modbus_devices} Modbus devices on "
            f"{', '.join(f'{ep.host}:{ep.port}' for ep in sim.endpoints) or '-'} (docs/simulators.md)",
            f"  API        {api}  (docs {api}/docs, health {api}/healthz)",
            f"  API login  user 'demo' (admin); password in {credentials}" if credentials else "",
            f"  try        mosquitto_sub -h {settings.mqtt.host} -p {settings.mqtt.port} -t 'facility/#' -v",
            "",
        ]),
        flush=True,
    )
    started = time.monotonic()
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=10)
            s = ctx.pipeline.stats
            print(f"[{time.monotonic() - started:6.0f} s] messages {s.messages}  readings {s.readings}  "
                  f"events {s.events}  dead letters {s.dead_letters}  queue {ctx.pipeline.queue_depth}", flush=True)
            if duration is not None and time.monotonic() - started >= duration:
                break
    finally:
        await sim.__aexit__(None, None, None)
        await runtime.stop()
    print("hub demo stopped.")
    return 0
