"""The pure decoder: every message becomes rows or exactly one dead letter with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch, Limits, decode_message
from hub.registry import load_registry

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog(demo_registry_path) -> DeviceCatalog:
    reg = load_registry(demo_registry_path)
    return DeviceCatalog(reg, {key: i + 1 for i, key in enumerate(reg.devices)})


def decode(catalog: DeviceCatalog, topic: str, payload: bytes | object) -> Batch:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    batch = Batch()
    decode_message(topic, raw, NOW, catalog, Limits(), batch)
    return batch


LIFT = "facility/demo/el-b1-1/telemetry"


def test_epoch_ms_and_rfc3339_give_the_same_time(catalog):
    ms = int((NOW - timedelta(seconds=5)).timestamp() * 1000)
    a = decode(catalog, LIFT, {"ts": ms, "floor": 3})
    b = decode(catalog, LIFT, {"ts": "2026-11-23T15:59:55+08:00", "floor": 3})
    assert a.readings == b.readings
    assert a.readings[0][0] == NOW - timedelta(seconds=5)


def test_missing_ts_means_receive_time_and_array_payloads(catalog):
    batch = decode(catalog, LIFT, [{"floor": 1}, {"ts": "2026-11-23T07:59:59Z", "floor": 2, "seq": 9}])
    assert [(r[0], r[3]) for r in batch.readings] == [(NOW, 1.0), (NOW - timedelta(seconds=1), 2.0)]
    assert not batch.dead


def test_bools_enums_and_strings(catalog):
    batch = decode(catalog, LIFT, {"running": 1, "passenger": False, "door_state": 2, "service_mode": "inspection"})
    got = {r[2]: (r[3], r[4]) for r in batch.readings}
    assert got == {"running": (1.0, None), "passenger": (0.0, None), "door_state": (2.0, "opening"), "service_mode": (2.0, "inspection")}


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (LIFT, b"{nope", "bad JSON"),
        ("facility/demo/ghost/telemetry", b"{}", "unknown device demo/ghost"),
        ("facility/other/el-b1-1/telemetry", b"{}", "unknown device other/el-b1-1"),
        ("elsewhere/demo/el-b1-1/telemetry", b"{}", "topic is not facility"),
        ("facility/demo/el-b1-1/nonsense", b"{}", "unexpected topic channel"),
        (LIFT, {"ts": "23/11/2026", "floor": 1}, "is not RFC 3339"),
        (LIFT, {"ts": "2026-11-23T08:00:00", "floor": 1}, "has no UTC offset"),
        (LIFT, {"ts": True, "floor": 1}, "bad timestamp"),
        (LIFT, {"ts": "2027-01-01T00:00:00Z", "floor": 1}, "ahead of the hub clock"),
        (LIFT, {"ts": 1_000, "floor": 1}, "older than"),
        (LIFT, {"speed": "fast"}, "field 'speed': expected a number"),
        (LIFT, {"speed": True}, "field 'speed': expected a number"),
        (LIFT, {"floor": 2.5}, "field 'floor': expected an integer"),
        (LIFT, {"running": 2}, "field 'running': expected a bool"),
        (LIFT, {"door_state": 9}, "field 'door_state': 9 is not one of"),
        (LIFT, {"colour": "red"}, "field 'colour': not a metric"),
        (LIFT, {"floor": 1, "seq": "x"}, "field 'seq'"),
        (LIFT, [], "telemetry array is empty"),
        (LIFT, [{"floor": 1}, 7], "telemetry must be an object"),
        (LIFT, "online", "telemetry must be an object"),
        ("facility/demo/el-b1-1/event", {"data": {}}, "event field 'code'"),
        ("facility/demo/el-b1-1/event", {"code": "01", "data": [1]}, "event field 'data'"),
        ("facility/demo/el-b1-1/status", b"maybe", 'status must be "online" or "offline"'),
        ("facility/demo/el-b1-1/cmd/c1/reply", {"status": "great"}, "command reply needs status"),
        (LIFT, b'{"floor": 1, "x": "' + b"y" * 300_000 + b'"}', "payload too large"),
    ],
)
def test_each_bad_message_is_one_dead_letter_with_a_reason(catalog, topic, payload, reason):
    batch = decode(catalog, topic, payload)
    assert not batch.readings and not batch.events and not batch.status
    assert len(batch.dead) == 1
    received, source, dl_topic, raw, why = batch.dead[0]
    assert (received, source, dl_topic) == (NOW, "mqtt", topic)
    assert raw == (payload if isinstance(payload, bytes) else orjson.dumps(payload))
    assert reason in why


def test_message_is_atomic_one_bad_value_stores_nothing(catalog):
    batch = decode(catalog, LIFT, [{"floor": 1}, {"floor": "two"}])
    assert batch.readings == [] and len(batch.dead) == 1


def test_status_event_and_reply(catalog):
    b = Batch()
    decode_message("facility/demo/gate-north/status", b'"offline"', NOW, catalog, Limits(), b)
    decode_message("facility/demo/gate-north/status", b"online", NOW, catalog, Limits(), b)
    decode_message("facility/demo/gate-north/event", b'{"code": "forced_open", "data": {"door": 1}}', NOW, catalog, Limits(), b)
    decode_message("facility/demo/gate-north/cmd/abc/reply", b'{"status": "done", "detail": "opened"}', NOW, catalog, Limits(), b)
    assert [s.online for s in b.status] == [False, True]
    assert b.events == [(NOW, catalog.get("demo", "gate-north").id, "forced_open", {"door": 1})]
    assert [(r.command_id, r.status, r.detail) for r in b.replies] == [("abc", "done", "opened")]
    assert not b.dead


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())),
       channel=st.sampled_from(["telemetry", "event", "status", "cmd/x/reply"]))
def test_any_payload_gives_rows_or_exactly_one_dead_letter(catalog, payload, channel):
    batch = decode(catalog, f"facility/demo/el-b1-1/{channel}", payload)
    stored = len(batch.readings) + len(batch.events) + len(batch.status) + len(batch.replies)
    if batch.dead:
        assert len(batch.dead) == 1 and stored == 0 and batch.dead[0][4]
    assert batch.messages == 1
