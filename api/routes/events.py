"""Device events (newest first), dead letters (admins) and the audit log (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import AfterValidator, BaseModel

from api.deps import Conn, Reader, require, scoped_sites
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import Cursor, Limit, SiteFilter, _aware
from api.scope import Principal

router = APIRouter()
TimeQ = Annotated[datetime | None, AfterValidator(_aware)]
Text = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class EventPublic(BaseModel):
    ts: datetime
    device_id: int
    site_id: str
    device: str
    code: str
    data: dict[str, Any] | None


@router.get("/events", response_model=Page[EventPublic], tags=["events"])
async def list_events(
    conn: Conn, user: Reader, site: SiteFilter = None, device: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    code: Text = None, start: Annotated[TimeQ, Query(alias="from")] = None, end: Annotated[TimeQ, Query(alias="to")] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[EventPublic]:
    sites = scoped_sites(user, site)
    after = decode_cursor(cursor, (datetime, int, str))
    rows = await (await conn.execute(
        """SELECT e.ts, e.device_id, d.site_id, d.device_id AS device, e.code, e.data
             FROM events e JOIN devices d ON d.id = e.device_id
            WHERE (%(sites)s::text[] IS NULL OR d.site_id = ANY(%(sites)s))
              AND (%(device)s::int IS NULL OR e.device_id = %(device)s)
              AND (%(code)s::text IS NULL OR e.code = %(code)s)
              AND (%(start)s::timestamptz IS NULL OR e.ts >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR e.ts < %(end)s)
              AND (%(a_ts)s::timestamptz IS NULL OR (e.ts, e.device_id, e.code) < (%(a_ts)s, %(a_dev)s, %(a_code)s))
            ORDER BY e.ts DESC, e.device_id DESC, e.code DESC LIMIT %(limit)s""",
        {"sites": sites, "device": device, "code": code, "start": start, "end": end,
         "a_ts": after[0] if after else None, "a_dev": after[1] if after else None,
         "a_code": after[2] if after else None, "limit": limit + 1},
    )).fetchall()
    items = [EventPublic(**r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor([last["ts"].isoformat(), last["device_id"], last["code"]])
    return Page(items=items, next_cursor=nxt)


class DeadLetterPublic(BaseModel):
    id: int
    received_at: datetime
    source: str
    topic: str | None
    payload: str | None
    payload_bytes: int
    reason: str
    worker: str | None


@router.get("/dead-letters", response_model=Page[DeadLetterPublic], tags=["dead letters"])
async def list_dead_letters(
    conn: Conn, admin: Annotated[Principal, Depends(require("dead_letters.read"))],
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[DeadLetterPublic]:
    after = decode_cursor(cursor, (int,))
    rows = await (await conn.execute(
        """SELECT id, received_at, source, topic, payload, reason, worker FROM dead_letters
            WHERE %(after)s::bigint IS NULL OR id < %(after)s ORDER BY id DESC LIMIT %(limit)s""",
        {"after": after[0] if after else None, "limit": limit + 1},
    )).fetchall()
    items = []
    for r in rows[:limit]:
        raw = bytes(r["payload"]) if r["payload"] is not None else None
        items.append(DeadLetterPublic(
            id=r["id"], received_at=r["received_at"], source=r["source"], topic=r["topic"], reason=r["reason"],
            worker=r["worker"], payload=raw[:4096].decode("utf-8", "replace") if raw is not None else None,
            payload_bytes=len(raw) if raw is not None else 0,
        ))
    nxt = encode_cursor([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return Page(items=items, next_cursor=nxt)


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    origin: str | None
    action: str
    target: str | None
    before: Any
    after: Any


@router.get("/audit", response_model=Page[AuditEntry], tags=["audit"])
async def list_audit(
    conn: Conn, admin: Annotated[Principal, Depends(require("audit.read"))],
    actor: Annotated[str | None, Query(max_length=100)] = None, action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    start: Annotated[TimeQ, Query(alias="from")] = None, end: Annotated[TimeQ, Query(alias="to")] = None,
    limit: Limit = 100, cursor: Cursor = None,
) -> Page[AuditEntry]:
    after = decode_cursor(cursor, (int,))
    rows = await (await conn.execute(
        """SELECT id, at, actor, origin, action, target, before, after FROM audit_log
            WHERE (%(actor)s::text IS NULL OR actor = %(actor)s)
              AND (%(action)s::text IS NULL OR action = %(action)s)
              AND (%(target)s::text IS NULL OR target = %(target)s)
              AND (%(start)s::timestamptz IS NULL OR at >= %(start)s)
              AND (%(end)s::timestamptz IS NULL OR at < %(end)s)
              AND (%(after)s::bigint IS NULL OR id < %(after)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"actor": actor, "action": action, "target": target, "start": start, "end": end,
         "after": after[0] if after else None, "limit": limit + 1},
    )).fetchall()
    items = [AuditEntry(**r) for r in rows[:limit]]
    nxt = encode_cursor([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return Page(items=items, next_cursor=nxt)
