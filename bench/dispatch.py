"""Alarm → work order assigned → notification on MQTT: latency p50/p99 under load.

Beside it, in the same run, the raw limits it is built from: a bare INSERT + NOTIFY round trip
(one row into a plain table, woken listener) and a raw QoS 1 MQTT publish → subscriber receipt.
The hub's dispatch component runs as in production (LISTEN hub_alarms, outbox, delivery
thread) against a throwaway database on the local PostgreSQL and a private Mosquitto.

    python -m bench.dispatch [--quick] [--alarms N] [--rate PER_S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from bench.report import write_section

ADMIN_URL = os.environ.get("HUB_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def throwaway_database() -> Iterator[str]:
    name = f"hub_bench_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_URL)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo("", **info)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def site_registry(folder: Path, elevators: int) -> Path:
    """One site, many lifts, three contractors and four technicians on call around the clock."""
    lines = ["models:", "  - {id: lift, kind: elevator, protocol: mqtt, metrics: [{name: floor, type: int}]}",
             "sites:", "  - id: bench", "    timezone: Asia/Shanghai", "    buildings: [{id: b1, floors: 30}]",
             "    grids: [{id: g1, buildings: [b1]}]", "    devices:"]
    lines += [f"      - {{id: el-{i}, model: lift, building: b1}}" for i in range(elevators)]
    lines += ["staff:", "  - {id: sup, name: S, role: supervisor, sites: [bench]}"]
    people = [f"co-{i}" for i in range(3)] + [f"tech-{i}" for i in range(4)]
    for p in people:
        role = "contractor" if p.startswith("co") else "technician"
        lines.append(f"  - {{id: {p}, name: {p}, role: {role}, sites: [bench], skills: [elevator], supervisor: sup}}")
    lines.append("rosters:")
    for p in people:
        lines.append(f'  - {{staff: {p}, site: bench, start: "00:00", end: "12:00"}}')
        lines.append(f'  - {{staff: {p}, site: bench, start: "12:00", end: "00:00"}}')
    path = folder / "bench-site.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def subscriber(host: str, port: int, topic: str, sink: dict[str, float]) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{secrets.token_hex(3)}", clean_session=True)

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        sink.setdefault(_key(msg), time.time())

    def _key(msg: paho.MQTTMessage) -> str:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return msg.payload.decode(errors="replace")
        order = body.get("order") if isinstance(body, dict) else None
        return f"alarm:{order['alarm_id']}" if order else str(body)

    client.on_message = on_message
    client.connect(host, port)
    client.subscribe(topic, qos=1)
    client.loop_start()
    return client


def raw_notify(dsn: str, n: int) -> list[float]:
    """Bare INSERT + NOTIFY, committed, until the listener wakes: the database's floor."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS bench_raw (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz)")
    out: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as listen, psycopg.connect(dsn, autocommit=True) as writer:
        listen.execute("LISTEN bench_raw")
        for _ in range(n):
            start = time.perf_counter()
            with writer.transaction():
                writer.execute("INSERT INTO bench_raw (at) VALUES (now())")
                writer.execute("SELECT pg_notify('bench_raw', 'x')")
            for _note in listen.notifies(timeout=5, stop_after=1):
                break
            out.append(time.perf_counter() - start)
    return out


def raw_mqtt(host: str, port: int, n: int) -> list[float]:
    """QoS 1 publish → subscriber receipt on the same broker: the broker path's floor."""
    got: dict[str, float] = {}
    sub = subscriber(host, port, "bench/raw", got)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(3)}")
    pub.connect(host, port)
    pub.loop_start()
    time.sleep(0.3)
    sent: dict[str, float] = {}
    for i in range(n):
        key = f"raw-{i}"
        sent[key] = time.time()
        pub.publish("bench/raw", key, qos=1)
        time.sleep(0.002)
    deadline = time.time() + 10
    while len(got) < n and time.time() < deadline:
        time.sleep(0.01)
    pub.loop_stop()
    sub.loop_stop()
    return [got[k] - sent[k] for k in sent if k in got]


