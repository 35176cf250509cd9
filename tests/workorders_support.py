"""Helpers for the work-order tests: seed the demo registry, stand in for the rule engine."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import psycopg

from hub.registry import load_registry
from hub.store.registry_sync import sync_registry
from tests.support import ROOT

DEMO = ROOT / "examples" / "sites" / "demo.yaml"


def seed(db_url: str, registry: Path = DEMO) -> dict[tuple[str, str], int]:
    with psycopg.connect(db_url) as conn:
        return sync_registry(conn, load_registry(registry), actor="test")


def round_the_clock_registry(tmp: Path) -> Path:
    """The demo site with the lift contractor on call all day (two shifts meeting at noon and midnight)."""
    text = DEMO.read_text(encoding="utf-8").replace(
        '  - {staff: lift-co, site: demo, start: "00:00", end: "23:59"}',
        '  - {staff: lift-co, site: demo, start: "00:00", end: "12:00"}\n'
        '  - {staff: lift-co, site: demo, start: "12:00", end: "00:00"}')
    assert "12:00" in text
    path = tmp / "site.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def raise_alarm(conn: psycopg.Connection, device_pk: int | None, *, raised_at: datetime, kind: str = "entrapment",
                rule_id: str = "test.entrapment", severity: str = "critical", site: str = "demo",
                scope: str | None = None, parent: int | None = None) -> int:
    """What the rule engine does when it raises an alarm (0100's contract), committed; `parent`
    is the root cause it is grouped under."""
    row = conn.execute(
        """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, raised_at, parent_id)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (rule_id, site, device_pk, scope or f"device:{device_pk}", kind, severity, f"{kind} on {device_pk}",
         raised_at, parent)).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def clear_alarm(conn: psycopg.Connection, alarm_id: int, *, at: datetime) -> None:
    conn.execute("UPDATE alarms SET state = 'cleared_unack', cleared_at = %s, updated_at = now() WHERE id = %s",
                 (at, alarm_id))
    conn.commit()
