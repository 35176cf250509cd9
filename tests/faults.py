"""Shared parts of the fault tests: sizes (short for CI, full on demand), a publisher that counts
what the broker acknowledged, the ledger of sent / stored / duplicated / dead-lettered / lost,
and the report collected into docs/fault-tests.md.

Run the full version with `HUB_FAULTS=full make test` or `pytest -m fault --full-faults`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.loadgen import publish_all

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "fault-tests.md"
_FULL = False


def configure(config: pytest.Config) -> None:
    global _FULL
    _FULL = bool(config.getoption("--full-faults", default=False)) or os.environ.get("HUB_FAULTS", "") == "full"


def full() -> bool:
    return _FULL


def size(short: int, full_size: int) -> int:
    """A test's load: `short` in CI, `full_size` with --full-faults / HUB_FAULTS=full."""
    return full_size if _FULL else short


# -- the ledger ------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Tally:
    """One fault scenario's outcome. `sent` counts messages the broker acknowledged."""

    scenario: str
    sent: int
    stored: int
    duplicated: int
    dead_lettered: int
    expected_dead: int
    detail: str = ""

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.expected_dead - self.stored) + max(0, self.expected_dead - self.dead_lettered)

    def row(self) -> str:
        return (f"| {self.scenario} | {self.sent:,} | {self.stored:,} | {self.duplicated:,} | "
                f"{self.dead_lettered:,} | **{self.lost:,}** | {self.detail} |")


HEAD = ("| scenario | sent | stored | duplicated | dead-lettered | lost | what happened |\n"
        "|---|---|---|---|---|---|---|")
_collected: list[Tally] = []
_skipped: list[tuple[str, str]] = []  # (test, reason)


def record(tally: Tally) -> Tally:
    """Print the scenario's table in the test output and keep it for docs/fault-tests.md."""
    _collected.append(tally)
    print(f"\n{HEAD}\n{tally.row()}")
    return tally


def collected() -> list[Tally]:
    return list(_collected)


def record_skip(test: str, reason: str) -> None:
    _skipped.append((test, reason))


def skipped() -> list[tuple[str, str]]:
    return list(_skipped)


def write_report() -> Path | None:
    """Rewrite this mode's section of docs/fault-tests.md with the tallies of this session."""
    if not _collected and not _skipped:
        return None
    mode = "full" if _FULL else "short"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(t.row() for t in _collected)
    command = "HUB_FAULTS=full make test  (or: pytest -m fault --full-faults)" if _FULL else "pytest -m fault"
    skips = "".join(f"\n- skipped `{test}`: {reason}" for test, reason in _skipped)
    block = (f"<!-- faults:{mode} -->\n## {mode.capitalize()} run ({stamp})\n\nCommand: `{command}`\n\n"
             f"{HEAD}\n{rows}\n{skips}\n<!-- /faults:{mode} -->")
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else _REPORT_HEADER
    pattern = re.compile(rf"<!-- faults:{mode} -->.*?<!-- /faults:{mode} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text, encoding="utf-8")
    return REPORT


_REPORT_HEADER = """# Fault tests

Written by the fault tests themselves (`tests/test_faults_*.py`, marker `fault`): each scenario
runs real PostgreSQL, a real Mosquitto and the real hub, breaks something under load, and counts
what happened to every message. **sent** = messages the broker acknowledged (PUBACK), **stored**
= messages whose rows are all in the database, **duplicated** = rows or dead letters written
more than once, **dead-lettered** = messages rejected with a reason, **lost** = sent but neither
stored nor dead-lettered. Lost and duplicated must be 0; the tests fail otherwise.

The short version runs in CI with every `make test`; the full version (bigger loads, longer
outages) is `HUB_FAULTS=full make test` or `pytest -m fault --full-faults`. How each scenario
works is in docs/faults.md.
"""


# -- publishing ------------------------------------------------------------------------------
def publish_items(host: str, port: int, items: Iterable[tuple[str, bytes]], *, inflight: int = 1000, qos: int = 1,
                  client_id: str | None = None) -> int:
    """Publish every (topic, payload) and wait for each PUBACK; returns how many were acknowledged.

    Raises if the broker does not acknowledge them all: a scenario's load is never silently smaller.
    """
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"faults-{time.time_ns()}", clean_session=True)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=60)
    client.loop_start()
    try:
        return publish_all(client, items, qos=qos)
    finally:
        client.disconnect()
        client.loop_stop()


# -- counting what landed ---------------------------------------------------------------------
@dataclass(frozen=True)
class Stored:
    rows: int
    distinct_rows: int
    messages: int  # distinct (device, ts) keys, i.e. telemetry messages with at least one row
    dead: int
    distinct_dead: int
    reasons: dict[str, int] = field(default_factory=dict)


def count_stored(db_url: str, *, reason_prefix_len: int = 40) -> Stored:
    with psycopg.connect(db_url) as c:
        rows, distinct_rows, messages = c.execute(
            "SELECT count(*), count(DISTINCT (device_id, metric, ts)), count(DISTINCT (device_id, ts)) FROM readings"
        ).fetchone()  # type: ignore[misc]
        dead, distinct_dead = c.execute(
            "SELECT count(*), count(DISTINCT (coalesce(topic, ''), md5(payload))) FROM dead_letters").fetchone()  # type: ignore[misc]
        reasons = dict(c.execute(
            "SELECT left(reason, %s), count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC", (reason_prefix_len,)
        ).fetchall())
    return Stored(rows, distinct_rows, messages, dead, distinct_dead, reasons)


def readings_count(db_url: str) -> int:
    try:
        with psycopg.connect(db_url, connect_timeout=2) as c:
            row = c.execute("SELECT count(*) FROM readings").fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return -1


def ledger(scenario: str, *, sent: int, expected_dead: int, metrics: int, db_url: str, detail: str = "") -> tuple[Tally, Stored]:
    """Tally a scenario from the database: every stored message must carry all its `metrics`."""
    s = count_stored(db_url)
    tally = Tally(
        scenario=scenario, sent=sent, stored=s.rows // metrics if metrics else s.messages,
        duplicated=(s.rows - s.distinct_rows) + (s.dead - s.distinct_dead),
        dead_lettered=s.distinct_dead, expected_dead=expected_dead, detail=detail,
    )
    return record(tally), s


# -- the hub as a process ----------------------------------------------------------------------
METRICS_TOKEN = "metrics-token-for-fault-tests"


def start_hub(db_url: str, broker_url: str, registry: Path, log_path: Path, *, client_id: str,
              api_port: int | None = None, **env_extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "HUB_DATABASE_URL": db_url, "HUB_MQTT_URL": broker_url, "HUB_REGISTRY": str(registry),
        "HUB_API_ENABLED": "true" if api_port else "false", "HUB_API_PORT": str(api_port or 0),
        "HUB_API_HOST": "127.0.0.1", "HUB_MQTT_CLIENT_ID": client_id, "HUB_LOG_LEVEL": "INFO",
        "HUB_METRICS_TOKEN": METRICS_TOKEN, **env_extra,
    }
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    return subprocess.Popen([sys.executable, "-m", "hub", "run"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def log_count(log_path: Path, needle: bytes) -> int:
    try:
        return log_path.read_bytes().count(needle)
    except FileNotFoundError:
        return 0


def stop_hub(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chunks(seq: Sequence[tuple[str, bytes]], n: int) -> list[Sequence[tuple[str, bytes]]]:
    step = max(1, len(seq) // n)
    return [seq[i:i + step] for i in range(0, len(seq), step)]
