"""`hub report daily`: the daily operations report (数字运营日报) as one self-contained HTML file.

`collect` runs the report panels' SQL (dashboards.queries, REPORT_PANELS) for the site's local
day and the day before; `render_html` is pure and embeds matplotlib charts as base64 PNGs, so
the file can be mailed or archived with nothing else beside it.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import psycopg

from dashboards import queries as q
from dashboards.runner import run_panel
from hub.errors import ConfigError

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class DaySection:
    """One report section for the day and the previous day."""

    key: str
    today: Rows = field(default_factory=list)
    previous: Rows = field(default_factory=list)


@dataclass(frozen=True)
class DailyReport:
    site: str
    site_name: str
    timezone: str
    day: date
    sections: dict[str, DaySection]
    generated_at: datetime


def day_bounds(day: date, tz: str) -> tuple[datetime, datetime]:
    """The site's local calendar day as an aware [start, stop) range."""
    zone = ZoneInfo(tz)
    start = datetime.combine(day, time(0), zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), zone)


def collect(conn: psycopg.Connection, site: str, day: date) -> DailyReport:
    row = conn.execute("SELECT name, timezone FROM sites WHERE id = %s", (site,)).fetchone()
    if row is None:
        known = [r[0] for r in conn.execute("SELECT id FROM sites ORDER BY id")]
        raise ConfigError(f"--site {site!r}: no such site (known: {', '.join(known) or 'none'})")
    name, tz = row
    variables = {"site": [site]}
    sections: dict[str, DaySection] = {}
    for panel in q.REPORT_PANELS:
        runs = []
        for d in (day, day - timedelta(days=1)):
            start, stop = day_bounds(d, tz)
            runs.append(run_panel(conn, panel, start=start, stop=stop, variables=variables, interval=timedelta(hours=1)))
        sections[panel.key] = DaySection(panel.key, runs[0], runs[1])
    return DailyReport(site, name or site, tz, day, sections, datetime.now(ZoneInfo(tz)))


