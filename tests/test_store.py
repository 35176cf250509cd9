"""Migrations, registry mirror, idempotent batch writes, device status, rollups — on real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch, Limits, StatusChange, decode_message
from hub.ingest.writer import BatchWriter, mark_silent_devices_offline
from hub.registry import load_registry
from hub.store.migrate import available_migrations, migrate
from hub.store.registry_sync import sync_registry
from hub.store.rollups import refresh_rollups_now


@pytest.fixture
def setup(fresh_db_url, demo_registry_path):
    reg = load_registry(demo_registry_path)
    with psycopg.connect(fresh_db_url) as c:
        ids = sync_registry(c, reg)
    conn = psycopg.connect(fresh_db_url)
    yield conn, DeviceCatalog(reg, ids), reg
    conn.close()


def test_migrate_is_idempotent_and_reports_timescale(fresh_db_url):
    again = migrate(fresh_db_url)
    assert again.applied == []
    assert again.version == available_migrations()[-1].version
    assert "TimescaleDB features" in again.summary()
    with psycopg.connect(fresh_db_url) as c:
        variants = dict(c.execute("SELECT name, variant FROM schema_migrations").fetchall())
    assert variants["timeseries"] == ("timescale" if again.timescale else "plain")


def test_timescale_path_builds_hypertables(pg_server):
    from tests.support import create_database, drop_database

    with psycopg.connect(pg_server.admin_url) as c:
        avail = c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    if avail is None:
        pytest.skip("TimescaleDB extension is not installed on this PostgreSQL server; the plain path is tested instead")
    name, url = create_database(pg_server.admin_url)
    try:
        report = migrate(url)
        if not report.timescale:
            pytest.skip(f"TimescaleDB installed but not loadable here: {report.timescale_note}")
        with psycopg.connect(url) as c:
            hypertables = {r[0] for r in c.execute("SELECT hypertable_name FROM timescaledb_information.hypertables")}
            caggs = {r[0] for r in c.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates")}
        assert {"readings", "events"} <= hypertables
        assert {"readings_1m", "readings_1h"} <= caggs
    finally:
        drop_database(pg_server.admin_url, name)


def test_registry_sync_is_idempotent_and_audited(setup, fresh_db_url, demo_registry_path):
    conn, catalog, reg = setup
    ids_again = sync_registry(conn, reg)
    assert ids_again == {(i.site, i.device): i.id for i in catalog.by_id.values()}
    audits = conn.execute("SELECT action, after->>'active_devices' FROM audit_log").fetchall()
    assert audits == [("registry.sync", str(len(reg.devices)))]  # the second sync changed nothing


def test_same_batch_twice_stores_rows_once(setup):
    conn, catalog, _ = setup
    now = datetime.now(UTC)
    writer = BatchWriter(conn)
    batch = Batch()
    for k in range(50):
        ts = (now - timedelta(seconds=k)).isoformat()
        decode_message("facility/demo/el-b1-1/telemetry", f'{{"ts": "{ts}", "floor": {k % 18}, "speed": 1.0}}'.encode(), now, catalog, Limits(), batch)
    decode_message("facility/demo/el-b1-1/event", f'{{"ts": "{now.isoformat()}", "code": "11"}}'.encode(), now, catalog, Limits(), batch)
    first = writer.write(batch)
    second = writer.write(batch)  # a redelivery of every message
    assert not first.deduplicated and second.deduplicated
    counts = conn.execute("SELECT (SELECT count(*) FROM readings), (SELECT count(*) FROM events WHERE code = '11')").fetchone()
    assert counts == (100, 1)


def test_status_transitions_and_offline_sweep(setup):
    conn, catalog, _ = setup
    gate = catalog.get("demo", "gate-north").id
    now = datetime.now(UTC)
    writer = BatchWriter(conn, seen_refresh_s=0)

    b1 = Batch(status=[StatusChange(gate, False, now - timedelta(seconds=10), "status topic: offline")])
    r1 = writer.write(b1)
    assert [(t.online, t.device_id) for t in r1.transitions] == [(False, gate)]
    b2 = Batch(seen={gate: now - timedelta(seconds=5)})  # data after an offline message → online
    r2 = writer.write(b2)
    assert [t.online for t in r2.transitions] == [True]
    r3 = writer.write(Batch(seen={gate: now}))
    assert r3.transitions == []  # still online: no new transition
    changes = mark_silent_devices_offline(conn, {gate: 3600})
    assert changes == []
    conn.execute("UPDATE device_status SET last_seen = now() - interval '2 hours' WHERE device_id = %s", (gate,))
    conn.commit()
    changes = mark_silent_devices_offline(conn, {gate: 3600})
    assert [c.device_id for c in changes] == [gate]
    events = conn.execute("SELECT code FROM events WHERE device_id = %s ORDER BY ts", (gate,)).fetchall()
    assert [e[0] for e in events] == ["offline", "online", "offline"]


def test_rollups_match_raw_data(setup):
    conn, catalog, _ = setup
    lift = catalog.get("demo", "el-b1-1").id
    base = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=10)
    batch = Batch(readings=[(base + timedelta(seconds=10 * i), lift, "speed", float(i), None, 0) for i in range(12)])
    batch.readings.append((base + timedelta(seconds=5), lift, "speed", None, None, 2))  # a failed read
    BatchWriter(conn).write(batch)
    refresh_rollups_now(conn, base - timedelta(hours=1), base + timedelta(hours=1))
    rows = conn.execute(
        "SELECT bucket, avg_value, min_value, max_value, last_value, samples FROM readings_1m WHERE device_id = %s ORDER BY bucket", (lift,)
    ).fetchall()
    assert rows == [
        (base, 2.5, 0.0, 5.0, 5.0, 6),
        (base + timedelta(minutes=1), 8.5, 6.0, 11.0, 11.0, 6),
    ]
    hour = conn.execute("SELECT avg_value, samples FROM readings_1h WHERE device_id = %s", (lift,)).fetchall()
    assert sum(s for _, s in hour) == 12


def test_maintenance_rolls_up_only_minutes_that_are_over_and_keeps_the_open_one_dirty(setup, fresh_db_url):
    from hub.ingest.pipeline import IngestPipeline
    from hub.maintenance import roll_up_complete_minutes
    from hub.store.migrate import timescale_enabled

    conn, catalog, _ = setup
    if timescale_enabled(conn):
        pytest.skip("TimescaleDB refreshes its continuous aggregates itself")
    lift = catalog.get("demo", "el-b1-1").id
    now = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(hours=1)
    open_minute = now.replace(second=0)
    done_minute = open_minute - timedelta(minutes=2)
    BatchWriter(conn).write(Batch(readings=[(done_minute + timedelta(seconds=5), lift, "speed", 1.0, None, 0),
                                            (open_minute + timedelta(seconds=5), lift, "speed", 3.0, None, 0)]))
    conn.commit()
    pipeline = IngestPipeline(dsn=fresh_db_url, catalog=catalog)
    pipeline.mark_dirty(done_minute + timedelta(seconds=5))

    def buckets() -> list[datetime]:
        return [r[0] for r in conn.execute("SELECT bucket FROM readings_1m WHERE device_id = %s ORDER BY bucket", (lift,))]

    assert roll_up_complete_minutes(conn, pipeline, now=now) == (done_minute + timedelta(seconds=5), open_minute)
    assert buckets() == [done_minute]                      # the open minute is not rolled up yet
    assert pipeline.dirty_since == open_minute             # but stays dirty
    assert roll_up_complete_minutes(conn, pipeline, now=now + timedelta(seconds=10)) is None
    assert pipeline.dirty_since == open_minute             # still open: nothing done, nothing lost
    assert roll_up_complete_minutes(conn, pipeline, now=now + timedelta(minutes=1)) is not None
    assert buckets() == [done_minute, open_minute]         # once it is over, it is there


def test_maintenance_sweep_does_not_hold_locks_that_block_ingest(setup, fresh_db_url):
    """Regression: the sweep once ran inside an implicit transaction and held its row locks."""
    from hub.ingest.pipeline import IngestPipeline
    from hub.maintenance import Maintenance
    from tests.support import wait_for

    conn, catalog, _ = setup
    gate = catalog.get("demo", "gate-north").id
    BatchWriter(conn).write(Batch(seen={gate: datetime.now(UTC) - timedelta(hours=1)}))
    pipeline = IngestPipeline(dsn=fresh_db_url, catalog=catalog)
    maintenance = Maintenance(fresh_db_url, pipeline, catalog, sweep_s=0.1)
    maintenance.start()
    try:
        wait_for(lambda: conn.execute("SELECT NOT online FROM device_status WHERE device_id = %s", (gate,)).fetchone()[0],
                 10, message="the sweep marks the silent gate offline")
        conn.commit()
        conn.execute("SET lock_timeout = '3s'")
        result = BatchWriter(conn).write(Batch(seen={gate: datetime.now(UTC)}))
        assert [t.online for t in result.transitions] == [True]
    finally:
        maintenance.stop()


def test_oldest_waiting_covers_a_message_until_listeners_have_its_batch(setup, fresh_db_url):
    """The rule engine's clock stops at `oldest_waiting()`: a message must stay visible there while
    its batch is collected, written and handed over, or a lagging ingest fakes long "stopped" states."""
    import threading
    import time

    from hub.ingest.pipeline import IngestPipeline
    from tests.support import wait_for

    _, catalog, _ = setup
    in_sink, release = threading.Event(), threading.Event()
    handed: list[float | None] = []

    def slow_sink(conn: psycopg.Connection, batch: Batch) -> None:
        in_sink.set()
        release.wait(10)

    pipeline = IngestPipeline(dsn=fresh_db_url, catalog=catalog, batch_ms=600, sinks=[slow_sink])
    pipeline.add_listener(lambda committed: handed.append(pipeline.oldest_waiting()))
    pipeline.start()
    try:
        assert pipeline.oldest_waiting() is None
        before = time.time()
        pipeline.put_mqtt("hub/demo/elevator/el-b1-1/telemetry", b'{"ts": %d, "speed": 1.0}' % int(before * 1000))
        # Collecting (the batch window is open): popped from the queue but not written yet.
        wait_for(lambda: pipeline.queue_depth == 0, timeout=5, message="the writer to take the message")
        received = pipeline.oldest_waiting()
        assert received is not None and before <= received <= time.time()
        assert in_sink.wait(5), "the batch never reached the database"
        assert pipeline.oldest_waiting() == received          # being written
        # The decoder goes on while the writer waits: a second message is taken off the queue
        # and decoded into the next batch, and the older one still sets the clock.
        later = time.time()
        pipeline.put_mqtt("hub/demo/elevator/el-b1-1/telemetry", b'{"ts": %d, "speed": 2.0}' % int(later * 1000))
        wait_for(lambda: pipeline.queue_depth == 0, timeout=5, message="the decoder to take the second message")
        assert pipeline.oldest_waiting() == received
        release.set()
        wait_for(lambda: len(handed) == 2, timeout=5, message="the listener, twice")
        assert handed[0] == received                          # still covered while listeners run
        assert handed[1] is not None and later <= handed[1] <= time.time()  # then the second batch's
        assert pipeline.oldest_waiting() is None              # and released only after
    finally:
        release.set()
        pipeline.stop()


def test_offline_sweep_never_uses_a_threshold_below_the_last_seen_refresh_lag(setup):
    """last_seen is refreshed every SEEN_REFRESH_S at most: a device with a 1 s heartbeat (3 s
    threshold) whose last_seen is 4 s old may well have sent data since, so it stays online."""
    from hub.ingest.writer import OFFLINE_MARGIN_S, SEEN_REFRESH_S

    conn, catalog, _ = setup
    meter = catalog.get("demo", "meter-garage").id
    BatchWriter(conn, seen_refresh_s=0).write(Batch(seen={meter: datetime.now(UTC)}))
    conn.execute("UPDATE device_status SET online = true, last_seen = now() - interval '4 seconds' WHERE device_id = %s", (meter,))
    conn.commit()
    assert mark_silent_devices_offline(conn, {meter: 3.0}) == []
    stale = SEEN_REFRESH_S + OFFLINE_MARGIN_S + 1
    conn.execute("UPDATE device_status SET last_seen = now() - %s * interval '1 second' WHERE device_id = %s", (stale, meter))
    conn.commit()
    assert [c.device_id for c in mark_silent_devices_offline(conn, {meter: 3.0})] == [meter]
