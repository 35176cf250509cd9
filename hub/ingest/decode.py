"""Decode contract-format MQTT messages into rows. Pure: no I/O, so it is easy to test and fast.

Every message either becomes rows in a `Batch` or one dead letter with a reason. A message is
atomic: if one value in it is wrong, none of it is stored (the raw bytes are kept instead).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hub.ingest.catalog import BOOL, ENUM, INT, NUMBER, STRING, DeviceCatalog, DeviceInfo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Reading = tuple[datetime, int, str, float | None, str | None, int]  # ts, device, metric, value, text, quality
Event = tuple[datetime, int, str, Any]  # ts, device, code, data
DeadLetter = tuple[datetime, str, str | None, bytes, str]  # received, source, topic, payload, reason


@dataclass(frozen=True, slots=True)
class Limits:
    max_payload_bytes: int = 256 * 1024
    max_future: timedelta = timedelta(seconds=300)
    max_age: timedelta = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class StatusChange:
    device_id: int
    online: bool
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class CommandReply:
    device_id: int
    command_id: str
    status: str
    detail: str | None
    at: datetime


@dataclass(slots=True)
class Batch:
    """Rows decoded from a run of messages, written in one transaction."""

    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # dead letters of messages the broker redelivered: written only if not stored already
    dead_redelivered: list[DeadLetter] = field(default_factory=list)
    status: list[StatusChange] = field(default_factory=list)
    replies: list[CommandReply] = field(default_factory=list)
    seen: dict[int, datetime] = field(default_factory=dict)
    messages: int = 0

    def __len__(self) -> int:
        return (len(self.readings) + len(self.events) + len(self.dead) + len(self.dead_redelivered)
                + len(self.status) + len(self.replies))


class Rejected(Exception):
    """Why a message cannot be stored; becomes the dead letter's reason."""


REPLY_STATUSES = frozenset({"accepted", "done", "rejected", "failed"})


def parse_ts(raw: Any, received: datetime, limits: Limits) -> datetime:
    """RFC 3339 string or epoch milliseconds → aware UTC datetime, inside the accepted window."""
    if raw is None:
        return received
    if isinstance(raw, bool):
        raise Rejected("bad timestamp: boolean")
    if isinstance(raw, int | float):
        try:
            ts = EPOCH + timedelta(milliseconds=raw)
        except (OverflowError, ValueError) as exc:
            raise Rejected(f"bad timestamp: {raw!r} is not epoch milliseconds") from exc
    elif isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise Rejected(f"bad timestamp: {raw[:64]!r} is not RFC 3339") from exc
        if ts.tzinfo is None:
            raise Rejected(f"bad timestamp: {raw[:64]!r} has no UTC offset")
    else:
        raise Rejected(f"bad timestamp: {type(raw).__name__}")
    if ts > received + limits.max_future:
        raise Rejected(f"bad timestamp: {ts.isoformat()} is ahead of the hub clock by more than {limits.max_future}")
    if ts < received - limits.max_age:
        raise Rejected(f"bad timestamp: {ts.isoformat()} is older than {limits.max_age}")
    return ts


def _telemetry_rows(obj: Any, info: DeviceInfo, received: datetime, limits: Limits, out: list[Reading]) -> None:
    if not isinstance(obj, dict):
        raise Rejected(f"telemetry must be an object or an array of objects, got {type(obj).__name__}")
    ts = parse_ts(obj.get("ts"), received, limits)
    seq = obj.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise Rejected("field 'seq': expected an integer")
    device_id = info.id
    metrics = info.metrics
    for name, value in obj.items():
        if name == "ts" or name == "seq":
            continue
        spec = metrics.get(name)
        if spec is None:
            if info.strict:
                raise Rejected(f"field {name!r}: not a metric of this device's model")
            if isinstance(value, bool):
                out.append((ts, device_id, name, 1.0 if value else 0.0, None, 0))
            elif isinstance(value, int | float):
                out.append((ts, device_id, name, float(value), None, 0))
            elif isinstance(value, str):
                out.append((ts, device_id, name, None, value, 0))
            else:
                raise Rejected(f"field {name!r}: expected a number, bool or string")
            continue
        kind = spec.type
        if kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise Rejected(f"field {name!r}: expected a number, got {type(value).__name__}")
            out.append((ts, device_id, name, float(value), None, 0))
        elif kind == BOOL:
            # Many terminals send 0/1 for flags; anything else is a type error.
            if not isinstance(value, int | float) or value not in (0, 1):
                raise Rejected(f"field {name!r}: expected a bool, got {value!r:.40}")
            out.append((ts, device_id, name, 1.0 if value else 0.0, None, 0))
        elif kind == INT:
            if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
                raise Rejected(f"field {name!r}: expected an integer, got {value!r:.40}")
            out.append((ts, device_id, name, float(value), None, 0))
        elif kind == STRING:
            if not isinstance(value, str):
                raise Rejected(f"field {name!r}: expected a string, got {type(value).__name__}")
            out.append((ts, device_id, name, None, value, 0))
        elif kind == ENUM:
            assert spec.labels is not None and spec.codes is not None
            if isinstance(value, str) and value in spec.codes:
                out.append((ts, device_id, name, float(spec.codes[value]), value, 0))
            elif isinstance(value, int) and not isinstance(value, bool) and value in spec.labels:
                out.append((ts, device_id, name, float(value), spec.labels[value], 0))
            else:
                raise Rejected(f"field {name!r}: {value!r:.40} is not one of {sorted(spec.labels)}")


