"""Rule engine benchmark: publish → alarm committed latency under ingest load, and rule
evaluations per second beside a bare numpy threshold pass over the same arrays.

    python -m bench.rules [--quick] [--rate MSG_PER_S] [--seconds S] [--devices N]

Part 1 runs a real hub (ingest + rules, default rule set) against local PostgreSQL and its own
Mosquitto; publishers send elevator telemetry at the target rate while a probe device crosses
a threshold every 0.5 s; the latency is publish → NOTIFY of the committed alarm row.
Part 2 feeds synthetic arrays straight into the engine (no I/O) and times the same threshold
with bare numpy. Part 3 times a backtest over stored rows and extrapolates to a day.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
import psutil
import psycopg
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from bench.loadgen import PacedPublishers
from bench.report import write_section
from hub.embedded.broker import MosquittoProcess
from hub.registry import load_registry
from hub.store.migrate import migrate
from rules.cli import backtest
from rules.devices import device_metas
from rules.engine import Engine, Rows
from rules.model import load_rules

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "sites" / "demo.yaml"
RULES = ROOT / "examples" / "rules"
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


PROBE_DEVICE = "smoke-b3-f1"


def scaled_registry(devices: int, out: Path) -> Path:
    """The demo site's buildings with `devices` MQTT elevators and the probe detector.

    The demo's other devices are left out: nothing simulates them here, so 30 s into the run
    they would all go offline or silent at once, and the latency would measure that one-off
    storm of alarms rather than the sustained load (the ingest benchmark has no such devices).
    """
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    site = data["sites"][0]
    site["devices"] = [d for d in site["devices"] if d["id"] == PROBE_DEVICE]
    site.pop("gateways", None)
    buildings = [b["id"] for b in site["buildings"] if b["id"] != "garage"]
    for i in range(devices):
        site["devices"].append({"id": f"lift-{i:05d}", "model": "elevator-mqtt", "building": buildings[i % len(buildings)]})
    out.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return out


PROBE_RULE = """
rules:
  - id: bench-probe
    kind: threshold
    title: probe
    scope: {devices: [smoke-b3-f1]}
    condition: {metric: temperature, op: ">", value: 57}
    flap_count: 100000
