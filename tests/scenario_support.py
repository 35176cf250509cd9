"""Run a simulator scenario against the hub with the real rule engine, on a compressed clock.

The simulators compress time by `speed`: a message's timestamp advances 1/speed s per simulated
second, so a 20 s detection delay shows as 20/speed s in the store. The rule engine measures
durations in those timestamps, so the same compression is applied to the rule set: every
duration is divided by `speed` and every rate threshold (per second) multiplied by it. The
hub's Modbus offline detection (three heartbeats) is shortened the same way.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from rules.component import DEFAULT_RULES
from rules.model import parse_duration
from tests.support import ROOT, free_port

DEMO = ROOT / "examples" / "sites" / "demo.yaml"
RULE_DURATIONS = ("for", "clear_for", "after", "window", "clear_after", "flap_window", "flap_clear_for")


def _scaled(raw: Any, speed: float) -> float:
    return parse_duration(raw) / speed


def compress_rule(rule: dict[str, Any], speed: float) -> dict[str, Any]:
    """One rule's YAML mapping with durations / speed and rate thresholds × speed (pure)."""
    out = dict(rule)
    for key in RULE_DURATIONS:
        if key in out and out[key] is not None:
            out[key] = _scaled(out[key], speed)
    for nested in ("group", "root_cause_of"):
        if isinstance(out.get(nested), dict) and "window" in out[nested]:
            out[nested] = {**out[nested], "window": _scaled(out[nested]["window"], speed)}
    cond = out.get("condition")
    if isinstance(cond, dict) and cond.get("rate"):
        out["condition"] = {**cond, "value": float(cond["value"]) * speed}
    return out


def compressed_rules(dest: Path, speed: float, source: Path = DEFAULT_RULES) -> Path:
    """Copy the rule folder to `dest` with every rule compressed by `speed`."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in sorted(source.glob("*.yaml")):
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        data["rules"] = [compress_rule(r, speed) for r in data.get("rules", [])]
        (dest / file.name).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return dest


@dataclass(frozen=True)
class SiteFiles:
    registry: Path
    modbus_ports: dict[int, int]   # the registry's port → the port the simulator listens on


def demo_site(tmp: Path, *, speed: float, modbus_heartbeat_s: int = 1) -> SiteFiles:
    """The demo registry with its Modbus devices on free ports, polled `speed` times as often
    (a poll every simulated second, as at real speed) and with a short heartbeat."""
    ports = {15020: free_port(), 15021: free_port()}
    text = DEMO.read_text(encoding="utf-8")
    for old, new in ports.items():
        text = text.replace(f"port: {old}", f"port: {new}")
    text = text.replace("heartbeat_s: 10", f"heartbeat_s: {modbus_heartbeat_s}")
    for interval in ("1.0", "2.0"):
        text = text.replace(f"poll_interval_s: {interval}", f"poll_interval_s: {float(interval) / speed:.4f}")
    path = tmp / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return SiteFiles(path, {new: new for new in ports.values()})


@dataclass(frozen=True)
class AlarmRow:
    id: int
    rule_id: str
    scope_key: str
    device: str | None
    kind: str
    severity: str
    state: str
    cleared_at: Any
    parent_id: int | None

    @property
    def what(self) -> tuple[str, str, str, str]:
        """(kind, scope without the site, severity, rule id): what a scenario's expectation names.

        The scope is the device for device rules, `zone:Z` / `building:B` for group alarms."""
        return (self.kind, self.scope_key.split("/", 1)[1], self.severity, self.rule_id)


def alarm_rows(db_url: str) -> list[AlarmRow]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT a.id, a.rule_id, a.scope_key, d.device_id, a.kind, a.severity, a.state, a.cleared_at, a.parent_id
                 FROM alarms a LEFT JOIN devices d ON d.id = a.device_id ORDER BY a.id""").fetchall()
    return [AlarmRow(*r) for r in rows]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"
