"""API read throughput: requests/s and p99 for the device list, a history range and alarms.

A 2,000-device site with a week of readings (COPY) and rollups, served by uvicorn in its own
process; each endpoint is measured beside its raw limit: the same SQL straight through
psycopg at the same concurrency, and /healthz for the HTTP stack alone.

    python -m bench.api --quick      # short run (what CI and a busy machine can afford)
    python -m bench.api              # full figures
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from bench.report import write_section

ADMIN_URL = os.environ.get("HUB_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
SITE = "bench"


@dataclass(frozen=True)
class Plan:
    devices: int
    days: int
    step_s: int
    seconds: float
    concurrency: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def populate(url: str, plan: Plan) -> tuple[int, int]:
    """Site, devices, readings (COPY), rollups, statuses, alarms; returns (readings, a device id)."""
    from api.security import hash_password
    from hub.store.rollups import refresh_rollups_now

    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=plan.days)
    with psycopg.connect(url) as conn:
        conn.execute("INSERT INTO sites (id, name, timezone) VALUES (%s, 'Bench', 'Asia/Shanghai')", (SITE,))
        conn.execute("INSERT INTO device_models (id, kind, protocol, spec) VALUES ('lift', 'elevator', 'mqtt', '{}')")
        with conn.cursor().copy("COPY devices (site_id, device_id, model_id, kind, protocol, name, building_id) FROM STDIN") as cp:
            for i in range(plan.devices):
                cp.write_row((SITE, f"lift-{i:04d}", "lift", "elevator", "mqtt", f"Lift {i}", f"b{i % 40}"))
        ids = [r[0] for r in conn.execute("SELECT id FROM devices ORDER BY id")]
        steps = int(plan.days * 86400 / plan.step_s)
        with conn.cursor().copy("COPY readings (ts, device_id, metric, value) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["timestamptz", "int4", "text", "float8"])
            for device in ids:
                for k in range(steps):
                    cp.write_row((start + timedelta(seconds=k * plan.step_s), device, "floor", float((k + device) % 18)))
        conn.execute(
            "INSERT INTO device_status (device_id, online, changed_at, last_seen) SELECT id, id % 10 <> 0, now(), now() FROM devices")
        conn.execute(
            """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, raised_at, state, closed_at)
               SELECT 'r' || (g %% 7), %s, %s[1 + g %% array_length(%s, 1)], 'k' || g, 'entrapment', 'major', 'bench',
                      now() - g * interval '2 minutes', CASE WHEN g %% 25 = 0 THEN 'active' ELSE 'cleared' END,
                      CASE WHEN g %% 25 = 0 THEN NULL ELSE now() END
                 FROM generate_series(1, 5000) g""", (SITE, ids, ids))
        conn.execute("INSERT INTO api_users (username, password_hash, role, sites) VALUES ('bench', %s, 'operator', %s)",
                     (hash_password("bench password"), [SITE]))
        conn.commit()
        refresh_rollups_now(conn, start, end + timedelta(minutes=1))
        conn.execute("ANALYZE")
        conn.commit()
        return len(ids) * steps, ids[len(ids) // 2]


def _serve(url: str, port: int) -> None:
    import uvicorn

    from api.app import create_app
    from hub.config import load_settings

    settings = load_settings(None, database_url=url, secret_key="bench-secret-key-not-for-production-use")
    uvicorn.run(create_app(settings=settings), host="127.0.0.1", port=port, log_level="warning")


async def measure(call: Callable[[], Awaitable[object]], seconds: float, concurrency: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of `call` run by `concurrency` workers for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, p99 * 1000


async def run(url: str, port: int, plan: Plan, device: int) -> list[tuple[str, tuple[float, float, float], tuple[float, float, float] | None]]:
    base = f"http://127.0.0.1:{port}"
    end = datetime.now(UTC)
    limits = httpx.Limits(max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        token = (await client.post("/auth/token", data={"username": "bench", "password": "bench password"})).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        day = {"metric": "floor", "from": (end - timedelta(days=1)).isoformat(), "to": end.isoformat()}
        week = {"metric": "floor", "from": (end - timedelta(days=7)).isoformat(), "to": end.isoformat()}
        cases: list[tuple[str, str, dict[str, Any], str, tuple[Any, ...]]] = [
            ("device list (100 of 2,000, status)", "/devices", {"limit": 100},
             """SELECT d.*, s.online FROM devices d LEFT JOIN device_status s ON s.device_id = d.id
                WHERE d.site_id = ANY(%s) ORDER BY d.id LIMIT 101""", ([SITE],)),
            ("history, 1 day (1-minute rollup)", f"/devices/{device}/history", day,
             """SELECT bucket, avg_value, min_value, max_value, samples FROM readings_1m
                WHERE device_id = %s AND metric = 'floor' AND bucket >= %s AND bucket < %s ORDER BY bucket LIMIT 5001""",
             (device, end - timedelta(days=1), end)),
            ("history, 7 days (hourly rollup)", f"/devices/{device}/history", {**week, "resolution": "1h"},
             """SELECT bucket, avg_value, min_value, max_value, samples FROM readings_1h
                WHERE device_id = %s AND metric = 'floor' AND bucket >= %s AND bucket < %s ORDER BY bucket LIMIT 5001""",
             (device, end - timedelta(days=7), end)),
            ("alarms, open (of 5,000)", "/alarms", {"open": True, "limit": 100},
             """SELECT * FROM alarms WHERE site_id = ANY(%s) AND closed_at IS NULL ORDER BY raised_at DESC, id DESC LIMIT 101""",
             ([SITE],)),
            ("alarms, all, newest 100", "/alarms", {"limit": 100},
             "SELECT * FROM alarms WHERE site_id = ANY(%s) ORDER BY raised_at DESC, id DESC LIMIT 101", ([SITE],)),
        ]
        results: list[tuple[str, tuple[float, float, float], tuple[float, float, float] | None]] = []

        async def healthz() -> None:
            (await client.get("/healthz")).raise_for_status()

        results.append(("/healthz (HTTP stack only)", await measure(healthz, plan.seconds, plan.concurrency), None))
        from psycopg_pool import AsyncConnectionPool

        async with AsyncConnectionPool(url, min_size=plan.concurrency, max_size=plan.concurrency) as pool:
            for label, path, params, sql, args in cases:
                async def api_call(path: str = path, params: dict[str, Any] = params) -> None:
                    (await client.get(path, params=params)).raise_for_status()

                async def raw_call(sql: Any = sql, args: tuple[Any, ...] = args) -> None:
                    async with pool.connection() as conn:
                        await (await conn.execute(sql, args)).fetchall()

                api = await measure(api_call, plan.seconds, plan.concurrency)
                raw = await measure(raw_call, plan.seconds, plan.concurrency)
                results.append((label, api, raw))
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="sparser data and 3 s per endpoint")
    args = parser.parse_args(argv)
    plan = Plan(2000, 7, 1800, 3.0, 8) if args.quick else Plan(2000, 7, 300, 15.0, 16)
    from hub.store.migrate import migrate

    name = f"bench_api_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = name
    url = psycopg.conninfo.make_conninfo("", **info)
    server: Any = None
    try:
        migrate(url)
        t0 = time.perf_counter()
        rows, device = populate(url, plan)
        load_s = time.perf_counter() - t0
        port = _free_port()
        server = mp.get_context("spawn").Process(target=_serve, args=(url, port), daemon=True)
        server.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        results = asyncio.run(run(url, port, plan, device))
    finally:
        if server is not None:
            server.terminate()
            server.join(10)
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    mode = "quick run (`--quick`): sparse data, 3 s per endpoint" if args.quick else "full run"
    lines = [
        "## API reads (`bench/api.py`)", "",
        f"{mode}. Site of {plan.devices:,} devices, {plan.days} days of readings every {plan.step_s} s "
        f"({rows:,} rows, loaded with COPY and rolled up in {load_s:.1f} s), 5,000 alarms. One uvicorn worker in its "
        f"own process; {plan.concurrency} concurrent keep-alive clients. The raw limit is the same SQL through a psycopg "
        "pool at the same concurrency, without HTTP, auth or JSON.", "",
        "| endpoint | API req/s | API p50 ms | API p99 ms | raw SQL q/s | raw p99 ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, api, raw in results:
        raw_cols = f"{raw[0]:,.0f} | {raw[2]:.1f}" if raw else "– | –"
        lines.append(f"| {label} | {api[0]:,.0f} | {api[1]:.1f} | {api[2]:.1f} | {raw_cols} |")
    if args.quick:
        lines += ["", "Quick figures from a shared 2-core machine with other work running; the full run is pending."]
    body = "\n".join(lines)
    print(body)
    write_section("api", body)
    return {"worst_p99_ms": max(api[2] for _, api, _ in results),
            "worst_raw_p99_ms": max((raw[2] for _, _, raw in results if raw), default=0.0)}


if __name__ == "__main__":
    main()