def run(alarms: int, rate: float, quick: bool) -> tuple[str, dict[str, float]]:
    from hub.config import load_settings
    from hub.dispatch.component import DispatchComponent
    from hub.dispatch.policy import load_policy
    from hub.embedded.broker import MosquittoProcess
    from hub.runtime import HubRuntime

    with tempfile.TemporaryDirectory() as tmp, throwaway_database() as dsn:
        broker = MosquittoProcess(Path(tmp) / "mosquitto")
        broker.start()
        try:
            raw_db = raw_notify(dsn, 200 if quick else 2000)
            raw_broker = raw_mqtt("127.0.0.1", broker.port, 200 if quick else 2000)
            registry = site_registry(Path(tmp), max(50, alarms // 4))
            settings = load_settings(None, database_url=dsn, mqtt_url=broker.url, registry=registry,
                                     mqtt_client_id="bench-hub", api_enabled=False)
            policy = load_policy().model_copy(update={"maintenance": []})
            runtime = HubRuntime(settings, components=[DispatchComponent(policy=policy)], worker="bench")
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, daemon=True)
            thread.start()
            ctx = asyncio.run_coroutine_threadsafe(runtime.start(), loop).result(60)
            received: dict[str, float] = {}
            sub = subscriber("127.0.0.1", broker.port, "facility/bench/staff/+/notify", received)
            time.sleep(0.5)
            devices = sorted(v for (s, _), v in ctx.device_ids.items() if s == "bench")
            inserted: dict[int, float] = {}
            started = time.time()
            with psycopg.connect(dsn, autocommit=True) as conn:
                for i in range(alarms):
                    due = started + i / rate
                    pause = due - time.time()
                    if pause > 0:
                        time.sleep(pause)
                    t = time.time()
                    row = conn.execute(
                        """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, raised_at)
                           VALUES ('bench', 'bench', %s, %s, 'entrapment', 'critical', 'bench', %s) RETURNING id""",
                        (devices[i % len(devices)], f"bench:{i}", datetime.now(UTC))).fetchone()
                    assert row is not None
                    inserted[int(row[0])] = t
                deadline = time.time() + 60
                while time.time() < deadline and sum(1 for k in inserted if f"alarm:{k}" in received) < alarms:
                    time.sleep(0.05)
                assigned: dict[int, float] = dict(conn.execute(
                    "SELECT alarm_id, extract(epoch FROM assigned_at) FROM work_orders WHERE alarm_id IS NOT NULL"
                ).fetchall())
                orders = conn.execute("SELECT count(*) FROM work_orders").fetchone()
            elapsed = time.time() - started
            sub.loop_stop()
            asyncio.run_coroutine_threadsafe(runtime.stop(), loop).result(60)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
        finally:
            broker.stop()
    to_assigned = [float(assigned[a]) - t for a, t in inserted.items() if assigned.get(a) is not None]
    to_notified = [received[f"alarm:{a}"] - t for a, t in inserted.items() if f"alarm:{a}" in received]

    def line(name: str, values: list[float]) -> str:
        return (f"| {name} | {len(values)} | {pct(values, 0.5) * 1000:.1f} | {pct(values, 0.99) * 1000:.1f} | "
                f"{statistics.fmean(values) * 1000 if values else float('nan'):.1f} |")

    note = ("**Quick run** (`--quick`) on a machine shared with other builds: indicative only; "
            "the full figures come from a run on a quiet machine." if quick else "Full run.")
    figures = {"assigned_p50_ms": pct(to_assigned, 0.5) * 1000, "assigned_p99_ms": pct(to_assigned, 0.99) * 1000,
               "notified_p50_ms": pct(to_notified, 0.5) * 1000, "notified_p99_ms": pct(to_notified, 0.99) * 1000,
               "raw_notify_p99_ms": pct(raw_db, 0.99) * 1000, "raw_mqtt_p99_ms": pct(raw_broker, 0.99) * 1000,
               "notified": float(len(to_notified)), "alarms": float(alarms)}
    return "\n".join([
        "## Dispatch: alarm → work order assigned → notification on MQTT",
        "",
        f"{alarms} entrapment alarms inserted at {rate:.0f}/s into `alarms` (as the rule engine does), "
        f"each opening one order for one of 3 contractors (least loaded) and a QoS 1 notification on "
        f"`facility/bench/staff/+/notify`, received by a separate subscriber. Orders created: {orders[0] if orders else 0}; "
        f"notifications received: {len(to_notified)}/{alarms}; run {elapsed:.1f} s.",
        "",
        "| path | samples | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        line("raw: INSERT + NOTIFY committed → listener woken", raw_db),
        line("raw: MQTT QoS 1 publish → subscriber", raw_broker),
        line("alarm INSERT → order assigned (assigned_at)", to_assigned),
        line("alarm INSERT → notification received on MQTT", to_notified),
        "",
        note,
        "",
        "Reproduce: `python -m bench.dispatch` (full) or `python -m bench.dispatch --quick`.",
    ]), figures


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (100 alarms at 20/s)")
    parser.add_argument("--alarms", type=int, default=None)
    parser.add_argument("--rate", type=float, default=None, help="alarms per second")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    alarms = args.alarms or (100 if args.quick else 2000)
    rate = args.rate or (20.0 if args.quick else 100.0)
    body, figures = run(alarms, rate, args.quick)
    print(body)
    if not args.no_write:
        print(f"\nwritten to {write_section('dispatch', body)}")
    return figures


if __name__ == "__main__":
    main()