"""


def rules_folder(out: Path) -> Path:
    """The default rule set plus a probe rule that never counts as flapping."""
    out.mkdir(parents=True, exist_ok=True)
    for f in RULES.glob("*.yaml"):
        (out / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    (out / "zz-probe.yaml").write_text(PROBE_RULE, encoding="utf-8")
    return out


def create_db() -> tuple[str, str]:
    name = f"hub_bench_rules_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, psycopg.conninfo.make_conninfo(ADMIN, dbname=name)


def drop_db(name: str) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _client(port: int, cid: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, clean_session=True)
    c.max_inflight_messages_set(2000)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _start_hub(url: str, registry: Path, broker_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    """`hub run` in its own process (ingest, rules and dispatch as deployed; no API), started
    once its ingest session is subscribed."""
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_MQTT_URL": broker_url, "HUB_REGISTRY": str(registry),
           "HUB_RULES": str(rules_folder(registry.parent / "rules")), "HUB_API_ENABLED": "false",
           "HUB_MQTT_CLIENT_ID": "bench-rules-hub", "HUB_LOG_LEVEL": "INFO"}
    log = open(log_path, "ab")  # noqa: SIM115  (the child keeps writing to it)
    hub = subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while b"hub worker" not in log_path.read_bytes():
        if hub.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"hub did not start; see {log_path}")
        time.sleep(0.2)
    return hub


def lift_telemetry(k: int, ts_ms: float) -> dict[str, object]:
    """A lift in service, never a fault: the probe's must be the only alarms. Doors stay closed
    (an open door while running, or held open at a stop for 60 s, is an alarm); a lift's `k`
    keeps its parity (2,000 topics), so it is always moving or always standing empty."""
    running = k & 1
    return {"ts": ts_ms, "running": running, "floor": k % 18, "door_state": "closed_locked",
            "passenger": 0, "speed": 1.5 if running else 0.0, "load": 40.0}


def latency_under_load(url: str, registry: Path, port: int, broker_url: str, *, rate: int, seconds: float,
                       publishers: int) -> dict[str, Any]:
    hub = _start_hub(url, registry, broker_url, registry.parent / "hub.log")
    try:
        return _probe_under_load(url, hub, port, rate=rate, seconds=seconds, publishers=publishers)
    finally:  # also when the run fails: a leftover hub would load the next benchmark
        hub.terminate()
        try:
            hub.wait(60)
        except subprocess.TimeoutExpired:
            hub.kill()


def _probe_under_load(url: str, hub: subprocess.Popen[bytes], port: int, *, rate: int, seconds: float,
                      publishers: int) -> dict[str, Any]:
    stop = threading.Event()
    probe_states: list[tuple[float, str]] = []

    def listen() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("LISTEN hub_alarms")
            while not stop.is_set():
                # Iterate, not list(): the generator yields each notification as it arrives, and a
                # list would stamp them all at the end of the 0.2 s window.
                for note in conn.notifies(timeout=0.2):
                    at = time.perf_counter()
                    msg = orjson.loads(note.payload)
                    if msg.get("rule_id") == "bench-probe":
                        probe_states.append((at, msg["state"]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)
    load = PacedPublishers(port, [f"facility/demo/lift-{i:05d}/telemetry" for i in range(publishers)], lift_telemetry,
                           name="bench-load")
    probe = _client(port, "bench-probe")
    latencies: list[float] = []
    timeline: list[tuple[float, int]] = []  # (seconds into the run, ms) of each probe
    lost = 0
    probe_sent = 0.0
    hot = False
    proc = psutil.Process(hub.pid)
    peak_rss = 0
    try:
        load.start(rate)
        time.sleep(2.0)  # let the hub reach the offered rate before probing
        sent0, start = load.sent, time.perf_counter()
        next_probe = start
        while time.perf_counter() - start < seconds:
            now = time.perf_counter()
            if now >= next_probe:
                hot = not hot
                probe.publish(f"facility/demo/{PROBE_DEVICE}/telemetry",
                              json.dumps({"ts": datetime.now(UTC).isoformat(), "temperature": 70.0 if hot else 20.0}), qos=1)
                if hot:
                    if probe_sent:
                        lost += 1  # no alarm within the 2 s probe cycle
                        timeline.append((round(probe_sent - start, 1), -1))
                    probe_sent = time.perf_counter()
                next_probe = now + 1.0
                peak_rss = max(peak_rss, proc.memory_info().rss)
            if probe_sent:  # the first "active" after the hot probe, even if it came after the cold one
                hit = next((at for at, state in probe_states if state == "active" and at > probe_sent), None)
                if hit is not None:
                    latencies.append(hit - probe_sent)
                    timeline.append((round(probe_sent - start, 1), round((hit - probe_sent) * 1000)))
                    probe_sent = 0.0
            time.sleep(0.001)
        elapsed = time.perf_counter() - start
        offered = (load.sent - sent0) / elapsed
    finally:
        load.stop()
        probe.loop_stop()
    # Everything offered must be stored: the rate counts only if the hub kept up with it.
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM readings r JOIN devices d ON d.id = r.device_id"
                               " WHERE d.device_id LIKE 'lift-%%' AND r.metric = 'speed'").fetchone()
        stored = row[0] if row else 0
        if stored >= load.sent:
            break
        time.sleep(0.5)
    with psycopg.connect(url) as conn:
        other_alarms: dict[str, int] = dict(conn.execute("SELECT rule_id, count(*) FROM alarms WHERE rule_id <> 'bench-probe' GROUP BY 1").fetchall())
    stop.set()
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {"rate_sent": offered, "messages_sent": load.sent, "messages_stored": stored, "probes": len(latencies), "lost": lost,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "peak_rss_mb": peak_rss / 2**20,
            "timeline": timeline, "other_alarms": other_alarms}


def _flips(rng: np.random.Generator, n: int, devices: int, p: float = 0.05) -> Any:
    """0/1 states per device that change with probability p per sample (a lift's rhythm)."""
    flips = (rng.random(n) < p).reshape(-1, devices)
    return (np.cumsum(flips, axis=0) % 2).reshape(-1).astype(float)


def evaluations(devices: int, samples: int) -> dict[str, float]:
    """Engine over synthetic arrays vs `values > threshold` in bare numpy, same arrays."""
    registry = load_registry(scaled_registry(devices, Path(tempfile.mkdtemp()) / "reg.yaml"))
    ids = {key: i + 1 for i, key in enumerate(sorted(registry.devices))}
    metas = device_metas(registry, ids)
    engine = Engine(load_rules(RULES), metas)
    lift_ids = np.array([ids[("demo", f"lift-{i:05d}")] for i in range(devices)], np.int64)
    rng = np.random.default_rng(1)
    n = devices * samples
    metrics = ["speed", "load", "running", "door_state", "passenger"]
    t0 = datetime(2026, 11, 23, tzinfo=UTC).timestamp()
    dev = np.tile(lift_ids, samples)
    ts = t0 + np.repeat(np.arange(samples, dtype=float), devices)
    parts = []
    for m in metrics:
        v = {"speed": rng.normal(1.5, 0.2, n), "load": rng.uniform(0, 100, n), "running": _flips(rng, n, devices),
             "door_state": _flips(rng, n, devices), "passenger": _flips(rng, n, devices)}[m]
        txt = np.full(n, None, object)
        if m == "door_state":
            txt = np.where(v == 0, "closed_locked", "open").astype(object)
        parts.append(Rows(ts, dev, np.full(n, engine.metric_ix[m], np.int64), v, txt))
    rows = Rows.concat(parts)
    batch = devices * 10  # ten samples per device per batch, like a 10 s batch
    began = time.perf_counter()
    engine.evaluations = 0
    per = len(metrics) * devices
    for k in range(0, samples, 10):
        idx = np.flatnonzero((ts[: n] >= t0 + k) & (ts[: n] < t0 + k + 10))
        sel = np.concatenate([idx + j * n for j in range(len(metrics))])
        engine.feed(rows.take(sel))
    engine_s = time.perf_counter() - began
    speed = parts[0].value
    began = time.perf_counter()
    reps = 0
    while time.perf_counter() - began < max(0.2, engine_s / 10):
        for k in range(0, samples, 10):
            sl = speed[k * devices:(k + 10) * devices]
            _ = sl > 2.1
        reps += 1
    numpy_s = (time.perf_counter() - began) / reps
    del batch, per
    return {"rows": float(len(rows)), "engine_rows_per_s": len(rows) / engine_s,
            "engine_evals_per_s": engine.evaluations / engine_s, "numpy_threshold_per_s": n / numpy_s,
            "rules": float(len(engine.rules))}


def backtest_speed(url: str, registry_path: Path, devices: int, minutes: int) -> dict[str, float]:
    """Store `minutes` of one-a-minute telemetry for every lift, then time the backtest over it."""
    registry = load_registry(registry_path)
    from hub.store.registry_sync import sync_registry

    with psycopg.connect(url, autocommit=True) as conn:
        ids = sync_registry(conn, registry, actor="bench")
        lifts = [ids[("demo", f"lift-{i:05d}")] for i in range(devices)]
        start = datetime(2026, 11, 20, tzinfo=UTC)
        with conn.cursor() as cur, cur.copy("COPY readings (ts, device_id, metric, value, text_value, quality) FROM STDIN") as cp:
            for m in range(minutes):
                t = start + timedelta(minutes=m)
                for d in lifts:
                    cp.write_row((t, d, "speed", 1.5, None, 0))
                    cp.write_row((t, d, "running", 1.0, None, 0))
                    cp.write_row((t, d, "door_state", 0.0, "closed_locked", 0))
                    cp.write_row((t, d, "passenger", 0.0, None, 0))
                    cp.write_row((t, d, "load", 30.0, None, 0))
        ruleset = load_rules(RULES)
        result = backtest(conn, ruleset, registry, start, start + timedelta(minutes=minutes), dsn=url)
    day_rows = 2000 * 1440 * 5
    return {"rows": float(result.rows), "seconds": result.seconds, "rows_per_s": result.rows / result.seconds,
            "day_2000_estimate_s": day_rows / (result.rows / result.seconds)}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="short run (shared machine)")
    p.add_argument("--rate", type=int, default=None, help="telemetry messages per second offered during the probes")
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--devices", type=int, default=None, help="lifts in the registry and in the backtest")
    p.add_argument("--publishers", type=int, default=None, help="lifts publishing the load (default: every lift)")
    args = p.parse_args(argv)
    rate = args.rate or (5000 if args.quick else 20_000)
    seconds = args.seconds or (16.0 if args.quick else 60.0)
    devices = args.devices or (200 if args.quick else 2000)
    minutes = 300 if args.quick else 1440
    tmp = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    registry = scaled_registry(devices, tmp / "registry.yaml")
    name, url = create_db()
    broker = MosquittoProcess(tmp / "mosquitto")
    try:
        migrate(url)
        broker.start()
        lat = latency_under_load(url, registry, broker.port, broker.url, rate=rate, seconds=seconds,
                                 publishers=min(args.publishers or devices, devices))
        print(f"latency: {lat}")
        ev = evaluations(devices, 60 if args.quick else 600)
        print(f"evaluations: {ev}")
        bt = backtest_speed(url, registry, devices, minutes)
        print(f"backtest: {bt}")
    finally:
        with contextlib.suppress(Exception):
            broker.stop()
        drop_db(name)
    mode = "quick run (--quick): indicative only" if args.quick else "full run"
    kept_up = lat["messages_stored"] >= lat["messages_sent"]
    met_latency = "met" if lat["p99_ms"] < 1000 and lat["lost"] == 0 and lat["rate_sent"] >= 0.98 * 20_000 and kept_up else "NOT met"
    day = bt["day_2000_estimate_s"]
    if minutes == 1440 and devices == 2000:
        backtest_line = f"a day of 2,000 lifts at 5 metrics/min, replayed: **{bt['seconds']:.1f} s** (target < 60 s: {'met' if bt['seconds'] < 60 else 'NOT met'})"
    else:
        backtest_line = f"a day of 2,000 devices at 5 metrics/min ≈ {day:.0f} s (extrapolated from this run)"
    other = ", ".join(f"{rule} ×{n}" for rule, n in sorted(lat["other_alarms"].items()))
    body = f"""## Rules: alarm latency and evaluation rate

`python -m bench.rules{' --quick' if args.quick else ''}` — {mode}.

| figure | value | raw limit beside it |
|---|---|---|
| publish → alarm committed, p50 | {lat['p50_ms']:.0f} ms | |
| publish → alarm committed, p99 | **{lat['p99_ms']:.0f} ms** ({lat['probes']} probes, {lat['lost']} without an alarm within 2 s) | target p99 < 1000 ms at 20,000 msg/s: **{met_latency}** |
| ingest load offered during the probes | {lat['rate_sent']:,.0f} msg/s QoS 1 from {min(args.publishers or devices, devices):,} lifts (pre-framed QoS 1 publishers in their own process); {lat['messages_stored']:,} of {lat['messages_sent']:,} stored | hub peak RSS {lat['peak_rss_mb']:.0f} MB |
| engine, default rule set ({ev['rules']:.0f} rules) | {ev['engine_rows_per_s']:,.0f} rows/s, {ev['engine_evals_per_s']:,.0f} condition evaluations/s | bare numpy `v > x`: {ev['numpy_threshold_per_s']:,.0f} values/s |
| backtest from PostgreSQL | {bt['rows_per_s']:,.0f} rows/s ({bt['rows']:,.0f} rows in {bt['seconds']:.1f} s) | {backtest_line} |

The hub is `hub run` in its own process (ingest, default rules plus a probe rule, dispatch; no
API), with the default settings (batches of up to 20,000 readings or 200 ms, rollups every
30 s). The probe is a detector threshold without a duration, crossed up every 2 s, so the
latency is broker + ingest batch + commit + rule evaluation + alarm transaction + NOTIFY. The
lifts' telemetry is fault-free; alarms raised besides the probe's: {other or 'none'}. Probe
latencies in ms, every 2 s (−1: lost): {' '.join(str(ms) for _, ms in lat['timeline'])}.
"""
    write_section("rules", body)
    print(body)
    figures = {"alarm_p50_ms": lat["p50_ms"], "alarm_p99_ms": lat["p99_ms"], "lost_probes": float(lat["lost"]),
               "offered_msgs_per_s": lat["rate_sent"], "unstored_messages": float(lat["messages_sent"] - lat["messages_stored"]),
               "engine_rows_per_s": ev["engine_rows_per_s"], "numpy_threshold_per_s": ev["numpy_threshold_per_s"]}
    if minutes == 1440 and devices == 2000:
        figures["backtest_day_2000_s"] = bt["seconds"]
    return figures


if __name__ == "__main__":
    main()
