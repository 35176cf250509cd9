"""Modbus polling: points per second the hub polls, beside raw pymodbus reads, in one run.

    python -m bench.modbus            # 1,000 devices × 20 registers at 1 s, 60 s
    python -m bench.modbus --quick    # 200 devices, 10 s (a smoke run; not the figure)

The devices are served by pymodbus's own `ModbusTcpServer`s (each with many unit ids) in a
separate process, so the hub's poller is what is measured. The hub side is the real driver
(`ModbusDriver`) feeding the real ingest pipeline into a throwaway PostgreSQL database (or only
counting rows with `--no-store`). The raw figure is a bare `AsyncModbusTcpClient` loop per
server reading the same blocks back to back, with no decoding, scheduling or storing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np

REGISTERS = 20
FLAT_OUT_INTERVAL = 0.001  # every poll overruns: the driver polls as fast as it can


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


# -- the device side (runs in its own process) -------------------------------------------------
async def serve(ports: list[int], units: int) -> None:
    import logging

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    servers = []
    for n, port in enumerate(ports):
        devices = [SimDevice(unit, simdata=[SimData(0, count=REGISTERS + 4, values=[(n * 7 + unit * 13 + i) % 1000 for i in range(REGISTERS + 4)],
                                                     datatype=DataType.REGISTERS)])
                   for unit in range(1, units + 1)]
        server = ModbusTcpServer(devices, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        servers.append(server)
    print("ready", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def device_servers(ports: list[int], units: int, procs: int) -> Iterator[None]:
    """`procs` child processes sharing the server ports between them."""
    children = []
    try:
        for chunk in np.array_split(np.array(ports), procs):
            if len(chunk) == 0:
                continue
            cmd = [sys.executable, "-m", "bench.modbus", "--serve", ",".join(map(str, chunk)), "--units", str(units)]
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     cwd=Path(__file__).resolve().parents[1])
            children.append(child)
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != "ready":
                raise SystemExit(f"device server process failed to start ({child.poll()})")
        yield
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(10)


# -- raw pymodbus ---------------------------------------------------------------------------
async def raw_rate(ports: list[int], units: int, seconds: float) -> float:
    from pymodbus.client import AsyncModbusTcpClient

    points = 0
    deadline = time.perf_counter() + seconds

    async def loop(port: int) -> None:
        nonlocal points
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0, reconnect_delay=0)
        await client.connect()
        try:
            while time.perf_counter() < deadline:
                for unit in range(1, units + 1):
                    response = await client.read_holding_registers(0, count=REGISTERS, device_id=unit)
                    points += len(response.registers)
        finally:
            client.close()

    started = time.perf_counter()
    await asyncio.gather(*(loop(p) for p in ports))
    return points / (time.perf_counter() - started)


# -- the hub side ---------------------------------------------------------------------------
def registry_text(ports: list[int], units: int, devices: int, interval: float) -> str:
    metrics = "\n".join(f"      - {{name: m{i}, type: number}}" for i in range(REGISTERS))
    registers = "\n".join(
        f"        - {{metric: m{i}, table: holding, address: {i}, type: {'int16' if i % 2 else 'uint16'}"
        f"{', scale: 0.1' if i % 3 == 0 else ''}}}" for i in range(REGISTERS))
    lines = []
    for n in range(devices):
        port, unit = ports[n // units], n % units + 1
        lines.append(f"      - {{id: d{n:05d}, model: bench-modbus, modbus: {{host: 127.0.0.1, port: {port}, unit_id: {unit}}}}}")
    return f"""models:
  - id: bench-modbus
    kind: sensor
    protocol: modbus
    heartbeat_s: 60
    metrics:
{metrics}
    modbus:
      poll_interval_s: {interval}
      timeout_s: 2.0
      retries: 0
      registers:
{registers}
sites:
  - id: bench
    devices:
{chr(10).join(lines)}
"""


async def hub_run(registry_path: Path, dsn: str | None, seconds: float, warmup: float) -> dict[str, float]:
    from drivers.modbus.driver import ModbusDriver, modbus_devices
    from hub.ingest.catalog import DeviceCatalog
    from hub.ingest.decode import Batch, Limits
    from hub.ingest.pipeline import IngestPipeline
    from hub.registry import load_registry
    from hub.runtime import tune_gc
    from hub.store.db import connect
    from hub.store.migrate import migrate
    from hub.store.registry_sync import sync_registry

    tune_gc()  # as `hub run` configures the process the driver runs in
    registry = load_registry(registry_path)
    pipeline: IngestPipeline | None = None
    counted = {"readings": 0}
    if dsn is not None:
        migrate(dsn)
        with connect(dsn) as conn:
            ids = sync_registry(conn, registry, actor="bench")
        pipeline = IngestPipeline(dsn=dsn, catalog=DeviceCatalog(registry, ids), limits=Limits(max_age=timedelta(days=1)),
                                  worker="bench-modbus")
        pipeline.start()
        store = pipeline

        def put(batch: Batch) -> bool:
            return store.put_prepared(batch, timeout=0)
    else:
        ids = {key: n + 1 for n, key in enumerate(sorted(registry.devices))}

        def put(batch: Batch) -> bool:
            counted["readings"] += sum(1 for r in batch.readings if r[5] == 0)
            return True
    driver = ModbusDriver(modbus_devices(registry, ids), put, seed=42)
    await driver.start()
    result: dict[str, float] = {}
    try:
        await asyncio.sleep(warmup)
        pollers = list(driver.pollers.values())
        for poller in pollers:
            poller.stats.start_lag.clear()
            poller.stats.done_lag.clear()
        points0 = sum(p.stats.points for p in pollers)
        skipped0 = sum(p.stats.skipped for p in pollers)
        failed0 = sum(p.stats.failed_blocks for p in pollers)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        points = sum(p.stats.points for p in pollers) - points0
        start_lag = np.concatenate([np.fromiter(p.stats.start_lag, float) for p in pollers])
        done_lag = np.concatenate([np.fromiter(p.stats.done_lag, float) for p in pollers])
        result |= {
            "points_per_s": points / elapsed,
            "start_lag_p50_ms": float(np.percentile(start_lag, 50) * 1000) if start_lag.size else float("nan"),
            "start_lag_p99_ms": float(np.percentile(start_lag, 99) * 1000) if start_lag.size else float("nan"),
            "done_lag_p99_ms": float(np.percentile(done_lag, 99) * 1000) if done_lag.size else float("nan"),
            "skipped": sum(p.stats.skipped for p in pollers) - skipped0,
            "failed_blocks": sum(p.stats.failed_blocks for p in pollers) - failed0,
            "flush_refused": driver.collector.refused,
        }
    finally:
        await driver.stop()
        if pipeline is not None:
            await asyncio.to_thread(pipeline.stop)
            result["stored_readings"] = pipeline.stats.readings
        else:
            result["stored_readings"] = counted["readings"]
    return result


@contextlib.contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    import psycopg

    name = f"hub_bench_modbus_{secrets.token_hex(4)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(admin_dsn)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo("", **info)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 devices for 10 s: a smoke run")
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--units-per-server", type=int, default=100, help="unit ids behind one TCP endpoint")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured hub run")
    parser.add_argument("--raw-seconds", type=float, default=10.0)
    parser.add_argument("--server-procs", type=int, default=2)
    parser.add_argument("--dsn", default=os.environ.get("HUB_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
                        help="admin URL of the PostgreSQL that gets a throwaway database")
    parser.add_argument("--no-store", action="store_true", help="count rows instead of storing them")
    parser.add_argument("--no-report", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--units", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve([int(p) for p in args.serve.split(",")], args.units))
        return {}
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # per-timeout frame dumps
    if args.quick:
        args.devices, args.seconds, args.raw_seconds = min(args.devices, 200), 10.0, 3.0
    units = args.units_per_server
    n_servers = -(-args.devices // units)
    ports = free_ports(n_servers)
    demanded = args.devices * REGISTERS / args.interval
    with tempfile.TemporaryDirectory() as tmp, device_servers(ports, units, min(args.server_procs, n_servers)):
        scheduled_path, flat_out_path = Path(tmp) / "bench.yaml", Path(tmp) / "flat-out.yaml"
        scheduled_path.write_text(registry_text(ports, units, args.devices, args.interval))
        flat_out_path.write_text(registry_text(ports, units, args.devices, FLAT_OUT_INTERVAL))
        raw = asyncio.run(raw_rate(ports, units, args.raw_seconds))
        print(f"raw pymodbus: {raw:,.0f} points/s over {n_servers} connection(s)")
        stack = contextlib.ExitStack()
        dsn = None if args.no_store else stack.enter_context(scratch_database(args.dsn))
        with stack:
            hub = asyncio.run(hub_run(scheduled_path, dsn, args.seconds, warmup=2 * args.interval + 1))
            print(f"hub on schedule: {hub['points_per_s']:,.0f} points/s (demanded {demanded:,.0f}); start lag p50 "
                  f"{hub['start_lag_p50_ms']:.1f} ms, p99 {hub['start_lag_p99_ms']:.1f} ms; done p99 "
                  f"{hub['done_lag_p99_ms']:.1f} ms; skipped {hub['skipped']:.0f}")
            flat = asyncio.run(hub_run(flat_out_path, dsn, args.raw_seconds, warmup=1.0))
    ratio = flat["points_per_s"] / raw if raw else float("nan")
    print(f"hub flat out: {flat['points_per_s']:,.0f} points/s = {ratio:.0%} of raw pymodbus")
    if not args.no_report:
        from bench.report import write_section

        kind = "quick smoke run (`--quick`), not the target figure" if args.quick else "full run"
        lag_ok = "yes" if hub["start_lag_p99_ms"] < 250 else "no"
        ratio_ok = "yes" if ratio >= 0.5 else "no"
        write_section("modbus", f"""## Modbus polling (`python -m bench.modbus{' --quick' if args.quick else ''}`)

