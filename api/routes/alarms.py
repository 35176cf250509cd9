"""Alarms in the caller's scope: list with filters, and acknowledge / shelve / comment / clear."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from psycopg import sql
from pydantic import AfterValidator, BaseModel, Field

from api.deps import Conn, Origin, Reader, require, scoped_sites
from api.errors import ApiError, not_found
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import BigId, Cursor, Limit, SiteFilter, _aware
from api.scope import Principal
from hub.errors import StoreError
from hub.store.db import connect
from rules import alarms

router = APIRouter(tags=["alarms"])
TimeQ = Annotated[datetime | None, AfterValidator(_aware)]
MAX_SHELVE = timedelta(hours=24)


class AlarmState(StrEnum):
    active = "active"
    acknowledged = "acknowledged"
    cleared_unack = "cleared_unack"
    cleared = "cleared"
    shelved = "shelved"


class Severity(StrEnum):
    critical = "critical"
    major = "major"
    minor = "minor"
    warning = "warning"


class AlarmPublic(BaseModel):
    id: int
    rule_id: str
    site_id: str
    device_id: int | None
    scope_key: str
    kind: str
    severity: str
    state: str
    title: str
    detail: dict[str, Any]
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    cleared_at: datetime | None
    closed_at: datetime | None
    shelved_until: datetime | None
    assignee: str | None
    parent_id: int | None
    updated_at: datetime


class HistoryEntry(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    note: str | None


class AlarmDetail(AlarmPublic):
    history: list[HistoryEntry]


def _alarm(row: dict[str, Any]) -> AlarmPublic:
    return AlarmPublic(**{k: row[k] for k in AlarmPublic.model_fields})


# `top_level`: the rule the dashboards' active-alarm panels use (rules.alarms.OWN_INCIDENT).
_LIST_SQL = sql.SQL("""SELECT a.* FROM alarms a LEFT JOIN alarms p ON p.id = a.parent_id
            WHERE (%(sites)s::text[] IS NULL OR a.site_id = ANY(%(sites)s))
              AND (%(states)s::text[] IS NULL OR a.state = ANY(%(states)s))
              AND (%(sev)s::text[] IS NULL OR a.severity = ANY(%(sev)s))
              AND (%(kind)s::text IS NULL OR a.kind = %(kind)s)
              AND (%(device)s::int IS NULL OR a.device_id = %(device)s)
              AND (%(open)s::boolean IS NULL OR (a.closed_at IS NULL) = %(open)s)
              AND (%(start)s::timestamptz IS NULL OR a.raised_at >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR a.raised_at < %(end)s)
              AND (NOT %(top)s::boolean OR {own_incident})
              AND (%(a_ts)s::timestamptz IS NULL OR (a.raised_at, a.id) < (%(a_ts)s, %(a_id)s))
            ORDER BY a.raised_at DESC, a.id DESC LIMIT %(limit)s""").format(own_incident=sql.SQL(alarms.OWN_INCIDENT))


@router.get("/alarms", response_model=Page[AlarmPublic])
async def list_alarms(
    conn: Conn, user: Reader, site: SiteFilter = None,
    state: Annotated[list[AlarmState] | None, Query(max_length=5)] = None,
    severity: Annotated[list[Severity] | None, Query(max_length=4)] = None,
    kind: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
    device: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    open: bool | None = None,
    start: Annotated[TimeQ, Query(alias="from")] = None, end: Annotated[TimeQ, Query(alias="to")] = None,
    top_level: Annotated[bool, Query(description="only incidents of their own: leave out alarms grouped under "
                                                 "a root cause (parent_id) that explains them")] = False,
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[AlarmPublic]:
    sites = scoped_sites(user, site)
    after = decode_cursor(cursor, (datetime, int))
    rows = await (await conn.execute(
        _LIST_SQL,
        {"sites": sites, "states": [s.value for s in state] if state else None,
         "sev": [s.value for s in severity] if severity else None, "kind": kind, "device": device, "open": open,
         "start": start, "end": end, "top": top_level, "a_ts": after[0] if after else None,
         "a_id": after[1] if after else None, "limit": limit + 1},
    )).fetchall()
    items = [_alarm(r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor([last["raised_at"].isoformat(), last["id"]])
    return Page(items=items, next_cursor=nxt)


async def _visible_alarm(conn: Conn, user: Principal, alarm_id: int) -> dict[str, Any]:
    row = await (await conn.execute("SELECT * FROM alarms WHERE id = %s", (alarm_id,))).fetchone()
    if row is None or not user.sees(row["site_id"]):
        raise not_found("alarm")
    return dict(row)


@router.get("/alarms/{alarm_id}", response_model=AlarmDetail)
async def get_alarm(alarm_id: BigId, conn: Conn, user: Reader) -> AlarmDetail:
    row = await _visible_alarm(conn, user, alarm_id)
    hist = await (await conn.execute(
        "SELECT at, from_state, to_state, actor, note FROM alarm_history WHERE alarm_id = %s ORDER BY at, id", (alarm_id,)
    )).fetchall()
    return AlarmDetail(**_alarm(row).model_dump(), history=[HistoryEntry(**h) for h in hist])


class Note(BaseModel):
    note: str | None = Field(None, max_length=2000)


class CommentBody(BaseModel):
    note: str = Field(min_length=1, max_length=2000)


class ShelveBody(BaseModel):
    until: datetime = Field(description="when the alarm shows again; at most 24 h ahead")
    reason: str = Field(min_length=3, max_length=2000)


def _dsn(request: Request) -> str:
    dsn: str = request.app.state.dsn
    return dsn


Dsn = Annotated[str, Depends(_dsn)]


def _lifecycle(dsn: str, action: str, alarm_id: int, actor: str, origin: str, note: str | None,
               until: datetime | None) -> None:
    """One step of `rules.alarms` (state, alarm_history, audit_log in one transaction), on its own connection."""
    with connect(dsn, autocommit=True, application_name="hub-api-alarms") as sync_conn:
        if action == "acknowledge":
            alarms.acknowledge(sync_conn, alarm_id, actor, note, origin=origin)
        elif action == "shelve":
            assert until is not None
            alarms.shelve(sync_conn, alarm_id, actor, until, note, origin=origin)
        elif action == "comment":
            alarms.comment(sync_conn, alarm_id, actor, note or "", origin=origin)
        elif action == "clear":
            alarms.clear(sync_conn, alarm_id, actor, note, origin=origin)
        else:
            raise ValueError(action)


async def _act(conn: Conn, dsn: str, user: Principal, origin: str, alarm_id: int, action: str, note: str | None,
               until: datetime | None = None) -> AlarmPublic:
    alarm = await _visible_alarm(conn, user, alarm_id)
    if action == "shelve" and alarm["state"] not in ("active", "acknowledged"):
        raise ApiError(409, "conflict", f"cannot shelve an alarm in state {alarm['state']}")
    try:
        await asyncio.to_thread(_lifecycle, dsn, action, alarm_id, user.username, origin, note, until)
    except alarms.AlarmNotFound as exc:
        raise not_found("alarm") from exc
    except alarms.InvalidTransition as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    except alarms.AlarmError as exc:
        raise ApiError(422, "invalid", str(exc)) from exc
    except StoreError as exc:
        raise ApiError(503, "unavailable", "database unavailable") from exc
    return _alarm(await _visible_alarm(conn, user, alarm_id))


@router.post("/alarms/{alarm_id}/acknowledge", response_model=AlarmPublic)
async def acknowledge(alarm_id: BigId, body: Note, conn: Conn, dsn: Dsn, origin: Origin,
                      user: Annotated[Principal, Depends(require("alarms.acknowledge"))]) -> AlarmPublic:
    return await _act(conn, dsn, user, origin, alarm_id, "acknowledge", body.note)


@router.post("/alarms/{alarm_id}/shelve", response_model=AlarmPublic)
async def shelve(alarm_id: BigId, body: ShelveBody, conn: Conn, dsn: Dsn, origin: Origin,
                 user: Annotated[Principal, Depends(require("alarms.shelve"))]) -> AlarmPublic:
    now = datetime.now(UTC)
    if body.until.tzinfo is None:
        raise ApiError(422, "invalid", "until: needs a time zone")
    if not now < body.until <= now + MAX_SHELVE:
        raise ApiError(422, "invalid", "until: must be in the future and at most 24 h ahead")
    return await _act(conn, dsn, user, origin, alarm_id, "shelve", body.reason, body.until)


@router.post("/alarms/{alarm_id}/comment", response_model=AlarmPublic)
async def comment(alarm_id: BigId, body: CommentBody, conn: Conn, dsn: Dsn, origin: Origin,
                  user: Annotated[Principal, Depends(require("alarms.comment"))]) -> AlarmPublic:
    return await _act(conn, dsn, user, origin, alarm_id, "comment", body.note)


@router.post("/alarms/{alarm_id}/clear", response_model=AlarmPublic)
async def clear(alarm_id: BigId, body: Note, conn: Conn, dsn: Dsn, origin: Origin,
                user: Annotated[Principal, Depends(require("alarms.clear"))]) -> AlarmPublic:
    return await _act(conn, dsn, user, origin, alarm_id, "clear", body.note)
