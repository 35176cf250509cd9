"""Commands to devices: idempotent creation, confirmation of dangerous ones, lease, rate limits."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel, Field

from api.audit import jsonb, record
from api.commands.policy import check_command
from api.deps import Config, Conn, Origin, Reader, require, scoped_sites
from api.errors import ApiError, not_found
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import Cursor, DeviceId, Limit, SiteFilter
from api.routes.devices import visible_device
from api.scope import Principal, Role

router = APIRouter(tags=["commands"])
Sender = Annotated[Principal, Depends(require("commands.send"))]
CommandId = Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class CommandCreate(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9_]{1,64}$")
    args: dict[str, Any] = Field(default_factory=dict, max_length=20)
    expires_in_s: float | None = Field(None, gt=0, le=3600, description="default: the hub's command_expiry_s")


class CommandPublic(BaseModel):
    id: str
    device_id: int
    site_id: str
    name: str
    args: dict[str, Any]
    state: str
    dangerous: bool
    requested_by: str
    confirmed_by: str | None
    created_at: datetime
    expires_at: datetime
    attempts: int
    sent_at: datetime | None
    accepted_at: datetime | None
    finished_at: datetime | None
    detail: str | None
    late_reply: dict[str, Any] | None


class LeasePublic(BaseModel):
    device_id: int
    holder: str
    acquired_at: datetime
    expires_at: datetime


def _public(row: dict[str, Any]) -> CommandPublic:
    return CommandPublic(**{k: row[k] for k in CommandPublic.model_fields})


def _request_hash(device_id: int, body: CommandCreate) -> str:
    return hashlib.sha256(orjson.dumps([device_id, body.name, body.args, body.expires_in_s], option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _take_lease(conn: Conn, device_id: int, user: str, ttl: timedelta) -> None:
    """One exclusive control lease per device: take it or extend ours; 409 if someone else holds it."""
    row = await (await conn.execute(
        """INSERT INTO control_leases (device_id, holder, expires_at) VALUES (%(d)s, %(u)s, now() + %(ttl)s)
           ON CONFLICT (device_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
               acquired_at = CASE WHEN control_leases.holder = EXCLUDED.holder THEN control_leases.acquired_at ELSE now() END
            WHERE control_leases.holder = EXCLUDED.holder OR control_leases.expires_at <= now()
           RETURNING holder""", {"d": device_id, "u": user, "ttl": ttl},
    )).fetchone()
    if row is None:
        held = await (await conn.execute("SELECT holder, expires_at FROM control_leases WHERE device_id = %s", (device_id,))).fetchone()
        raise ApiError(409, "lease_held", "another user holds the control lease of this device",
                       {"holder": held["holder"], "expires_at": held["expires_at"].isoformat()} if held else None)


async def _rate_limit(conn: Conn, user: str, device_id: int, per_user: int, per_device: int) -> None:
    row = await (await conn.execute(
        """SELECT count(*) AS total, count(*) FILTER (WHERE device_id = %s) AS device
             FROM commands WHERE requested_by = %s AND created_at > now() - interval '1 minute'""", (device_id, user),
    )).fetchone()
    assert row is not None
    if row["total"] >= per_user or row["device"] >= per_device:
        raise ApiError(429, "rate_limited", f"too many commands: at most {per_user}/min per user and {per_device}/min per device",
                       headers={"Retry-After": "60"})


@router.post("/devices/{device_id}/commands", response_model=CommandPublic, status_code=201,
             responses={200: {"model": CommandPublic, "description": "replay of an earlier request with this Idempotency-Key"}})
async def create_command(
    device_id: DeviceId, body: CommandCreate, response: Response, conn: Conn, config: Config, origin: Origin, user: Sender,
    idempotency_key: Annotated[str, Header(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")],
) -> CommandPublic:
    device = await visible_device(conn, user, device_id)
    digest = _request_hash(device_id, body)
    existing = await (await conn.execute(
        "SELECT * FROM commands WHERE requested_by = %s AND idempotency_key = %s", (user.username, idempotency_key)
    )).fetchone()
    if existing is not None:
        if existing["request_hash"] != digest:
            raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
        response.status_code = 200
        return _public(existing)
    spec, args = check_command(device["kind"], body.name, body.args, user.role)
    model = await (await conn.execute(
        "SELECT spec->'commands' AS commands FROM device_models WHERE id = %s", (device["model_id"],)
    )).fetchone()
    if model is None or body.name not in (model["commands"] or []):
        raise ApiError(422, "command_not_supported", f"device model {device['model_id']} does not support {body.name}")
    await _rate_limit(conn, user.username, device_id, config.command_rate_per_minute, config.device_rate_per_minute)
    await _take_lease(conn, device_id, user.username, config.lease_ttl)
    expires = timedelta(seconds=body.expires_in_s or config.command_expiry_s)
    row = await (await conn.execute(
        """INSERT INTO commands (id, device_id, site_id, name, args, state, requested_by, origin, idempotency_key,
                                 request_hash, dangerous, expires_at, complete_within_s)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + %s, %s)
           ON CONFLICT (requested_by, idempotency_key) DO NOTHING RETURNING *""",
        (secrets.token_hex(8), device_id, device["site_id"], body.name, jsonb(args),
         "awaiting_confirmation" if spec.dangerous else "queued", user.username, origin, idempotency_key, digest,
         spec.dangerous, expires, config.command_complete_s),
    )).fetchone()
    if row is None:  # a concurrent request with the same key won
        await conn.rollback()
        again = await (await conn.execute(
            "SELECT * FROM commands WHERE requested_by = %s AND idempotency_key = %s", (user.username, idempotency_key)
        )).fetchone()
        assert again is not None
        response.status_code = 200
        return _public(again)
    await record(conn, actor=user.username, origin=origin, action="command.create", target=f"command:{row['id']}",
                 after={"device": f"{device['site_id']}/{device['device_id']}", "name": body.name, "args": args,
                        "state": row["state"]})
    response.headers["Location"] = f"/commands/{row['id']}"
    return _public(row)


@router.post("/commands/{command_id}/confirm", response_model=CommandPublic)
async def confirm_command(command_id: str, conn: Conn, origin: Origin, user: Sender) -> CommandPublic:
    """Second step for dangerous commands: the requester (or an admin/operator) confirms."""
    row = await _visible_command(conn, user, command_id, lock=True)
    if row["requested_by"] != user.username and user.role not in (Role.admin, Role.operator):
        raise ApiError(403, "forbidden", "only the requester or an operator may confirm this command")
    if row["state"] != "awaiting_confirmation":
        raise ApiError(409, "conflict", f"command is {row['state']}, not awaiting confirmation")
    updated = await (await conn.execute(
        """UPDATE commands SET state = 'queued', confirmed_by = %s, next_attempt_at = now(), updated_at = now()
            WHERE id = %s AND expires_at > now() RETURNING *""", (user.username, command_id),
    )).fetchone()
    if updated is None:
        raise ApiError(409, "conflict", "command expired before confirmation")
    await record(conn, actor=user.username, origin=origin, action="command.confirm", target=f"command:{command_id}",
                 before={"state": "awaiting_confirmation"}, after={"state": "queued"})
    return _public(updated)


async def _visible_command(conn: Conn, user: Principal, command_id: str, *, lock: bool = False) -> dict[str, Any]:
    if len(command_id) > 64:
        raise not_found("command")
    sql = "SELECT * FROM commands WHERE id = %s FOR UPDATE" if lock else "SELECT * FROM commands WHERE id = %s"
    row = await (await conn.execute(sql, (command_id,))).fetchone()
    if row is None or not user.sees(row["site_id"]):
        raise not_found("command")
    return dict(row)


@router.get("/commands/{command_id}", response_model=CommandPublic)
async def get_command(command_id: str, conn: Conn, user: Reader) -> CommandPublic:
    return _public(await _visible_command(conn, user, command_id))


@router.get("/commands", response_model=Page[CommandPublic])
async def list_commands(
    conn: Conn, user: Reader, site: SiteFilter = None, device: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    state: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None, limit: Limit = 100, cursor: Cursor = None,
) -> Page[CommandPublic]:
    sites = scoped_sites(user, site)
    after = decode_cursor(cursor, (datetime, str))
    rows = await (await conn.execute(
        """SELECT * FROM commands
            WHERE (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s))
              AND (%(device)s::int IS NULL OR device_id = %(device)s)
              AND (%(state)s::text IS NULL OR state = %(state)s)
              AND (%(a_ts)s::timestamptz IS NULL OR (created_at, id) < (%(a_ts)s, %(a_id)s))
            ORDER BY created_at DESC, id DESC LIMIT %(limit)s""",
        {"sites": sites, "device": device, "state": state, "a_ts": after[0] if after else None,
         "a_id": after[1] if after else None, "limit": limit + 1},
    )).fetchall()
    items = [_public(r) for r in rows[:limit]]
    nxt = None
    if len(rows) > limit:
        last = rows[limit - 1]
        nxt = encode_cursor([last["created_at"].isoformat(), last["id"]])
    return Page(items=items, next_cursor=nxt)


@router.post("/devices/{device_id}/lease", response_model=LeasePublic)
async def take_lease(device_id: DeviceId, conn: Conn, config: Config, origin: Origin, user: Sender) -> LeasePublic:
    await visible_device(conn, user, device_id)
    await _take_lease(conn, device_id, user.username, config.lease_ttl)
    row = await (await conn.execute("SELECT * FROM control_leases WHERE device_id = %s", (device_id,))).fetchone()
    assert row is not None  # taken just above in this transaction
    await record(conn, actor=user.username, origin=origin, action="lease.take", target=f"device:{device_id}",
                 after={"holder": row["holder"], "expires_at": row["expires_at"]})
    return LeasePublic(**row)


@router.delete("/devices/{device_id}/lease", status_code=204)
async def release_lease(device_id: DeviceId, conn: Conn, origin: Origin, user: Sender) -> None:
    """The holder releases; an admin or operator may break someone else's lease."""
    await visible_device(conn, user, device_id)
    breaker = user.role in (Role.admin, Role.operator)
    row = await (await conn.execute(
        "DELETE FROM control_leases WHERE device_id = %s AND (holder = %s OR %s) RETURNING holder",
        (device_id, user.username, breaker),
    )).fetchone()
    if row is None:
        raise ApiError(409, "conflict", "you do not hold the lease of this device")
    await record(conn, actor=user.username, origin=origin, action="lease.release", target=f"device:{device_id}",
                 before={"holder": row["holder"]})
