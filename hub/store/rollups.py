"""Keep readings_1m / readings_1h current on plain PostgreSQL (TimescaleDB refreshes its own)."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg


def refresh_rollups(conn: psycopg.Connection, start: datetime, stop: datetime | None = None) -> None:
    """Recompute the rollup buckets from `start` (inclusive) to `stop` (default: next minute)."""
    if stop is None:
        stop = datetime.now(start.tzinfo) + timedelta(minutes=1)
    with conn.transaction():
        conn.execute("SELECT hub_refresh_rollups(%s, %s)", (start, stop))


def refresh_rollups_now(conn: psycopg.Connection, start: datetime, stop: datetime) -> None:
    """Materialise rollups for [start, stop) at once, on either store (for tests and reports)."""
    from hub.store.migrate import timescale_enabled

    if timescale_enabled(conn):
        prev = conn.autocommit
        conn.autocommit = True
        try:
            conn.execute("CALL refresh_continuous_aggregate('readings_1m', %s, %s)", (start, stop))
            conn.execute("CALL refresh_continuous_aggregate('readings_1h', %s, %s)", (start, stop))
        finally:
            conn.autocommit = prev
    else:
        refresh_rollups(conn, start, stop)