# -- rendering (pure) ------------------------------------------------------------------------------
def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def bar_chart(title: str, labels: Sequence[str], today: Sequence[float], previous: Sequence[float], unit: str = "") -> str:
    """Grouped bars, today beside the previous day; base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], previous, width=0.4, label="previous day", color="#9aa5b1")
    ax.bar([x + 0.2 for x in xs], today, width=0.4, label="this day", color="#2f7ed8")
    ax.set_xticks(list(xs), list(labels), rotation=20, ha="right")
    ax.set_title(title)
    if unit:
        ax.set_ylabel(unit)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _num(value: Any) -> float:
    if value is None:
        return 0.0
    return float(value) if isinstance(value, int | float | Decimal) else 0.0


def _aligned(section: DaySection, label: str, value: str) -> tuple[list[str], list[float], list[float]]:
    labels = sorted({str(r[label]) for r in section.today} | {str(r[label]) for r in section.previous})
    today = {str(r[label]): _num(r[value]) for r in section.today}
    prev = {str(r[label]): _num(r[value]) for r in section.previous}
    return labels, [today.get(k, 0.0) for k in labels], [prev.get(k, 0.0) for k in labels]


def _delta(today: float, previous: float) -> str:
    diff = today - previous
    sign = "+" if diff > 0 else ""
    return f"{sign}{diff:g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _compare(section: DaySection, label: str, value: str) -> str:
    labels, today, prev = _aligned(section, label, value)
    rows = [(k, f"{t:g}", f"{p:g}", _delta(t, p)) for k, t, p in zip(labels, today, prev, strict=True)]
    return _table([label, "this day", "previous day", "change"], rows)


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _local_time(at: datetime | None, tz: str) -> str:
    return "" if at is None else f"{at.astimezone(ZoneInfo(tz)):%H:%M}"


def render_html(report: DailyReport) -> str:
    s = report.sections
    parts: list[str] = []

    avail = s["report.availability"]
    labels, today, prev = _aligned(avail, "kind", "availability_pct")
    parts.append("<h2>Device availability</h2><p>Share of device-hours with data, by device kind (%).</p>")
    parts.append(_img(bar_chart("Availability by kind", labels, today, prev, "%"), "availability by kind"))
    parts.append(_compare(avail, "kind", "availability_pct"))

    alarms = s["report.alarms"]
    labels, today, prev = _aligned(alarms, "kind", "alarms")
    parts.append("<h2>Alarms by kind</h2>")
    parts.append(_img(bar_chart("Alarms raised", labels, today, prev), "alarms by kind") if labels else "<p>No alarms on either day.</p>")
    parts.append(_compare(alarms, "kind", "alarms"))
    total_today, total_prev = sum(today), sum(prev)
    parts.append(f"<p class='total'>Total: {total_today:g} (previous day {total_prev:g}, {_delta(total_today, total_prev)})</p>")

    parts.append("<h2>Work orders</h2><p>Orders raised this day, by their state now.</p>")
    wo = s["report.work_orders"]
    labels, today, prev = _aligned(wo, "state", "orders")
    if labels:
        parts.append(_img(bar_chart("Work orders by state", labels, today, prev), "work orders by state"))
    parts.append(_compare(wo, "state", "orders"))
    rates = s["report.on_time"]
    t, p = (rates.today or [{}])[0], (rates.previous or [{}])[0]
    rows = [(name, t.get(col), p.get(col)) for name, col in (
        ("orders", "orders"), ("still open", "open_orders"),
        ("accepted on time (接单及时率) %", "accept_on_time_pct"), ("on site on time (到场及时率) %", "arrive_on_time_pct"),
        ("resolved on time (完成及时率) %", "resolve_on_time_pct"),
        ("response mean (min)", "response_mean_min"), ("response p90 (min)", "response_p90_min"),
        ("resolution mean (min)", "resolution_mean_min"), ("resolution p90 (min)", "resolution_p90_min"))]
    parts.append(_table(["work-order KPI", "this day", "previous day"], rows))
    people = s["report.people"]
    if people.today:
        parts.append("<h3>By person</h3>")
        parts.append(_table(["staff", "name", "orders", "accepted on time %", "resolved on time %",
                             "response mean (min)", "rating"],
                            [(r["staff"], r["name"], r["orders"], r["accept_on_time_pct"], r["resolve_on_time_pct"],
                              r["response_mean_min"], r["rating"]) for r in people.today]))

    parts.append("<h2>Staff attendance</h2><p>Check-ins and check-outs (app or badge at a gate).</p>")
    att = s["report.attendance"]
    parts.append(_table(["staff", "name", "role", "first check-in", "last check-out", "hours"],
                        [(r["staff"], r["name"], r["role"], _local_time(r["first_in"], report.timezone),
                          _local_time(r["last_out"], report.timezone), r["hours"]) for r in att.today]))
    parts.append(f"<p class='total'>Staff present: {len(att.today)} (previous day {len(att.previous)})</p>")

    parts.append("<h2>Resident ratings</h2>")
    rat = s["report.ratings"]
    t, p = (rat.today or [{}])[0], (rat.previous or [{}])[0]
    parts.append(_table(["", "this day", "previous day"], [
        (label, t.get(col), p.get(col)) for label, col in (
            ("ratings", "ratings"), ("mean rating (1-5)", "mean_rating"), ("satisfied (4-5) %", "satisfied_pct"),
            ("complaints (投诉)", "complaints"), ("praise (表扬)", "praise"))]))

    title = f"Daily operations report (数字运营日报) · {report.site_name} · {report.day.isoformat()}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #1f2933; }}
h1 {{ font-size: 1.5rem; }} h2 {{ border-bottom: 1px solid #cbd2d9; padding-bottom: .2rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; margin: .5rem 0; }} td, th {{ border: 1px solid #cbd2d9; padding: .25rem .6rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} .na {{ color: #7b8794; font-style: italic; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Site <b>{html.escape(report.site)}</b>, local day in {html.escape(report.timezone)}, compared with the previous day.
Generated {report.generated_at:%Y-%m-%d %H:%M %Z}.</p>
{"".join(parts)}
</body></html>
"""
