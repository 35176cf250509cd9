"""Visitor passes for gates: a time window, a set of gates, a use count, revocable.

Creating or revoking a pass pushes it to each gate of its set as a command (api/pass_sync.py);
gates decide offline and report each use as an event, which the hub counts. Readers that ask
online instead use `GET /visitor-passes/{code}/check?gate=` (read-only) and
`POST /visitor-passes/{code}/use?gate=` (counts a use) — docs/api.md.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AfterValidator, BaseModel, Field, model_validator

from api.audit import record
from api.deps import Config, Conn, Origin, Reader, require, scoped_sites
from api.errors import ApiError, not_found
from api.pagination import Page, decode_cursor, encode_cursor
from api.params import BigId, Cursor, Limit, SiteFilter, _aware
from api.pass_sync import ADD, REVOKE, push_to_gates
from api.scope import Principal

router = APIRouter(tags=["visitor passes"])
Manager = Annotated[Principal, Depends(require("passes.manage"))]
Checker = Annotated[Principal, Depends(require("passes.check"))]
PassCode = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{4,64}$")]
GateId = Annotated[str, Query(pattern=r"^[a-z0-9_-]{1,64}$", description="the gate's device id in the pass's site")]
Aware = Annotated[datetime, AfterValidator(_aware)]


class PassCreate(BaseModel):
    site_id: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    gates: list[Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,64}$")]] = Field(min_length=1, max_length=50)
    visitor: str = Field(min_length=1, max_length=200)
    valid_from: Aware
    valid_until: Aware
    max_uses: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _window(self) -> PassCreate:
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if (self.valid_until - self.valid_from).days > 31:
            raise ValueError("a visitor pass may last at most 31 days")
        return self


class PassPublic(BaseModel):
    id: int
    code: str
    site_id: str
    gates: list[str]
    visitor: str
    valid_from: datetime
    valid_until: datetime
    max_uses: int
    uses: int
    created_by: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None


class PassCheck(BaseModel):
    code: str
    gate: str
    granted: bool
    reason: str  # ok | unknown | revoked | not_yet_valid | expired | used_up | wrong_gate
    uses_left: int | None = None
    valid_until: datetime | None = None


def _public(row: dict[str, Any]) -> PassPublic:
    return PassPublic(**{k: row[k] for k in PassPublic.model_fields})


def judge(row: dict[str, Any] | None, gate: str, now: datetime) -> str:
    """Why a pass opens a gate or not; pure so gates and tests agree on the rules."""
    if row is None:
        return "unknown"
    if row["revoked_at"] is not None:
        return "revoked"
    if now < row["valid_from"]:
        return "not_yet_valid"
    if now >= row["valid_until"]:
        return "expired"
    if gate not in row["gates"]:
        return "wrong_gate"
    if row["uses"] >= row["max_uses"]:
        return "used_up"
    return "ok"


@router.post("/visitor-passes", response_model=PassPublic, status_code=201)
async def create_pass(body: PassCreate, conn: Conn, config: Config, origin: Origin, user: Manager) -> PassPublic:
    if not user.sees(body.site_id):
        raise ApiError(403, "forbidden", "site outside your scope")
    gates = await (await conn.execute(
        "SELECT device_id FROM devices WHERE site_id = %s AND kind = 'gate' AND device_id = ANY(%s)",
        (body.site_id, body.gates),
    )).fetchall()
    missing = sorted(set(body.gates) - {g["device_id"] for g in gates})
    if missing:
        raise ApiError(422, "invalid", f"gates: not gates of site {body.site_id}: {', '.join(missing)}")
    row = await (await conn.execute(
        """INSERT INTO visitor_passes (code, site_id, gates, visitor, valid_from, valid_until, max_uses, created_by)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *""",
        (secrets.token_urlsafe(12), body.site_id, sorted(set(body.gates)), body.visitor, body.valid_from,
         body.valid_until, body.max_uses, user.username),
    )).fetchone()
    assert row is not None
    p = _public(row)
    await record(conn, actor=user.username, origin=origin, action="visitor_pass.create", target=f"visitor_pass:{p.id}",
                 after=p.model_dump(mode="json", exclude={"code"}))
    await push_to_gates(conn, row, ADD, actor=user.username, origin=origin, complete_s=config.command_complete_s)
    return p


@router.get("/visitor-passes", response_model=Page[PassPublic])
async def list_passes(conn: Conn, user: Reader, site: SiteFilter = None, active: bool | None = None,
                      limit: Limit = 100, cursor: Cursor = None) -> Page[PassPublic]:
    sites = scoped_sites(user, site)
    after = decode_cursor(cursor, (int,))
    rows = await (await conn.execute(
        """SELECT * FROM visitor_passes
            WHERE (%(sites)s::text[] IS NULL OR site_id = ANY(%(sites)s))
              AND (%(active)s::boolean IS NULL OR (revoked_at IS NULL AND valid_until > now() AND uses < max_uses) = %(active)s)
              AND (%(after)s::bigint IS NULL OR id < %(after)s)
            ORDER BY id DESC LIMIT %(limit)s""",
        {"sites": sites, "active": active, "after": after[0] if after else None, "limit": limit + 1},
    )).fetchall()
    nxt = encode_cursor([rows[limit - 1]["id"]]) if len(rows) > limit else None
    return Page(items=[_public(r) for r in rows[:limit]], next_cursor=nxt)


@router.post("/visitor-passes/{pass_id}/revoke", response_model=PassPublic)
async def revoke_pass(pass_id: BigId, conn: Conn, config: Config, origin: Origin, user: Manager) -> PassPublic:
    row = await (await conn.execute("SELECT * FROM visitor_passes WHERE id = %s FOR UPDATE", (pass_id,))).fetchone()
    if row is None or not user.sees(row["site_id"]):
        raise not_found("visitor pass")
    if row["revoked_at"] is not None:
        raise ApiError(409, "conflict", "already revoked")
    new = await (await conn.execute(
        "UPDATE visitor_passes SET revoked_at = now(), revoked_by = %s WHERE id = %s RETURNING *", (user.username, pass_id)
    )).fetchone()
    assert new is not None
    await record(conn, actor=user.username, origin=origin, action="visitor_pass.revoke", target=f"visitor_pass:{pass_id}",
                 before={"revoked_at": None}, after={"revoked_at": new["revoked_at"]})
    await push_to_gates(conn, new, REVOKE, actor=user.username, origin=origin, complete_s=config.command_complete_s)
    return _public(new)


async def _check(conn: Conn, user: Principal, code: str, gate: str, *, consume: bool, complete_s: float = 60.0) -> PassCheck:
    sql = "SELECT * FROM visitor_passes WHERE code = %s FOR UPDATE" if consume else "SELECT * FROM visitor_passes WHERE code = %s"
    row = await (await conn.execute(sql, (code,))).fetchone()
    if row is not None and not user.sees(row["site_id"]):
        row = None  # out of scope looks exactly like unknown
    reason = judge(row, gate, datetime.now(UTC))
    granted = reason == "ok"
    if consume:
        if granted and row is not None:
            row = await (await conn.execute(
                "UPDATE visitor_passes SET uses = uses + 1 WHERE id = %s RETURNING *", (row["id"],)
            )).fetchone()
            if row is not None and row["uses"] >= row["max_uses"]:
                # Gates holding a copy count per gate: take the used-up pass off all of them.
                await push_to_gates(conn, row, REVOKE, actor="hub", origin="visitor pass uses", complete_s=complete_s)
                await record(conn, actor="hub", origin="visitor pass uses", action="visitor_pass.used_up",
                             target=f"visitor_pass:{row['id']}", before={"uses": row["uses"] - 1},
                             after={"uses": row["uses"], "max_uses": row["max_uses"]})
        await conn.execute(
            "INSERT INTO visitor_pass_checks (pass_id, code, gate, granted, reason) VALUES (%s, %s, %s, %s, %s)",
            (row["id"] if row else None, code, gate, granted, reason),
        )
    left = row["max_uses"] - row["uses"] if row is not None and reason not in ("unknown",) else None
    return PassCheck(code=code, gate=gate, granted=granted, reason=reason, uses_left=left,
                     valid_until=row["valid_until"] if row is not None else None)


@router.get("/visitor-passes/{code}/check", response_model=PassCheck)
async def check_pass(code: PassCode, gate: GateId, conn: Conn, user: Checker) -> PassCheck:
    """Would this pass open `gate` now? Read-only: counts no use."""
    return await _check(conn, user, code, gate, consume=False)


@router.post("/visitor-passes/{code}/use", response_model=PassCheck)
async def use_pass(code: PassCode, gate: GateId, conn: Conn, config: Config, user: Checker) -> PassCheck:
    """The visitor is at `gate`: grant and count one use atomically, or say why not (logged either way)."""
    return await _check(conn, user, code, gate, consume=True, complete_s=config.command_complete_s)
