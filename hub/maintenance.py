"""Background upkeep on its own connection: rollups (plain PostgreSQL) and offline detection."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import StatusChange
from hub.ingest.pipeline import IngestPipeline
from hub.ingest.writer import mark_silent_devices_offline
from hub.store.db import connect
from hub.store.migrate import timescale_enabled
from hub.store.rollups import refresh_rollups

log = logging.getLogger(__name__)


class Maintenance:
    def __init__(self, dsn: str, pipeline: IngestPipeline, catalog: DeviceCatalog, *, sweep_s: float = 10.0, rollup_s: float = 30.0, on_offline: Callable[[list[StatusChange]], None] | None = None) -> None:
        self.dsn = dsn
        self.pipeline = pipeline
        self.catalog = catalog
        self.sweep_s = sweep_s
        self.rollup_s = rollup_s
        self.on_offline = on_offline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-maintenance", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        next_rollup = 0.0
        elapsed = 0.0
        plain = True
        # On start, fold in the last two hours in case a previous run stopped before refreshing.
        self.pipeline.dirty_since = self.pipeline.dirty_since or datetime.now(UTC) - timedelta(hours=2)
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.dsn, autocommit=True, application_name="hub-maintenance")
                    plain = not timescale_enabled(conn)
                thresholds = {info.id: info.offline_after_s for info in self.catalog.by_id.values()}
                changes = mark_silent_devices_offline(conn, thresholds)
                if changes:
                    log.info("%d device(s) went offline (no data)", len(changes))
                    if self.on_offline:
                        self.on_offline(changes)
                if plain and elapsed >= next_rollup:
                    roll_up_complete_minutes(conn, self.pipeline)
                    next_rollup = elapsed + self.rollup_s
            except psycopg.Error as exc:
                log.warning("maintenance: %s", str(exc).strip().splitlines()[0] if str(exc) else exc)
                if conn is not None:
                    conn.close()
                conn = None
            except Exception:
                log.exception("maintenance step failed")
            self._stop.wait(self.sweep_s)
            elapsed += self.sweep_s
        if conn is not None:
            conn.close()


def roll_up_complete_minutes(conn: psycopg.Connection, pipeline: IngestPipeline, *, now: datetime | None = None) -> tuple[datetime, datetime] | None:
    """Refresh the rollups over the dirty minutes that are over; returns the range refreshed.

    The minute still running stays dirty for the next pass: refreshing it every pass would
    aggregate each reading again and again (at 120,000 readings/s a pass over a minute and a
    half of rows every 30 s took a core of PostgreSQL for seconds, beside ingest). Dashboards
    read raw readings for the last 30 minutes, so the open minute is never missed there.
    """
    since = pipeline.take_dirty_since()
    if since is None:
        return None
    stop = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    if since >= stop:
        pipeline.mark_dirty(since)
        return None
    try:
        refresh_rollups(conn, since, stop)
    except BaseException:
        pipeline.mark_dirty(since)
        raise
    pipeline.mark_dirty(stop)  # readings of the open minute (or later, from skewed clocks)
    return since, stop
