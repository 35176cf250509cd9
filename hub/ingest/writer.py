"""Write one decoded batch in one transaction, the hot path of the hub.

Readings and events go in with binary COPY straight into their tables. Redelivered messages
(after a crash between commit and acknowledgement) would violate the primary key; then the
batch falls back to COPY into a temporary table and INSERT … ON CONFLICT DO NOTHING, so a
redelivery never duplicates a row and the common case pays nothing for that guarantee.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hub.ingest.decode import Batch, StatusChange

log = logging.getLogger(__name__)

READING_COLUMNS = ("ts", "device_id", "metric", "value", "text_value", "quality")
READING_TYPES = ("timestamptz", "int4", "text", "float8", "text", "int2")
EVENT_COLUMNS = ("ts", "device_id", "code", "data")
EVENT_TYPES = ("timestamptz", "int4", "text", "jsonb")

# Runs inside the batch's transaction (e.g. command replies), so it commits or fails with it.
TransactionSink = Callable[[psycopg.Connection, Batch], None]

SEEN_REFRESH_S = 5.0    # device_status.last_seen is rewritten at most this often per device
OFFLINE_MARGIN_S = 5.0  # beyond that lag before silence counts (mark_silent_devices_offline)


@dataclass(frozen=True, slots=True)
class WriteResult:
    readings: int
    events: int
    dead: int
    deduplicated: bool
    transitions: list[StatusChange] = field(default_factory=list)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class BatchWriter:
    """Owns one connection; `write` is all-or-nothing for a batch."""

    def __init__(self, conn: psycopg.Connection, *, worker: str = "hub", sinks: Sequence[TransactionSink] = (), seen_refresh_s: float = SEEN_REFRESH_S) -> None:
        self.conn = conn
        self.worker = worker
        self.sinks = list(sinks)
        # device_status.last_seen is refreshed at most every `seen_refresh_s` per online device:
        # writing 1,000 devices' rows every 200 ms batch costs more than the readings' COPY.
        # Offline thresholds are minutes, so a few seconds of staleness changes nothing.
        self.seen_refresh = timedelta(seconds=seen_refresh_s)
        self._written: dict[int, datetime] = {}  # device → last_seen we wrote while online
        psycopg.types.json.set_json_dumps(_dumps, conn)

    def write(self, batch: Batch) -> WriteResult:
        conn = self.conn
        dedup = False
        transitions: list[StatusChange] = []
        written: dict[int, datetime | None] = {}
        with conn.transaction():
            with conn.cursor() as cur:
                if batch.readings:
                    dedup |= self._copy(cur, "readings", READING_COLUMNS, READING_TYPES, batch.readings)
                if batch.events:
                    events = [(ts, d, c, None if data is None else Jsonb(data)) for ts, d, c, data in batch.events]
                    dedup |= self._copy(cur, "events", EVENT_COLUMNS, EVENT_TYPES, events)
                if batch.dead:
                    cur.executemany(
                        "INSERT INTO dead_letters (received_at, source, topic, payload, reason, worker)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        [(*d, self.worker) for d in batch.dead],
                    )
                dead = len(batch.dead) + self._insert_redelivered_dead(cur, batch.dead_redelivered)
                if batch.seen or batch.status:
                    transitions = self._update_status(cur, batch, written)
            for sink in self.sinks:
                sink(conn, batch)
        for device_id, at in written.items():  # only after commit: a rollback must not count
            if at is None:
                self._written.pop(device_id, None)
            else:
                self._written[device_id] = at
        return WriteResult(len(batch.readings), len(batch.events), dead, dedup, transitions)

    def _insert_redelivered_dead(self, cur: psycopg.Cursor, dead: Sequence[tuple[Any, ...]]) -> int:
        """Dead letters of redelivered messages, each only if the same topic and bytes are not
        stored yet (the hub committed it, then died before acknowledging); returns how many."""
        inserted = 0
        for received, source, topic, payload, reason in dead:
            cur.execute(
                """INSERT INTO dead_letters (received_at, source, topic, payload, reason, worker)
                   SELECT %(received)s, %(source)s, %(topic)s, %(payload)s, %(reason)s, %(worker)s
                    WHERE NOT EXISTS (SELECT 1 FROM dead_letters
                                       WHERE topic = %(topic)s AND md5(payload) = md5(%(payload)s) AND payload = %(payload)s)""",
                {"received": received, "source": source, "topic": topic, "payload": payload, "reason": reason,
                 "worker": self.worker})
            inserted += cur.rowcount
        return inserted

    def _copy(self, cur: psycopg.Cursor, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> bool:
        """COPY rows into `table`; returns True if the idempotent fallback was needed."""
        cols = sql.SQL(", ").join(map(sql.Identifier, columns))
        try:
            # A savepoint: only this COPY is undone on a conflict.
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(table), cols)
            with self.conn.transaction(), cur.copy(copy_sql) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            return False
        except psycopg.errors.UniqueViolation:
            log.info("%s: redelivered rows in batch, writing idempotently", table)
        staging = sql.Identifier(f"{table}_incoming")
        cur.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS").format(
                staging, sql.Identifier(table)
            )
        )
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(staging, cols)) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
                sql.Identifier(table), cols, cols, staging
            )
        )
        return True

    def _update_status(self, cur: psycopg.Cursor, batch: Batch, written: dict[int, datetime | None]) -> list[StatusChange]:
        """Fold data arrival and status messages into device_status; return real transitions."""
        final: dict[int, StatusChange] = {}
        last_seen: dict[int, datetime] = dict(batch.seen)
        for change in batch.status:  # explicit status messages, in arrival order
            prev = final.get(change.device_id)
            if prev is None or change.at >= prev.at:
                final[change.device_id] = change
        recent = self._written
        for device_id, at in batch.seen.items():  # data after an offline message means online
            prev = final.get(device_id)
            if prev is None:
                known = recent.get(device_id)
                if known is not None and at - known < self.seen_refresh:
                    continue  # online and written moments ago
                final[device_id] = StatusChange(device_id, True, at, "data received")
            elif not prev.online and at > prev.at:
                final[device_id] = StatusChange(device_id, True, at, "data received")
        if not final:
            return []
        for device_id, change in final.items():
            if change.online:
                seen = last_seen.get(device_id)
                last_seen[device_id] = max(seen, change.at) if seen else change.at
        ids = sorted(final)  # fixed lock order across workers
        # Lock and read the previous state first: a CTE cannot see a row its sibling updates.
        cur.execute(
            "SELECT device_id, online FROM device_status WHERE device_id = ANY(%s) ORDER BY device_id FOR UPDATE",
            (ids,),
        )
        previous: dict[int, bool] = dict(cur.fetchall())
        cur.execute(
            """INSERT INTO device_status AS s (device_id, online, changed_at, last_seen, reason)
               SELECT * FROM unnest(%s::int[], %s::bool[], %s::timestamptz[], %s::timestamptz[], %s::text[])
               ON CONFLICT (device_id) DO UPDATE SET
                   online = EXCLUDED.online,
                   changed_at = CASE WHEN s.online IS DISTINCT FROM EXCLUDED.online
                                     THEN EXCLUDED.changed_at ELSE s.changed_at END,
                   reason = CASE WHEN s.online IS DISTINCT FROM EXCLUDED.online
                                 THEN EXCLUDED.reason ELSE s.reason END,
                   last_seen = greatest(s.last_seen, EXCLUDED.last_seen)""",
            (
                ids,
                [final[i].online for i in ids],
                [final[i].at for i in ids],
                [last_seen.get(i) for i in ids],
                [final[i].reason for i in ids],
            ),
        )
        transitions = [final[i] for i in ids if previous.get(i) is not final[i].online]
        for i in ids:
            written[i] = last_seen.get(i) if final[i].online else None
        if transitions:
            cur.executemany(
                """INSERT INTO events (ts, device_id, code, data) VALUES (%s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""",
                [(t.at, t.device_id, "online" if t.online else "offline", Jsonb({"reason": t.reason}))
                 for t in transitions],
            )
        return transitions


def mark_silent_devices_offline(conn: psycopg.Connection, thresholds: dict[int, float]) -> list[StatusChange]:
    """Devices whose last data is older than their model's offline_after go offline (one statement).

    `last_seen` lags real arrivals by up to SEEN_REFRESH_S (the writer's throttle), so no threshold
    is taken below that lag plus a margin: a device with a 1 s heartbeat would otherwise flap
    offline between two refreshes while its data keeps arriving."""
    if not thresholds:
        return []
    thresholds = {d: max(secs, SEEN_REFRESH_S + OFFLINE_MARGIN_S) for d, secs in thresholds.items()}
    ids = sorted(thresholds)
    with conn.transaction():
        rows = conn.execute(
            """UPDATE device_status s SET online = false, changed_at = now(),
                      reason = 'no data for ' || t.secs || ' s'
                 FROM unnest(%s::int[], %s::float8[]) AS t(device_id, secs)
                WHERE s.device_id = t.device_id AND s.online
                  AND s.last_seen < now() - t.secs * interval '1 second'
            RETURNING s.device_id, s.changed_at, s.reason""",
            (ids, [thresholds[i] for i in ids]),
        ).fetchall()
        changes = [StatusChange(d, False, at, reason) for d, at, reason in rows]
        if changes:
            conn.cursor().executemany(
                "INSERT INTO events (ts, device_id, code, data) VALUES (%s, %s, 'offline', %s) ON CONFLICT DO NOTHING",
                [(c.at, c.device_id, Jsonb({"reason": c.reason})) for c in changes],
            )
    return changes
