"""`hub top`: the E-control view in a terminal, for a machine without Grafana.

Runs the overview panels' own SQL (devices by kind, active alarms as incidents — one row per root
cause with the number of alarms grouped under it —, the work-order queue with the next running SLA
clock of each open order) and draws them with rich. `snapshot` does the I/O; `render` is pure,
so one frame can be printed and tested.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dashboards import queries as q
from dashboards.runner import all_values, run_panel
from hub.store.db import connect

SEVERITY_STYLE = {"critical": "bold white on red", "major": "bold red", "minor": "yellow", "warning": "cyan"}


@dataclass(frozen=True)
class TopSnapshot:
    at: datetime
    by_kind: list[dict[str, Any]]
    alarms: list[dict[str, Any]]
    work_orders: list[dict[str, Any]]
    sites: list[str] = field(default_factory=list)


def snapshot(conn: psycopg.Connection, *, now: datetime | None = None) -> TopSnapshot:
    at = now or datetime.now(UTC)
    values = all_values(conn)

    def panel(query: q.PanelQuery) -> list[dict[str, Any]]:
        return run_panel(conn, query, start=at - timedelta(hours=1), stop=at, variables=values)

    return TopSnapshot(
        at=at,
        by_kind=panel(q.ONLINE_BY_KIND),
        alarms=panel(q.ACTIVE_ALARMS),
        work_orders=panel(q.WORK_ORDER_QUEUE),
        sites=values["site"],
    )


def _countdown(minutes: Any) -> Text:
    if minutes is None:
        return Text("no SLA", style="dim")
    m = int(minutes)
    if m < 0:
        return Text(f"LATE {-m // 60}h{-m % 60:02d}m", style="bold red")
    return Text(f"{m // 60}h{m % 60:02d}m left", style="yellow" if m < 15 else "green")


def render(snap: TopSnapshot) -> Group:
    """One frame: devices by kind, active alarms, open work orders with their SLA countdown."""
    devices = Table(title="Devices", expand=True)
    for col in ("kind", "online", "offline"):
        devices.add_column(col, justify="left" if col == "kind" else "right")
    total_on = total_off = 0
    for row in snap.by_kind:
        total_on += row["online"]
        total_off += row["offline"]
        devices.add_row(row["kind"], str(row["online"]),
                        Text(str(row["offline"]), style="bold red" if row["offline"] else ""))
    devices.add_row(Text("all", style="bold"), str(total_on), str(total_off))

    # One row per incident (dashboards.queries.ACTIVE_ALARMS): alarms grouped under a root cause
    # are counted on their root's row, not listed.
    grouped = sum(int(a["grouped"]) for a in snap.alarms)
    title = f"Active alarms ({len(snap.alarms)})" + (f" · {grouped} more grouped under them" if grouped else "")
    alarms = Table(title=title, expand=True)
    for col in ("severity", "age", "site", "device", "kind", "title", "state", "grouped"):
        alarms.add_column(col, justify="right" if col == "grouped" else "left")
    for a in snap.alarms[:20]:
        alarms.add_row(Text(a["severity"], style=SEVERITY_STYLE.get(a["severity"], "")),
                       f"{int(a['age_min'] or 0)} min", a["site"], a["device"] or "-", a["kind"], a["title"], a["state"],
                       f"+{a['grouped']}" if a["grouped"] else "")

    parts: list[Any] = [
        Text(f"facility hub · {', '.join(snap.sites)} · {snap.at:%Y-%m-%d %H:%M:%S %Z}", style="bold"),
        devices, alarms,
    ]
    orders = Table(title=f"Open work orders ({len(snap.work_orders)})", expand=True)
    for col in ("SLA", "step", "order", "site", "priority", "state", "assignee", "title"):
        orders.add_column(col)
    for w in snap.work_orders[:20]:
        orders.add_row(_countdown(w["minutes_left"]), w["due_step"] or "-", str(w["work_order"]), w["site"],
                       w["priority"], w["state"], w["assignee"] or "-", w["title"])
    parts.append(orders)
    return Group(*parts)


def run_top(dsn: str, *, once: bool, interval: float = 2.0, console: Console | None = None) -> None:
    console = console or Console()
    with connect(dsn, autocommit=True, application_name="hub-top") as conn:
        conn.execute("SET default_transaction_read_only = on")
        if once:
            console.print(render(snapshot(conn)))
            return
        with Live(render(snapshot(conn)), console=console, refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(conn)))
