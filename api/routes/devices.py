"""Devices with live status, their latest values and history (downsampled from the rollups)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import AfterValidator, BaseModel

from api.deps import Conn, Reader, scoped_sites
from api.errors import ApiError, not_found
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import Cursor, DeviceId, Limit, SiteFilter, _aware
from api.scope import Principal

router = APIRouter(tags=["devices"])
Name = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
TimeQ = Annotated[datetime | None, AfterValidator(_aware)]


class DeviceStatus(BaseModel):
    online: bool | None
    changed_at: datetime | None
    last_seen: datetime | None
    reason: str | None


class DevicePublic(BaseModel):
    id: int
    site_id: str
    device_id: str
    name: str | None
    kind: str
    protocol: str
    model_id: str
    building_id: str | None
    grid_id: str | None
    floor: int | None
    zone: str | None
    status: DeviceStatus


class LatestValue(BaseModel):
    metric: str
    ts: datetime
    value: float | None
    text_value: str | None
    quality: int


class DeviceDetail(DevicePublic):
    latest: list[LatestValue]


class DeviceSort(StrEnum):
    id = "id"
    name = "name"
    device_id = "device_id"


# Byte order (COLLATE "C") so the keyset cursor compares exactly like the ORDER BY.
_SORT_SQL = {DeviceSort.id: "lpad(d.id::text, 10, '0') COLLATE \"C\"", DeviceSort.name: "coalesce(d.name, '') COLLATE \"C\"",
             DeviceSort.device_id: "d.device_id COLLATE \"C\""}

_SELECT = """SELECT d.id, d.site_id, d.device_id, d.name, d.kind, d.protocol, d.model_id, d.building_id,
                    d.grid_id, d.floor, d.zone, s.online, s.changed_at, s.last_seen, s.reason
               FROM devices d LEFT JOIN device_status s ON s.device_id = d.id"""


def _device(row: dict[str, Any]) -> DevicePublic:
    status = DeviceStatus(online=row["online"], changed_at=row["changed_at"], last_seen=row["last_seen"], reason=row["reason"])
    return DevicePublic(status=status, **{k: row[k] for k in DevicePublic.model_fields if k != "status"})


@router.get("/devices", response_model=Page[DevicePublic])
async def list_devices(
    conn: Conn, user: Reader, site: SiteFilter = None, kind: Name = None, building: Name = None, grid: Name = None,
    online: bool | None = None, sort: DeviceSort = DeviceSort.id, order: Literal["asc", "desc"] = "asc",
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[DevicePublic]:
    sites = scoped_sites(user, site)
    after = decode_cursor(cursor, (str, int))
    key = _SORT_SQL[sort]
    cmp = ">" if order == "asc" else "<"
    direction = "ASC" if order == "asc" else "DESC"
    # key and direction come from the enum above, never from the request text.
    sql = f"""{_SELECT}
         WHERE d.active AND (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
           AND (%(kind)s::text IS NULL OR d.kind = %(kind)s)
           AND (%(building)s::text IS NULL OR d.building_id = %(building)s)
           AND (%(grid)s::text IS NULL OR d.grid_id = %(grid)s)
           AND (%(online)s::boolean IS NULL OR coalesce(s.online, false) = %(online)s)
           AND (%(after_key)s::text IS NULL OR ({key}, d.id) {cmp} (%(after_key)s, %(after_id)s))
         ORDER BY {key} {direction}, d.id {direction} LIMIT %(limit)s"""
    params = {"sites": sites, "kind": kind, "building": building, "grid": grid, "online": online,
              "after_key": after[0] if after else None, "after_id": after[1] if after else None, "limit": limit + 1}
    rows = await (await conn.execute(sql, params)).fetchall()
    items = [_device(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        value = {DeviceSort.id: f"{last['id']:010d}", DeviceSort.name: last["name"] or "", DeviceSort.device_id: last["device_id"]}[sort]
        next_cursor = encode_cursor([value, last["id"]])
    return Page(items=items, next_cursor=next_cursor)


async def visible_device(conn: Conn, user: Principal, device_id: int) -> dict[str, Any]:
    """The device row if it exists and is on a site the caller sees; 404 otherwise (no leak)."""
    row = await (await conn.execute(f"{_SELECT} WHERE d.id = %s", (device_id,))).fetchone()
    if row is None or not user.sees(row["site_id"]):
        raise not_found("device")
    return dict(row)


@router.get("/devices/{device_id}", response_model=DeviceDetail)
async def get_device(device_id: DeviceId, conn: Conn, user: Reader) -> DeviceDetail:
    row = await visible_device(conn, user, device_id)
    # DISTINCT ON walks the (device_id, metric, ts) primary key backwards: one row per metric.
    latest = await (await conn.execute(
        """SELECT DISTINCT ON (metric) metric, ts, value, text_value, quality
             FROM readings WHERE device_id = %s ORDER BY metric, ts DESC""", (device_id,),
    )).fetchall()
    base = _device(row)
    return DeviceDetail(**base.model_dump(), latest=[LatestValue(**r) for r in latest])


class Resolution(StrEnum):
    auto = "auto"
    raw = "raw"
    minute = "1m"
    hour = "1h"


class HistoryPoint(BaseModel):
    ts: datetime
    value: float | None
    min: float | None = None
    max: float | None = None
    samples: int | None = None
    text_value: str | None = None
    quality: int | None = None


class History(BaseModel):
    device_id: int
    metric: str
    resolution: Resolution
    start: datetime
    end: datetime
    points: list[HistoryPoint]
    truncated: bool


def pick_resolution(span: timedelta, asked: Resolution) -> Resolution:
    """Raw up to 6 hours, minute buckets up to 7 days, hourly beyond (a few hundred points)."""
    if asked is not Resolution.auto:
        return asked
    if span <= timedelta(hours=6):
        return Resolution.raw
    if span <= timedelta(days=7):
        return Resolution.minute
    return Resolution.hour


MAX_POINTS = 20_000


@router.get("/devices/{device_id}/history", response_model=History)
async def history(
    device_id: DeviceId, conn: Conn, user: Reader,
    metric: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")],
    start: Annotated[TimeQ, Query(alias="from")] = None, end: Annotated[TimeQ, Query(alias="to")] = None,
    resolution: Resolution = Resolution.auto, limit: Annotated[int, Query(ge=1, le=MAX_POINTS)] = 5000,
) -> History:
    await visible_device(conn, user, device_id)
    end = end or datetime.now(UTC)
    start = start or end - timedelta(hours=1)
    if start >= end:
        raise ApiError(422, "invalid", "from: must be before to")
    res = pick_resolution(end - start, resolution)
    params = (device_id, metric, start, end, limit + 1)
    if res is Resolution.raw:
        rows = await (await conn.execute(
            """SELECT ts, value, text_value, quality FROM readings
                WHERE device_id = %s AND metric = %s AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s""", params,
        )).fetchall()
        points = [HistoryPoint(**r) for r in rows]
    else:
        table = "readings_1m" if res is Resolution.minute else "readings_1h"  # fixed names, not input
        rows = await (await conn.execute(
            f"""SELECT bucket AS ts, avg_value AS value, min_value AS min, max_value AS max, samples
                  FROM {table} WHERE device_id = %s AND metric = %s AND bucket >= %s AND bucket < %s
                 ORDER BY bucket LIMIT %s""", params,  # noqa: S608
        )).fetchall()
        points = [HistoryPoint(**r) for r in rows]
    return History(device_id=device_id, metric=metric, resolution=res, start=start, end=end,
                   points=points[:limit], truncated=len(points) > limit)