{kind}: {args.devices} devices × {REGISTERS} registers every {args.interval:g} s on {n_servers} TCP endpoint(s)
({units} unit ids each, pymodbus `ModbusTcpServer`s in {min(args.server_procs, n_servers)} separate process(es)),
scheduled hub run {args.seconds:g} s after warm-up, flat-out and raw runs {args.raw_seconds:g} s each, {'rows stored through the ingest pipeline into PostgreSQL' if dsn else 'rows counted, not stored'}.

| figure | value | target |
|---|---|---|
| raw pymodbus (bare client loop per endpoint, back to back, no decoding) | {raw:,.0f} points/s | — |
| hub flat out (same devices, interval {FLAT_OUT_INTERVAL:g} s: decode, events, ingest) | {flat['points_per_s']:,.0f} points/s | |
| hub flat out ÷ raw | {ratio:.0%} | ≥ 50% ({ratio_ok}) |
| hub on schedule: polled (decoded, good quality) | {hub['points_per_s']:,.0f} points/s | {demanded:,.0f} demanded |
| poll start lag vs schedule p50 / p99 | {hub['start_lag_p50_ms']:.1f} / {hub['start_lag_p99_ms']:.1f} ms | p99 < 250 ms ({lag_ok}) |
| poll done vs schedule p99 (incl. waiting for the shared connection) | {hub['done_lag_p99_ms']:.1f} ms | — |
| polls skipped (overran their slot) / failed blocks | {hub['skipped']:.0f} / {hub['failed_blocks']:.0f} | 0 |
| readings handed to ingest{' and stored' if dsn else ''} (scheduled run) | {hub['stored_readings']:,.0f} | — |

Load average (1 min) when the report was written: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.""")
    return {"flat_out_points_per_s": flat["points_per_s"], "raw_points_per_s": raw,
            "start_lag_p99_ms": hub["start_lag_p99_ms"], "skipped_polls": hub["skipped"]}


if __name__ == "__main__":
    main()
