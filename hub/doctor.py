"""`hub doctor`: one line per check, non-zero exit if any check fails."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from hub.config import Settings, load_settings
from hub.errors import HubError

Check = tuple[str, str, str]  # status (ok/warn/FAIL), name, detail


def _line(status: str, name: str, detail: str) -> str:
    return f"{status:<5} {name:<10} {detail}"


def check_database(settings: Settings) -> list[Check]:
    import psycopg

    from hub.store.db import connect, redact
    from hub.store.migrate import available_migrations

    out: list[Check] = []
    try:
        with connect(settings.dsn, autocommit=True, application_name="hub-doctor") as conn:
            version = conn.execute("SHOW server_version").fetchone()
            out.append(("ok", "database", f"{redact(settings.dsn)} (PostgreSQL {version[0] if version else '?'})"))
            newest = available_migrations()[-1].version
            try:
                rows = conn.execute("SELECT version, variant FROM schema_migrations").fetchall()
            except psycopg.errors.UndefinedTable:
                rows = []
            current = max((r[0] for r in rows), default=0)
            if current >= newest:
                out.append(("ok", "schema", f"version {current} (newest)"))
            else:
                out.append(("FAIL", "schema", f"version {current}, newest is {newest}: run `hub migrate`"))
            avail = conn.execute(
                "SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'timescaledb'"
            ).fetchone()
            in_use = any(v == "timescale" for _, v in rows)
            if in_use:
                out.append(("ok", "timescale", f"ON: hypertables, compression, retention, continuous aggregates (timescaledb {avail[1] if avail else '?'})"))
            elif avail is None:
                out.append(("ok", "timescale", "OFF: extension not installed; plain tables with hub-maintained rollups"))
            else:
                out.append(("warn", "timescale", f"OFF: timescaledb {avail[0]} is installed but the schema was built without it"
                            if rows else f"timescaledb {avail[0]} available; `hub migrate` will use it"))
            dead = conn.execute(
                "SELECT count(*) FROM dead_letters WHERE received_at > now() - interval '1 hour'"
            ).fetchone() if current else None
            if dead is not None:
                status = "ok" if dead[0] == 0 else "warn"
                last = conn.execute("SELECT extract(epoch FROM now() - max(last_seen)) FROM device_status").fetchone()
                age = f"; last data {float(last[0]):.0f} s ago" if last and last[0] is not None else ""
                out.append((status, "ingest", f"{dead[0]} dead letter(s) in the last hour{age}"))
    except HubError as exc:
        out.append(("FAIL", "database", str(exc)))
    except psycopg.Error as exc:
        out.append(("FAIL", "database", str(exc).strip().splitlines()[0]))
    return out


def check_broker(settings: Settings) -> list[Check]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    url = settings.mqtt
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
    if url.username:
        client.username_pw_set(url.username, url.password.get_secret_value() if url.password else None)
    try:
        client.connect(url.host, url.port, keepalive=10)
        rc = None
        for _ in range(50):
            client.loop(0.1)
            if client.is_connected():
                rc = 0
                break
        client.disconnect()
    except OSError as exc:
        return [("FAIL", "broker", f"mqtt://{url.host}:{url.port}: {exc}")]
    if rc != 0:
        return [("FAIL", "broker", f"mqtt://{url.host}:{url.port}: connection refused or no answer")]
    return [("ok", "broker", f"mqtt://{url.host}:{url.port} accepts connections")]


def check_hub_metrics(settings: Settings) -> list[Check]:
    """Queue depth, lag and drops of a running hub, read from its /metrics (if it runs)."""
    import httpx

    from hub.metrics import scrape

    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    url = f"http://{host}:{settings.api_port}/metrics"
    try:
        snap = scrape(url, token=settings.metrics_token.get_secret_value() if settings.metrics_token else None)
    except (httpx.HTTPError, OSError):
        return [("warn", "hub", f"no running hub answers on {url}; queue and lag unknown")]
    status = "ok" if snap.dropped == 0 and snap.lag_s < 60 else "warn"
    return [(status, "hub", f"queue {snap.queue_depth:.0f}/{snap.queue_capacity:.0f}, lag {snap.lag_s:.1f} s, "
             f"{snap.messages:.0f} messages, {snap.dead_letters:.0f} dead letters, "
             f"{snap.write_errors:.0f} write errors, {snap.dropped:.0f} dropped ({url})")]


def check_modbus(settings: Settings) -> list[Check]:
    from hub.registry import load_registry

    if settings.registry is None:
        return []
    registry = load_registry(settings.registry)
    endpoints = sorted({(r.device.modbus.host, r.device.modbus.port) for r in registry.devices.values() if r.device.modbus})
    if not endpoints:
        return [("ok", "modbus", "no Modbus devices in the registry")]
    down = []
    for host, port in endpoints:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except OSError:
            down.append(f"{host}:{port}")
    if down:
        return [("FAIL", "modbus", f"{len(down)} of {len(endpoints)} endpoint(s) unreachable: {', '.join(down[:5])}")]
    return [("ok", "modbus", f"{len(endpoints)} endpoint(s) reachable")]


def run_checks(config_file: Path | None) -> int:
    results: list[Check] = []
    try:
        settings = load_settings(config_file)
        results.append(("ok", "config", f"{config_file or 'environment'} valid"))
    except HubError as exc:
        print(_line("FAIL", "config", str(exc)))
        return 1
    if settings.registry is not None:
        from hub.registry import load_registry

        try:
            reg = load_registry(settings.registry)
            results.append(("ok", "registry", f"{settings.registry}: {len(reg.sites)} site(s), {len(reg.devices)} device(s), {len(reg.staff)} staff"))
        except HubError as exc:
            results.append(("FAIL", "registry", str(exc)))
    else:
        results.append(("warn", "registry", "HUB_REGISTRY not set"))
    checks: list[Callable[[Settings], list[Check]]] = [check_database, check_broker, check_hub_metrics]
    if all(r[0] != "FAIL" for r in results if r[1] == "registry"):
        checks.append(check_modbus)
    if settings.database_url is None:
        results.append(("FAIL", "database", "HUB_DATABASE_URL is not set"))
        checks.remove(check_database)
    for check in checks:
        try:
            results.extend(check(settings))
        except HubError as exc:
            results.append(("FAIL", check.__name__.removeprefix("check_"), str(exc)))
    for status, name, detail in results:
        print(_line(status, name, detail))
    return 1 if any(r[0] == "FAIL" for r in results) else 0
