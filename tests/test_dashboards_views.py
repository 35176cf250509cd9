"""`hub top --once` and `hub report daily` against real databases filled with simulated data."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from hub.cli import main
from tests.dashboards_fill import filled_database

NOW = datetime(2026, 11, 18, 2, 0, tzinfo=UTC)  # 10:00 on 2026-11-18 in Asia/Shanghai
DAY = date(2026, 11, 18)


def _previous_day_alarms(url: str) -> None:
    """Two alarms on the previous local day, so the report has something to compare with."""
    with psycopg.connect(url) as conn, conn.transaction():
        for kind in ("entrapment", "device_offline"):
            conn.execute(
                """INSERT INTO alarms (rule_id, site_id, scope_key, kind, severity, state, title, detail,
                                       raised_at, closed_at)
                   VALUES (%s, 'demo', %s, %s, 'major', 'cleared', 'earlier', %s, %s, %s)""",
                (f"old-{kind}", f"demo/{kind}", kind, Jsonb({}), NOW - timedelta(days=1),
                 NOW - timedelta(days=1) + timedelta(minutes=5)))


@pytest.fixture(scope="module")
def wo_db(pg_server: Any) -> Iterator[str]:
    """Demo data with the work orders of `tests.dashboards_fill.fill_work_orders`."""
    with filled_database(pg_server.admin_url, now=NOW, prefix="hub_dash_vw") as url:
        _previous_day_alarms(url)
        yield url


@pytest.fixture(scope="module")
def no_orders_db(pg_server: Any) -> Iterator[str]:
    """Demo telemetry and alarms, but no work order or attendance yet (a fresh site)."""
    with filled_database(pg_server.admin_url, now=NOW, work_orders=False, prefix="hub_dash_v") as url:
        yield url


def _top(url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("HUB_DATABASE_URL", url)
    monkeypatch.setenv("COLUMNS", "180")
    assert main(["top", "--once"]) == 0
    return capsys.readouterr().out


def test_top_once_prints_devices_alarms_and_open_work_orders_with_sla_countdowns(
        wo_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = _top(wo_db, monkeypatch, capsys)
    rows = {m[1]: (int(m[2]), int(m[3])) for m in re.finditer(r"│ (\w+)\s+│\s+(\d+) │\s+(\d+) │", out)}
    assert rows["elevator"] == (4, 0) and rows["gate"] == (2, 1) and rows["all"] == (15, 1)
    # Incidents, as on the dashboard (tests/dashboards_fill.py `_alarms`): the entrapment's fault
    # 01, alarm button and outside-the-door-zone alarms are one "+3" on its row, not rows.
    assert "Active alarms (5) · 3 more grouped under them" in out
    assert out.index("lift A: fault 01") < out.index("Passenger trapped") < out.index("lift A: alarm button") \
        < out.index("Fire panel reports a fault") < out.index("lobby door offline")
    assert re.search(r"│ Passenger trapped in Building 1 lift B\s+│ active\s+│\s+\+3 │", out), out
    assert "lift B: fault 01" not in out and "stopped outside the door zone" not in out
    assert "Open work orders (4)" in out
    orders = out[out.index("Open work orders (4)"):]
    # Three late against the wall clock (made on the test's fixed day), soonest due first; the
    # order made now has its accept clock running (due within the hour).
    late = re.findall(r"LATE \d+h\d\dm\s+│ (\w+)\s+│ \d+\s+│ demo\s+│ (p\d)\s+│ (\w+)\s+│ ([\w-]+)", orders)
    assert late == [("accept", "p3", "assigned", "butler-zhao"), ("accept", "p2", "assigned", "tech-sun"),
                    ("resolve", "p1", "on_site", "lift-co")]
    assert re.search(r"0h(59|60)m left\s+│ accept\s+│ \d+\s+│ demo\s+│ p3\s+│ assigned\s+│ tech-zhou", orders) \
        or re.search(r"1h00m left\s+│ accept\s+│ \d+\s+│ demo\s+│ p3\s+│ assigned\s+│ tech-zhou", orders), orders


def test_top_once_with_no_work_orders(no_orders_db: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = _top(no_orders_db, monkeypatch, capsys)
    assert "Open work orders (0)" in out and "LATE" not in out


def _report(url: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HUB_DATABASE_URL", url)
    assert main(["report", "daily", "--site", "demo", "--date", DAY.isoformat(), "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8")


def test_daily_report_is_one_self_contained_html_file(wo_db: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    text = _report(wo_db, tmp_path / "wo.html", monkeypatch)
    assert "数字运营日报" in text and "2026-11-18" in text
    assert not re.search(r"""(src|href)=["'](?!data:)""", text), "no external resources"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 3  # availability, alarms, work orders by state
    assert all(base64.b64decode(i).startswith(b"\x89PNG\r\n\x1a\n") for i in images)
    # Alarms: 11 raised this day (by kind), 2 the previous day. A per-kind statistic: the alarms
    # grouped under an entrapment count too (tests/dashboards_fill.py `_alarms`).
    assert "Total: 11 (previous day 2, +9)" in text
    assert re.search(r"<td>entrapment</td><td>2</td><td>1</td><td>\+1</td>", text)
    assert re.search(r"<td>elevator_fault</td><td>2</td><td>0</td><td>\+2</td>", text)
    # Availability: data from 18:00 to 02:00 UTC touches 9 of the day's 24 hourly buckets, for
    # every kind (the previous day had none).
    section = text[text.index("Device availability"):text.index("Alarms by kind")]
    avail = re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td><td>([\d.]+)</td>", section)
    assert {k: (float(t), float(p)) for k, t, p in avail} == {
        k: (37.5, 0.0) for k in ("elevator", "fire_detector", "fire_module", "fire_panel", "gate",
                                  "parking_lane", "parking_meter")}
    # Work orders (made through dispatch and the work-order functions, tests/dashboards_fill.py).
    orders = text[text.index("<h2>Work orders</h2>"):text.index("<h2>Staff attendance</h2>")]
    assert "<td>cancelled</td><td>2</td><td>0</td><td>+2</td>" in orders
    assert "<td>resolved</td><td>2</td><td>1</td><td>+1</td>" in orders
    assert "<td>orders</td><td>9</td><td>1</td>" in orders
    assert "<td>accepted on time (接单及时率) %</td><td>57.1</td><td>0.0</td>" in orders
    assert "<td>on site on time (到场及时率) %</td><td>66.7</td><td>100.0</td>" in orders
    assert "<td>resolved on time (完成及时率) %</td><td>50.0</td><td>100.0</td>" in orders
    assert "<td>response p90 (min)</td><td>40.0</td><td>120.0</td>" in orders
    assert "<td>lift-co</td><td>Lakeside Lift Maintenance Co.</td><td>1</td><td>100.0</td><td>0.0</td><td>3.0</td>" in orders
    attendance = text[text.index("<h2>Staff attendance</h2>"):text.index("<h2>Resident ratings</h2>")]
    assert re.findall(r"<tr><td>([\w-]+)</td><td>[^<]+</td><td>\w+</td><td>([\d:]*)</td><td>([\d:]*)</td><td>([\d.]+)</td>",
                      attendance) == [("butler-chen", "", "07:55", "7.9"), ("butler-wang", "07:50", "20:00", "12.2"),
                                      ("tech-liu", "08:10", "", "15.8")]
    assert "Staff present: 3 (previous day 1)" in attendance
    ratings = text[text.index("<h2>Resident ratings</h2>"):]
    assert "<td>mean rating (1-5)</td><td>3.00</td><td>5.00</td>" in ratings
    assert "<td>complaints (投诉)</td><td>1</td><td>0</td>" in ratings


def test_daily_report_of_a_site_without_work_orders(no_orders_db: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    text = _report(no_orders_db, tmp_path / "plain.html", monkeypatch)
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 2  # no work-order chart without orders
    assert "<td>orders</td><td></td><td></td>" in text  # no KPI row for a day without orders
    assert "Staff present: 0 (previous day 0)" in text


def test_daily_report_names_bad_input(no_orders_db: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", no_orders_db)
    assert main(["report", "daily", "--site", "demo", "--date", "18/11/2026"]) == 2
    assert "--date '18/11/2026': expected YYYY-MM-DD" in capsys.readouterr().err
    assert main(["report", "daily", "--site", "atlantis", "--date", "2026-11-18"]) == 2
    assert "no such site (known: demo)" in capsys.readouterr().err
