"""Between the pure engine and the database: write its actions, read history back into it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg

from rules import alarms
from rules.engine import Action, Annotate, Clear, Engine, EventIn, Link, Raise, Rows
from rules.model import RuleSet

log = logging.getLogger(__name__)


def ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def apply_actions(conn: psycopg.Connection, actions: list[Action], *, actor: str = "rules",
                  ruleset: RuleSet | None = None) -> list[int]:
    """Write engine actions in one transaction; idempotent, so a retry after an error is safe.

    With `ruleset`, root causes within a device (`root_cause_of`) are resolved here, against
    the open alarms in the database rather than engine state, so they hold across restarts:
    a symptom is born the child of its device's open root, and a root adopts the recent
    symptoms already open.
    """
    touched: list[int] = []
    with conn.transaction():
        for a in actions:
            if isinstance(a, Raise):
                parent_id = None
                if a.parent is not None:
                    row = conn.execute("SELECT id FROM alarms WHERE rule_id = %s AND scope_key = %s AND closed_at IS NULL",
                                       a.parent).fetchone()
                    parent_id = row[0] if row else None
                elif ruleset is not None and a.device_id is not None:
                    parent_id = alarms.find_root(conn, device_id=a.device_id, scope_key=a.scope_key, raised_at=ts(a.at),
                                                 roots=ruleset.roots_of(a.kind))
                alarm_id, _new = alarms.raise_alarm(
                    conn, rule_id=a.rule_id, scope_key=a.scope_key, site_id=a.site, device_id=a.device_id, kind=a.kind,
                    severity=a.severity, title=a.title, raised_at=ts(a.at), detail=a.detail, parent_id=parent_id, actor=actor)
                root = ruleset.root_cause(a.rule_id) if ruleset is not None else None
                if root is not None and a.device_id is not None:
                    alarms.adopt_symptoms(conn, root_id=alarm_id, device_id=a.device_id, scope_key=a.scope_key,
                                          kinds=list(root.kinds), since=ts(a.at - root.window), actor=actor)
                touched.append(alarm_id)
            elif isinstance(a, Clear):
                cleared = alarms.condition_cleared(conn, rule_id=a.rule_id, scope_key=a.scope_key, at=ts(a.at), actor=actor, note=a.reason)
                if cleared is not None:
                    touched.append(cleared)
            elif isinstance(a, Annotate):
                alarms.annotate(conn, rule_id=a.rule_id, scope_key=a.scope_key, patch=a.detail, actor=actor)
            elif isinstance(a, Link):
                alarms.link_parent(conn, rule_id=a.rule_id, scope_key=a.scope_key, parent_rule=a.parent[0],
                                   parent_scope=a.parent[1], actor=actor)
    return touched


# -- history ---------------------------------------------------------------------------------------
# One binary COPY tuple of (ts timestamptz = int64 µs since 2000-01-01, device int4, metric int4,
# value float8), big-endian:
# a field count, then each field's length and bytes. Fixed size, so numpy reads it in one go.
_COPY_ROW = np.dtype([("n", ">i2"), ("l1", ">i4"), ("t", ">i8"), ("l2", ">i4"), ("d", ">i4"),
                      ("l3", ">i4"), ("m", ">i4"), ("l4", ">i4"), ("v", ">f8")])
_COPY_HEADER = 19  # signature, flags, header extension length
_COPY_TRAILER = 2
_PG_EPOCH = 946_684_800.0  # 2000-01-01 in Unix seconds


def load_rows(conn: psycopg.Connection, engine: Engine, start: datetime, end: datetime) -> Rows:
    """Readings of the metrics the rules use, as arrays.

    Numeric rows come by binary COPY parsed by numpy (no Python object per row); rows with a
    text value (enum labels, strings: the few) come aggregated into arrays.
    """
    names = engine.metric_names
    with conn.cursor() as cur:
        with cur.copy(
            """COPY (SELECT ts, device_id, (array_position(%s::text[], metric) - 1)::int4,
                            coalesce(value, 'NaN'::float8)
                       FROM readings WHERE ts >= %s AND ts < %s AND metric = ANY(%s) AND quality < 2
                        AND text_value IS NULL) TO STDOUT (FORMAT BINARY)""", (names, start, end, names)) as copy:
            data = b"".join(bytes(block) for block in copy)
        count = max(0, (len(data) - _COPY_HEADER - _COPY_TRAILER) // _COPY_ROW.itemsize)
        raw = np.frombuffer(data, _COPY_ROW, count=count, offset=_COPY_HEADER) if count else np.empty(0, _COPY_ROW)
        parts = [Rows(raw["t"] / 1e6 + _PG_EPOCH, raw["d"].astype(np.int64), raw["m"].astype(np.int64),
                      raw["v"].astype(float), np.full(count, None, object))]
    with conn.cursor(binary=True) as cur:
        row = cur.execute(
            """SELECT array_agg(extract(epoch FROM ts)::float8), array_agg(device_id),
                      array_agg(array_position(%s::text[], metric) - 1), array_agg(value), array_agg(text_value)
                 FROM readings WHERE ts >= %s AND ts < %s AND metric = ANY(%s) AND quality < 2
                  AND text_value IS NOT NULL""",
            (names, start, end, names)).fetchone()
        parts.append(_rows(row))
        any_ix = engine.metric_ix.get("_any")
        if any_ix is not None:  # missing-data rules over any metric: one row per (device, ts)
            row = cur.execute(
                """SELECT array_agg(t), array_agg(d), array_agg(%s::int), array_agg(NULL::float8), array_agg(NULL::text)
                     FROM (SELECT extract(epoch FROM ts)::float8 AS t, device_id AS d FROM readings
                            WHERE ts >= %s AND ts < %s AND quality < 2 AND NOT metric = ANY(%s)
                            GROUP BY device_id, ts) AS x""", (any_ix, start, end, names)).fetchone()
            parts.append(_rows(row))
    return Rows.concat(parts)


def _rows(row: tuple[Any, ...] | None) -> Rows:
    if row is None or row[0] is None:
        return Rows.empty()
    t, d, m, v, s = row
    value = np.array(v, dtype=float)  # None → nan
    return Rows(np.array(t, float), np.array(d, np.int64), np.array(m, np.int64), value, np.array(s, dtype=object))


def load_events(conn: psycopg.Connection, start: datetime, end: datetime) -> list[EventIn]:
    rows = conn.execute("SELECT extract(epoch FROM ts)::float8, device_id, code, data FROM events"
                        " WHERE ts >= %s AND ts < %s ORDER BY ts", (start, end)).fetchall()
    return [(float(r[0]), int(r[1]), r[2], r[3]) for r in rows]


def chunks(start: datetime, end: datetime, step: timedelta) -> Iterator[tuple[datetime, datetime]]:
    at = start
    while at < end:
        nxt = min(at + step, end)
        yield at, nxt
        at = nxt


def replay(conn: psycopg.Connection, engine: Engine, start: datetime, end: datetime, *,
           step: timedelta = timedelta(minutes=30), sink: Callable[[list[Action]], None] | None = None,
           prefetch_dsn: str | None = None) -> int:
    """Feed stored history through `engine` in time order; returns the number of rows read.

    With `prefetch_dsn`, a second connection loads the next chunk while this one is evaluated,
    so the database and numpy work overlap (the backtest's speed).
    """
    spans = list(chunks(start, end, step))

    def load(c: psycopg.Connection, a: datetime, b: datetime) -> tuple[Rows, list[EventIn]]:
        return load_rows(c, engine, a, b), load_events(c, a, b)

    total = 0
    if prefetch_dsn is None or len(spans) < 2:
        loaded: Iterator[tuple[Rows, list[EventIn]]] = (load(conn, a, b) for a, b in spans)
        for (_a, b), (rows, events) in zip(spans, loaded, strict=True):
            total += _feed(engine, rows, events, b, sink)
        return total
    with psycopg.connect(prefetch_dsn, autocommit=True) as other, ThreadPoolExecutor(1) as pool:
        future = pool.submit(load, other, *spans[0])
        for i, (_a, b) in enumerate(spans):
            rows, events = future.result()
            if i + 1 < len(spans):
                future = pool.submit(load, other, *spans[i + 1])
            total += _feed(engine, rows, events, b, sink)
    return total


def _feed(engine: Engine, rows: Rows, events: list[EventIn], until: datetime,
          sink: Callable[[list[Action]], None] | None) -> int:
    actions = engine.feed(rows, events)
    actions += engine.advance(until.timestamp())
    if sink is not None:
        sink(actions)
    return len(rows) + len(events)


@dataclass
class WarmStart:
    engine: Engine
    replayed_rows: int
    raised: int
    cleared: int
    adopted: int


def warm_start(conn: psycopg.Connection, engine: Engine, now: datetime, *, actor: str = "rules") -> WarmStart:
    """Rebuild every window from the last `lookback` of history, then reconcile with open alarms.

    The replay itself writes nothing. Afterwards: an alarm the replay says is up and the
    database holds open is adopted; one the replay raised that the database never got (the hub
    died before writing it) is written now; one the database holds open whose condition the
    replay saw recover is cleared. Nothing is raised twice: the unique index guards the rest.
    """
    start = now - timedelta(seconds=engine.ruleset.lookback_s)
    seed = conn.execute("SELECT device_id, extract(epoch FROM last_seen)::float8 FROM device_status"
                        " WHERE last_seen < %s", (start,)).fetchall()
    for rid, seen_at in engine.seen.items():
        for d, t in seed:
            if 0 <= d < engine.size and np.isnan(seen_at[d]) and engine.scope_mask[rid][d]:
                seen_at[d] = t
    last: dict[tuple[str, str], Action] = {}

    def remember(actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Raise | Clear):
                last[(a.rule_id, a.scope_key)] = a

    # Devices offline since before the lookback: their state comes from device_status.
    down = conn.execute("SELECT extract(epoch FROM changed_at)::float8, device_id FROM device_status"
                        " WHERE NOT online AND changed_at < %s ORDER BY changed_at", (start,)).fetchall()
    if down:
        remember(engine.feed(Rows.empty(), [(float(t), int(d), "offline", None) for t, d in down]))
    rows = replay(conn, engine, start, now, sink=remember)
    rule_ids = [r.id for r in engine.rules]
    open_rows = conn.execute("SELECT rule_id, scope_key, state, extract(epoch FROM raised_at)::float8 FROM alarms"
                             " WHERE closed_at IS NULL AND rule_id = ANY(%s)", (rule_ids,)).fetchall()
    open_map: dict[tuple[str, str], tuple[str, float]] = {(r[0], r[1]): (r[2], r[3]) for r in open_rows}
    to_write: list[Action] = []
    adopted = 0
    active = engine.active_keys()
    for key, (state, raised_at) in open_map.items():
        if key in active or state == "cleared_unack":
            continue
        seen = last.get(key)
        if isinstance(seen, Clear) and seen.at >= raised_at:
            to_write.append(seen)
        elif engine.adopt(*key):
            adopted += 1
    for key in active - set(open_map):
        seen = last.get(key)
        if not isinstance(seen, Raise):
            continue
        handled = conn.execute("SELECT 1 FROM alarms WHERE rule_id = %s AND scope_key = %s AND raised_at >= %s",
                               (key[0], key[1], ts(seen.at - 1.0))).fetchone()
        if handled is None:
            to_write.append(seen)
    # Adopted alarms whose condition is known to be gone clear now; windows already due raise.
    to_write += [a for a in engine.advance(now.timestamp()) if isinstance(a, Raise | Clear)]
    if to_write:
        apply_actions(conn, to_write, actor=actor, ruleset=engine.ruleset)
    raised = sum(isinstance(a, Raise) for a in to_write)
    log.info("rules warm start: replayed %d rows over %.0f s; raised %d missed alarm(s), cleared %d, adopted %d",
             rows, engine.ruleset.lookback_s, raised, len(to_write) - raised, adopted)
    return WarmStart(engine, rows, raised, len(to_write) - raised, adopted)


def fetch_alarm_message(conn: psycopg.Connection, alarm_id: int) -> dict[str, Any] | None:
    """The MQTT payload for an alarm: what a subscriber needs without querying the hub."""
    row = conn.execute(
        """SELECT a.id, a.rule_id, a.site_id, d.device_id, a.scope_key, a.kind, a.severity, a.state, a.title,
                  a.raised_at, a.acknowledged_at, a.acknowledged_by, a.cleared_at, a.closed_at, a.shelved_until,
                  a.assignee, a.parent_id, a.detail
             FROM alarms a LEFT JOIN devices d ON d.id = a.device_id WHERE a.id = %s""", (alarm_id,)).fetchone()
    if row is None:
        return None
    keys = ("id", "rule_id", "site", "device", "scope_key", "kind", "severity", "state", "title", "raised_at",
            "acknowledged_at", "acknowledged_by", "cleared_at", "closed_at", "shelved_until", "assignee",
            "parent_id", "detail")
    out = dict(zip(keys, row, strict=True))
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
    return out
