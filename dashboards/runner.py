"""Run a panel's SQL the way Grafana would, for `hub top` and `hub report daily`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg

from dashboards.macros import QueryContext, expand
from dashboards.queries import VARIABLES, PanelQuery


def all_values(conn: psycopg.Connection, *, sites: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Every value of each template variable: what Grafana's "All" selects."""
    site_list = list(sites) if sites else [r[0] for r in conn.execute(VARIABLES["site"])]
    values: dict[str, list[str]] = {"site": site_list or ["-"]}
    ctx = QueryContext(datetime.now().astimezone(), datetime.now().astimezone(), variables=values)
    for name in ("building", "grid", "kind"):
        sql, params = expand(VARIABLES[name], ctx)
        values[name] = [r[0] for r in conn.execute(sql.encode(), params)] or ["-"]
    return values


def run_panel(conn: psycopg.Connection, panel: PanelQuery, *, start: datetime, stop: datetime,
              variables: Mapping[str, Sequence[str]], interval: timedelta = timedelta(minutes=1)) -> list[dict[str, Any]]:
    sql, params = expand(panel.sql, QueryContext(start, stop, interval, variables))
    cur = conn.execute(sql.encode(), params)
    assert cur.description is not None
    names = [c.name for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