def decode_message(
    topic: str, payload: bytes, received: datetime, catalog: DeviceCatalog, limits: Limits, batch: Batch
) -> None:
    """Append the message's rows to `batch`, or one dead letter if it cannot be stored."""
    batch.messages += 1
    try:
        _decode(topic, payload, received, catalog, limits, batch)
    except Rejected as why:
        batch.dead.append((received, "mqtt", topic, bytes(payload), str(why)))


def _decode(topic: str, payload: bytes, received: datetime, catalog: DeviceCatalog, limits: Limits, batch: Batch) -> None:
    parts = topic.split("/")
    n = len(parts)
    if n < 4 or parts[0] != "facility":
        raise Rejected("topic is not facility/{site}/{device}/…")
    info = catalog.get(parts[1], parts[2])
    if info is None:
        raise Rejected(f"unknown device {parts[1]}/{parts[2]}")
    if len(payload) > limits.max_payload_bytes:
        raise Rejected(f"payload too large: {len(payload)} bytes > {limits.max_payload_bytes}")
    channel = parts[3]
    if n == 4 and channel == "status":
        _decode_status(payload, info, received, batch)
        return
    if n == 6 and channel == "cmd" and parts[5] == "reply":
        _decode_reply(parts[4], payload, info, received, limits, batch)
        return
    if n != 4 or channel not in ("telemetry", "event"):
        raise Rejected(f"unexpected topic channel {'/'.join(parts[3:])!r}")
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"bad JSON: {exc}") from exc
    if channel == "telemetry":
        if isinstance(obj, list):
            if not obj:
                raise Rejected("telemetry array is empty")
            rows: list[Reading] = []
            for item in obj:
                _telemetry_rows(item, info, received, limits, rows)
            batch.readings.extend(rows)
        else:
            rows = []
            _telemetry_rows(obj, info, received, limits, rows)
            batch.readings.extend(rows)
    else:
        if not isinstance(obj, dict):
            raise Rejected("event must be an object with 'code'")
        code = obj.get("code")
        if not isinstance(code, str) or not code or len(code) > 64:
            raise Rejected("event field 'code': expected a non-empty string")
        data = obj.get("data")
        if data is not None and not isinstance(data, dict):
            raise Rejected("event field 'data': expected an object")
        batch.events.append((parse_ts(obj.get("ts"), received, limits), info.id, code, data))
    seen = batch.seen.get(info.id)
    if seen is None or received > seen:
        batch.seen[info.id] = received


def _decode_status(payload: bytes, info: DeviceInfo, received: datetime, batch: Batch) -> None:
    text = payload.strip()
    try:
        value = orjson.loads(text) if text[:1] in (b'"', b"{") else text.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Rejected(f"bad status payload: {exc}") from exc
    if value not in ("online", "offline"):
        raise Rejected('status must be "online" or "offline"')
    batch.status.append(StatusChange(info.id, value == "online", received, f"status topic: {value}"))


def _decode_reply(command_id: str, payload: bytes, info: DeviceInfo, received: datetime, limits: Limits, batch: Batch) -> None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"bad JSON: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("status") not in REPLY_STATUSES:
        raise Rejected(f"command reply needs status in {sorted(REPLY_STATUSES)}")
    detail = obj.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise Rejected("command reply field 'detail': expected a string")
    batch.replies.append(CommandReply(info.id, command_id, obj["status"], detail, received))
