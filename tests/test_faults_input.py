"""Bad input under load: a flood of malformed messages mixed with good ones, and devices whose
clocks are wrong. Every good message is stored once, every bad one dead-lettered once with its
reason, and the hub keeps running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from bench.loadgen import METRICS, Load, write_registry
from tests import faults
from tests.hubproc import RunningHub
from tests.support import wait_for

pytestmark = [pytest.mark.fault, pytest.mark.slow]

# kind → (expected reason fragment, how to spoil message k of device d)
MALFORMED = {
    "bad JSON": ("bad JSON", lambda load, k: (load.topic(k % load.devices), b'{"temperature": 1, "seq": %d' % k)),
    "unknown device": ("unknown device", lambda load, k: (f"facility/{load.site}/ghost-{k}/telemetry", load.payload(k))),
    "wrong type": ("expected a number", lambda load, k: (load.topic(k % load.devices), orjson.dumps({"seq": k, "temperature": "hot"}))),
    "not an object": ("must be an object", lambda load, k: (load.topic(k % load.devices), orjson.dumps([k, "x"]))),
    "JSON string": ("must be an object", lambda load, k: (load.topic(k % load.devices), orjson.dumps(f"reading {k}"))),
    "bad reply": ("command reply needs status", lambda load, k: (f"facility/{load.site}/{load.device_id(k % load.devices)}/cmd/c{k}/reply", b'{"status": "maybe"}')),
    "boolean ts": ("bad timestamp", lambda load, k: (load.topic(k % load.devices), orjson.dumps({"ts": True, "seq": k, "temperature": 1}))),
    "oversized": ("payload too large", lambda load, k: (load.topic(k % load.devices), b'{"seq": %d, "pad": "' % k + b"x" * (300 * 1024) + b'"}')),
}


def _mixed(load: Load, bad_every: int) -> tuple[list[tuple[str, bytes]], dict[str, int]]:
    """Good messages of `load`, with every `bad_every`-th replaced by a malformed one (unique bytes)."""
    kinds = list(MALFORMED)
    items: list[tuple[str, bytes]] = []
    bad: dict[str, int] = dict.fromkeys(kinds, 0)
    j = 0
    for k in range(load.messages):
        if k % bad_every == bad_every - 1:
            kind = kinds[j % len(kinds)]
            if kind == "oversized" and bad[kind] >= 20:  # a few are enough, 300 KiB each
                kind = "bad JSON"
            j += 1
            bad[kind] += 1
            items.append(MALFORMED[kind][1](load, k))
        else:
            items.append((load.topic(k % load.devices), load.payload(k)))
    return items, bad


def test_malformed_flood_mixed_with_good(fresh_db_url, broker, tmp_path):
    load = Load(site="flood", devices=50, messages=faults.size(6_000, 60_000), metrics=6)
    registry = write_registry(load, tmp_path / "flood.yaml")
    items, bad = _mixed(load, bad_every=3)
    expected_dead = sum(bad.values())
    with RunningHub(fresh_db_url, broker.url, registry, client_id="faults-flood") as hub:
        sent = faults.publish_items(broker.host, broker.port, items)
        wait_for(lambda: hub.pipeline.stats.messages >= sent, 60, interval=0.2, message="every message committed")
        stats = hub.pipeline.stats
        assert stats.write_errors == 0
    tally, stored = faults.ledger("malformed flood (1 in 3 bad, 8 kinds)", sent=sent, expected_dead=expected_dead,
                                  metrics=load.metrics, db_url=fresh_db_url,
                                  detail=", ".join(f"{n} {k}" for k, n in bad.items() if n))
    assert sent == len(items)
    assert tally.lost == 0 and tally.duplicated == 0
    assert tally.stored == load.messages - expected_dead
    assert stored.dead == expected_dead
    with psycopg.connect(fresh_db_url) as c:
        for kind, n in bad.items():
            fragment = MALFORMED[kind][0]
            got = c.execute("SELECT count(*) FROM dead_letters WHERE reason LIKE %s", (f"%{fragment}%",)).fetchone()
            assert got is not None and got[0] >= n, (kind, got, n)
        # raw bytes kept: the oversized payloads are stored whole for diagnosis
        big = c.execute("SELECT min(length(payload)) FROM dead_letters WHERE reason LIKE 'payload too large%'").fetchone()
        assert big is not None and big[0] > 300 * 1024


def _at(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def test_clock_skew_on_devices(fresh_db_url, broker, tmp_path):
    """Timestamps ahead of the hub's clock by more than max_future, or older than max_age, are
    dead-lettered with the reason; skew inside the window is stored with the device's time."""
    load = Load(site="skew", devices=20, messages=faults.size(2_000, 20_000), metrics=6)
    registry = write_registry(load, tmp_path / "skew.yaml")
    now = datetime.now(UTC)
    skews = {  # name → (timestamp, accepted?, reason fragment)
        "2 min ahead": (now + timedelta(minutes=2), True, ""),
        "29 days old": (now - timedelta(days=29), True, ""),
        "10 min ahead": (now + timedelta(minutes=10), False, "ahead of the hub clock"),
        "1 year ahead": (now + timedelta(days=365), False, "ahead of the hub clock"),
        "31 days old": (now - timedelta(days=31), False, "older than"),
        "epoch 0": (datetime(1970, 1, 1, tzinfo=UTC), False, "older than"),
        "RFC 3339 far future": (datetime(2999, 1, 1, tzinfo=UTC), False, "ahead of the hub clock"),
    }
    items: list[tuple[str, bytes]] = []
    expected = dict.fromkeys(skews, 0)
    names = list(skews)
    for k in range(load.messages):
        name = names[k % len(names)]
        ts, _, _ = skews[name]
        d = k % load.devices
        body: dict[str, object] = {"seq": k, **{m: float(k % 100) for m in METRICS}}
        # unique per message: the skewed base plus k milliseconds
        stamp = ts + timedelta(milliseconds=k)
        body["ts"] = stamp.isoformat() if name.startswith("RFC") else _at(stamp)
        items.append((load.topic(d), orjson.dumps(body)))
        expected[name] += 1
    expected_dead = sum(n for name, n in expected.items() if not skews[name][1])
    with RunningHub(fresh_db_url, broker.url, registry, client_id="faults-skew") as hub:
        sent = faults.publish_items(broker.host, broker.port, items)
        wait_for(lambda: hub.pipeline.stats.messages >= sent, 60, interval=0.2, message="every message committed")
    tally, _ = faults.ledger("clock skew (±min, ±days, epoch 0, year 2999)", sent=sent, expected_dead=expected_dead,
                             metrics=load.metrics, db_url=fresh_db_url,
                             detail="stored: within +300 s / −30 days; dead-lettered beyond")
    assert tally.lost == 0 and tally.duplicated == 0
    with psycopg.connect(fresh_db_url) as c:
        for name, (ts, accepted, fragment) in skews.items():
            lo, hi = ts - timedelta(milliseconds=1), ts + timedelta(milliseconds=load.messages)
            stored = c.execute("SELECT count(DISTINCT (device_id, ts)) FROM readings WHERE ts >= %s AND ts <= %s",
                               (lo, hi)).fetchone()
            assert stored is not None
            if accepted:
                assert stored[0] == expected[name], name  # stored at the device's own time
            else:
                assert stored[0] == 0, name
                dead = c.execute("SELECT count(*) FROM dead_letters WHERE reason LIKE %s AND reason LIKE 'bad timestamp%%'",
                                 (f"%{fragment}%",)).fetchone()
                assert dead is not None and dead[0] >= expected[name], (name, dead)
