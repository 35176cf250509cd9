"""Query time of every E-control overview panel on a large fleet, rollups beside the raw table.

Full run: 1,000 devices x 7 days of minute data x 4 metrics (about 40 million readings), the
panels over a 7-day range. The data is generated inside PostgreSQL (generate_series), so the
load is bounded by the server, not by Python. `--quick` uses 100 devices x 1 day.

For the one overview panel that reads telemetry (devices reporting) the same statement runs a
second time with its tier forced to 'raw', i.e. straight on `readings`: that is the raw-table
figure beside the rollup one. Target: p95 < 200 ms per panel with rollups.

    python -m bench.dashboards [--quick] [--devices N] [--days D] [--repeat R] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.report import write_section
from dashboards import queries as q
from dashboards.macros import QueryContext, expand
from dashboards.runner import all_values
from hub.store.migrate import migrate

ADMIN_URL = os.environ.get("HUB_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
METRICS = ("m1", "m2", "m3", "m4")
KINDS = ("elevator", "elevator", "elevator", "gate", "gate", "fire_detector", "fire_detector",
         "fire_detector", "fire_panel", "parking_lane")
TARGET_MS = 200.0

@dataclass(frozen=True)
class Timing:
    panel: str
    source: str
    runs: int
    p50_ms: float
    p95_ms: float
    rows: int


def _url(admin: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(admin, dbname=name)


def generate(conn: psycopg.Connection, *, devices: int, days: int, end: datetime) -> int:
    """Registry rows, status, alarms, work orders and `devices x days x 1440 x 4` readings."""
    sites = max(1, devices // 100)
    start = end - timedelta(days=days)
    cur = conn.cursor()
    cur.execute("SET synchronous_commit = off")
    cur.execute(
        """INSERT INTO sites (id, name, timezone) SELECT 'site' || s, 'Site ' || s, 'Asia/Shanghai'
             FROM generate_series(1, %s) s""", (sites,))
    cur.execute(
        """INSERT INTO grids (site_id, id, buildings) SELECT s.id, g, ARRAY['b1', 'b2']
             FROM sites s, unnest(ARRAY['north', 'south']) g""")
    cur.execute(
        """INSERT INTO device_models (id, kind, protocol, spec)
           SELECT 'bench-' || k, k, 'mqtt', %s::jsonb FROM unnest(%s::text[]) k GROUP BY k""",
        (json.dumps({"metrics": [{"name": m, "type": "number"} for m in METRICS]}), list(set(KINDS))))
    cur.execute(
        """INSERT INTO devices (site_id, device_id, model_id, kind, protocol, building_id, grid_id)
           SELECT 'site' || (1 + (i - 1) %% %s), 'dev' || i, 'bench-' || (%s::text[])[1 + i %% %s],
                  (%s::text[])[1 + i %% %s], 'mqtt', 'b' || (1 + i %% 2),
                  CASE WHEN i %% 2 = 0 THEN 'north' ELSE 'south' END
             FROM generate_series(1, %s) i""",
        (sites, list(KINDS), len(KINDS), list(KINDS), len(KINDS), devices))
    cur.execute(
        """INSERT INTO device_status (device_id, online, changed_at, last_seen)
           SELECT id, id %% 20 <> 0, %s, %s FROM devices""", (end, end))
    cur.execute(
        """INSERT INTO staff (id, name, role, sites, grids)
           SELECT 'staff' || i, 'Staff ' || i, CASE WHEN i %% 3 = 0 THEN 'technician' ELSE 'butler' END,
                  ARRAY['site' || (1 + i %% %s)], ARRAY['north']
             FROM generate_series(1, %s) i""", (sites, sites * 8))
    cur.execute(
        """INSERT INTO shifts (staff_id, site_id, days, start_time, end_time)
           SELECT id, sites[1], ARRAY['mon','tue','wed','thu','fri','sat','sun'],
                  CASE WHEN mod(right(id, 1)::int, 2) = 0 THEN time '08:00' ELSE time '20:00' END,
                  CASE WHEN mod(right(id, 1)::int, 2) = 0 THEN time '20:00' ELSE time '08:00' END
             FROM staff""")
    cur.execute(
        """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, state, title,
                               raised_at, closed_at)
           SELECT 'r' || (i %% 10), d.site_id, d.id, 'k' || i, 'bench',
                  (ARRAY['critical', 'major', 'minor', 'warning'])[1 + i %% 4],
                  CASE WHEN i %% 10 = 0 THEN 'active' ELSE 'cleared' END, 'bench alarm',
                  %s - (i || ' minutes')::interval,
                  CASE WHEN i %% 10 = 0 THEN NULL ELSE %s - (i || ' minutes')::interval + interval '5 minutes' END
             FROM generate_series(1, %s) i JOIN devices d ON d.id = 1 + i %% %s""",
        (end, end, devices * 20, devices))
    _work_orders(cur, sites=sites, devices=devices, end=end)
    conn.commit()
    _readings(conn, devices=devices, start=start, end=end)
    rows = conn.execute("SELECT count(*) FROM readings").fetchone()
    conn.commit()
    return int(rows[0]) if rows else 0


def _work_orders(cur: psycopg.Cursor, *, sites: int, devices: int, end: datetime) -> None:
    """Five orders per device over the last days in the work-order schema (0200): one in six open.

    Written in bulk straight into the table: this is load for the panels' queries, not a test
    of the work-order functions (tests/dashboards_fill.py makes its orders through those)."""
    cur.execute(
        """INSERT INTO work_orders (site_id, kind, priority, state, title, grid_id, assignee, sla_start,
                                    created_at, accepted_at, on_site_at, resolved_at, accept_due, arrive_due,
                                    resolve_due, rating)
           SELECT 'site' || (1 + i %% %s), (ARRAY['repair', 'alarm', 'complaint'])[1 + i %% 3], 'p3', st,
                  'bench order', CASE WHEN i %% 2 = 0 THEN 'north' ELSE 'south' END, 'staff' || (1 + i %% 8),
                  t, t, t + interval '3 minutes',
                  CASE WHEN st IN ('on_site', 'closed') THEN t + interval '20 minutes' END,
                  CASE WHEN st = 'closed' THEN t + interval '90 minutes' END,
                  t + interval '15 minutes', t + interval '60 minutes', t + interval '240 minutes',
                  CASE WHEN st = 'closed' AND i %% 3 <> 1 THEN 1 + i %% 5 END
             FROM generate_series(1, %s) i
            CROSS JOIN LATERAL (SELECT %s - (i || ' minutes')::interval AS t,
                                       (ARRAY['assigned', 'accepted', 'on_site', 'closed', 'closed', 'closed'])[1 + i %% 6] AS st) x""",
        (sites, devices * 5, end))


def _readings(conn: psycopg.Connection, *, devices: int, start: datetime, end: datetime) -> None:
    cur = conn.cursor()
    step = 50
    for first in range(1, devices + 1, step):
        cur.execute(
            """INSERT INTO readings (ts, device_id, metric, value, quality)
               SELECT t, d.id, m, (d.id %% 7) + random(), 0
                 FROM devices d
                 CROSS JOIN unnest(%s::text[]) m
                 CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '1 minute',
                                            interval '1 minute') t
                WHERE d.id BETWEEN %s AND %s""",
            (list(METRICS), start, end, first, first + step - 1))
        conn.commit()
        print(f"  readings for devices {first}-{min(devices, first + step - 1)} loaded", file=sys.stderr)


def refresh(url: str, start: datetime, end: datetime, timescale: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if timescale:
            conn.execute("CALL refresh_continuous_aggregate('readings_1m', %s, %s)", (start, end))
            conn.execute("CALL refresh_continuous_aggregate('readings_1h', %s, %s)", (start, end))
        else:
            conn.execute("SELECT hub_refresh_rollups(%s, %s)", (start, end))
        conn.execute("VACUUM ANALYZE")


def time_query(conn: psycopg.Connection, sql: str, params: dict[str, object], repeat: int) -> tuple[list[float], int]:
    conn.execute(sql.encode(), params).fetchall()  # warm the cache once, as a dashboard refresh would
    samples, rows = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = len(conn.execute(sql.encode(), params).fetchall())
        samples.append((time.perf_counter() - t0) * 1000)
    return samples, rows


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def measure(url: str, *, end: datetime, days: int, repeat: int, raw_repeat: int) -> list[Timing]:
    results: list[Timing] = []
    with psycopg.connect(url, autocommit=True, user="hub_grafana") as conn:
        values = all_values(conn)
        ctx = QueryContext(end - timedelta(days=days), end, timedelta(hours=1) if days > 1 else timedelta(minutes=5), values)
        for panel in q.OVERVIEW:
            sql, params = expand(panel.sql, ctx)
            samples, rows = time_query(conn, sql, params, repeat)
            uses_readings = "hub_readings_tiered" in panel.sql
            tier = conn.execute("SELECT hub_tier(%s, %s)", (ctx.start, ctx.stop)).fetchone()
            source = f"rollup ({tier[0] if tier else '?'})" if uses_readings else "no readings"
            results.append(Timing(panel.key, source, repeat, statistics.median(samples), p95(samples), rows))
            if uses_readings:
                raw_sql = panel.sql.replace("hub_tier($__timeFrom(), $__timeTo())", "'raw'")
                sql, params = expand(raw_sql, ctx)
                samples, rows = time_query(conn, sql, params, raw_repeat)
                results.append(Timing(panel.key, "raw readings", raw_repeat, statistics.median(samples), p95(samples), rows))
    return results


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 devices x 1 day, few repeats")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--days", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)
    devices = args.devices or (100 if args.quick else 1000)
    days = args.days or (1 if args.quick else 7)
    repeat = args.repeat or (10 if args.quick else 30)
    raw_repeat = max(3, repeat // 5)
    end = datetime.now(UTC).replace(second=0, microsecond=0)

    name = f"hub_bench_dash_{secrets.token_hex(3)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _url(ADMIN_URL, name)
    try:
        report = migrate(url)
        print(f"{name}: {report.summary()}", file=sys.stderr)
        t0 = time.perf_counter()
        with psycopg.connect(url) as conn:
            readings = generate(conn, devices=devices, days=days, end=end)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        refresh(url, end - timedelta(days=days), end + timedelta(minutes=1), report.timescale)
        rollup_s = time.perf_counter() - t0
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT hub_grant_grafana()")
        results = measure(url, end=end, days=days, repeat=repeat, raw_repeat=raw_repeat)
    finally:
        if not args.keep:
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    store = "TimescaleDB" if report.timescale else "plain PostgreSQL"
    lines = [
        "## Dashboards: overview panel query times",
        "",
        f"{devices:,} devices x {days} day(s) of minute data x {len(METRICS)} metrics = {readings:,} readings "
        f"on {store} (generated in {load_s:.0f} s, rollups built in {rollup_s:.0f} s); each overview panel over "
        f"the last {days} day(s) with every site selected, as the read-only `hub_grafana` role, "
        f"{repeat} runs after one warm-up (raw: {raw_repeat}). Target: p95 < {TARGET_MS:.0f} ms with rollups.",
        "",
        "| panel | reads | runs | rows | p50 ms | p95 ms | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = "" if r.source == "raw readings" else ("met" if r.p95_ms < TARGET_MS else "MISSED")
        lines.append(f"| {r.panel} | {r.source} | {r.runs} | {r.rows} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {verdict} |")
    rollup = {r.panel: r for r in results if r.source.startswith("rollup")}
    raw = {r.panel: r for r in results if r.source == "raw readings"}
    for key, r in rollup.items():
        if key in raw and r.p95_ms > 0:
            lines.append("")
            lines.append(f"`{key}`: raw table p95 {raw[key].p95_ms:.1f} ms vs rollup p95 {r.p95_ms:.1f} ms "
                         f"= {raw[key].p95_ms / r.p95_ms:.1f}x faster with the rollup.")
    lines.append("")
    if args.quick or devices < 1000 or days < 7:
        lines.append(f"**Quick run** ({devices} devices x {days} day(s)), on a 2-core machine shared with other "
                     "work: not the full 40-million-row figure. Reproduce the full one with "
                     "`python -m bench.dashboards`.")
    else:
        lines.append("Reproduce with `python -m bench.dashboards` (quick form: `--quick`).")
    body = "\n".join(lines)
    print(body)
    write_section("dashboards", body)
    return {"worst_rollup_p95_ms": max((r.p95_ms for r in results if r.source != "raw readings"), default=0.0),
            "worst_raw_p95_ms": max((r.p95_ms for r in results if r.source == "raw readings"), default=0.0),
            "readings": float(readings)}


if __name__ == "__main__":
    main()
