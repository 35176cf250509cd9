"""OAuth2 password flow (short-lived JWT + rotating refresh token), API tokens, users."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from api.audit import record
from api.deps import Config, Conn, CurrentUser, Origin, require, unauthorized
from api.errors import ApiError, not_found
from api.params import BigId
from api.scope import Principal, Role
from api.security import (
    API_TOKEN_PREFIX,
    REFRESH_TOKEN_PREFIX,
    hash_password,
    issue_access_token,
    new_opaque_token,
    token_digest,
    verify_password,
)

router = APIRouter(tags=["auth"])
Admin = Annotated[Principal, Depends(require("users.manage"))]
USERNAME = r"^[A-Za-z0-9_.@-]{1,64}$"
SITE = r"^(\*|[a-z0-9_-]{1,64})$"
STAFF = r"^[A-Za-z0-9_.-]{1,64}$"
MAX_FAILED_LOGINS = 10  # per username in 5 minutes (counted from the audit log)


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str


class RefreshRequest(BaseModel):
    refresh_token: str = Field(max_length=200)


class Me(BaseModel):
    id: int
    username: str
    role: Role
    sites: list[str]
    via: str
    staff_id: str | None = None


class UserCreate(BaseModel):
    username: str = Field(pattern=USERNAME)
    password: str = Field(min_length=8, max_length=256)
    role: Role
    sites: list[Annotated[str, Field(pattern=SITE)]] = Field(min_length=1, max_length=500)
    staff_id: str | None = Field(None, pattern=STAFF, description="the staff member this user acts as")


class UserUpdate(BaseModel):
    role: Role | None = None
    sites: list[Annotated[str, Field(pattern=SITE)]] | None = Field(None, min_length=1, max_length=500)
    active: bool | None = None
    password: str | None = Field(None, min_length=8, max_length=256)
    staff_id: str | None = Field(None, pattern=STAFF, description="link to a staff member; an explicit null unlinks")


class UserPublic(BaseModel):
    id: int
    username: str
    role: Role
    sites: list[str]
    active: bool
    staff_id: str | None = None
    created_at: datetime


class ApiTokenCreate(BaseModel):
    user_id: int = Field(ge=1, lt=2**62)
    name: str = Field(min_length=1, max_length=100)
    expires_at: datetime | None = None


class ApiTokenCreated(BaseModel):
    id: int
    token: str  # shown once; only its digest is stored


async def _issue_pair(conn: Conn, config: Config, user_id: int, username: str) -> TokenPair:
    refresh = new_opaque_token(REFRESH_TOKEN_PREFIX)
    await conn.execute(
        "INSERT INTO api_refresh_tokens (token_hash, user_id, expires_at) VALUES (%s, %s, now() + %s)",
        (token_digest(refresh), user_id, config.refresh_ttl),
    )
    access = issue_access_token(secret=config.secret, user_id=user_id, username=username, ttl=config.access_ttl)
    return TokenPair(access_token=access, expires_in=int(config.access_ttl.total_seconds()), refresh_token=refresh)


@router.post("/auth/token", response_model=TokenPair, summary="OAuth2 password flow")
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], conn: Conn, config: Config, origin: Origin) -> TokenPair:
    failures = await (await conn.execute(
        """SELECT count(*) AS n FROM audit_log
            WHERE target = %s AND action = 'auth.login_failed' AND at > now() - interval '5 minutes'""",
        (f"user:{form.username[:64]}",),
    )).fetchone()
    if failures is not None and failures["n"] >= MAX_FAILED_LOGINS:
        raise ApiError(429, "rate_limited", "too many failed logins for this user; try again in a few minutes",
                       headers={"Retry-After": "300"})
    row = await (await conn.execute(
        "SELECT id, username, password_hash FROM api_users WHERE username = %s AND active", (form.username,)
    )).fetchone()
    if not verify_password(form.password, row["password_hash"] if row else None) or row is None:
        await record(conn, actor=form.username[:64], origin=origin, action="auth.login_failed", target=f"user:{form.username[:64]}")
        await conn.commit()
        raise unauthorized("wrong username or password")
    pair = await _issue_pair(conn, config, row["id"], row["username"])
    await record(conn, actor=row["username"], origin=origin, action="auth.login", target=f"user:{row['id']}")
    return pair


@router.post("/auth/refresh", response_model=TokenPair, summary="Swap a refresh token for a new pair")
async def refresh(req: RefreshRequest, conn: Conn, config: Config) -> TokenPair:
    """Each refresh token works once; presenting a used one revokes all of that user's tokens."""
    digest = token_digest(req.refresh_token)
    row = await (await conn.execute(
        """SELECT r.user_id, r.used_at, r.expires_at > now() AS live, u.username, u.active
             FROM api_refresh_tokens r JOIN api_users u ON u.id = r.user_id
            WHERE r.token_hash = %s FOR UPDATE OF r""", (digest,),
    )).fetchone()
    if row is None or not row["active"] or not row["live"]:
        raise unauthorized("refresh token invalid or expired")
    if row["used_at"] is not None:
        await conn.execute("DELETE FROM api_refresh_tokens WHERE user_id = %s", (row["user_id"],))
        await conn.commit()
        raise unauthorized("refresh token already used; all sessions of this user were signed out")
    await conn.execute("UPDATE api_refresh_tokens SET used_at = now() WHERE token_hash = %s", (digest,))
    return await _issue_pair(conn, config, row["user_id"], row["username"])


@router.get("/auth/me", response_model=Me)
async def me(principal: CurrentUser) -> Me:
    sites = ["*"] if principal.sites is None else sorted(principal.sites)
    return Me(id=principal.user_id, username=principal.username, role=principal.role, sites=sites, via=principal.via,
              staff_id=principal.staff_id)


@router.post("/auth/api-tokens", response_model=ApiTokenCreated, status_code=201, summary="API token for a machine user")
async def create_api_token(req: ApiTokenCreate, conn: Conn, admin: Admin, origin: Origin) -> ApiTokenCreated:
    user = await (await conn.execute("SELECT id FROM api_users WHERE id = %s", (req.user_id,))).fetchone()
    if user is None:
        raise not_found("user")
    token = new_opaque_token(API_TOKEN_PREFIX)
    row = await (await conn.execute(
        "INSERT INTO api_tokens (token_hash, user_id, name, expires_at) VALUES (%s, %s, %s, %s) RETURNING id",
        (token_digest(token), req.user_id, req.name, req.expires_at),
    )).fetchone()
    assert row is not None
    await record(conn, actor=admin.username, origin=origin, action="api_token.create", target=f"api_token:{row['id']}",
                 after={"user_id": req.user_id, "name": req.name, "expires_at": req.expires_at})
    return ApiTokenCreated(id=row["id"], token=token)


@router.delete("/auth/api-tokens/{token_id}", status_code=204)
async def revoke_api_token(token_id: BigId, conn: Conn, admin: Admin, origin: Origin) -> None:
    row = await (await conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id", (token_id,)
    )).fetchone()
    if row is None:
        raise not_found("API token")
    await record(conn, actor=admin.username, origin=origin, action="api_token.revoke", target=f"api_token:{token_id}")


async def _check_staff(conn: Conn, staff_id: str | None) -> None:
    """A user may act only as an existing, active staff member (422 otherwise, not a 409 from the FK)."""
    if staff_id is not None and await (await conn.execute(
            "SELECT 1 FROM staff WHERE id = %s AND active", (staff_id,))).fetchone() is None:
        raise ApiError(422, "invalid", f"staff_id: no active staff member {staff_id!r}")


def _public(row: dict[str, Any]) -> UserPublic:
    return UserPublic(**{k: row[k] for k in UserPublic.model_fields})


@router.get("/users", response_model=list[UserPublic], tags=["users"])
async def list_users(conn: Conn, admin: Admin) -> list[UserPublic]:
    rows = await (await conn.execute("SELECT * FROM api_users ORDER BY id")).fetchall()
    return [_public(r) for r in rows]


@router.post("/users", response_model=UserPublic, status_code=201, tags=["users"])
async def create_user(req: UserCreate, conn: Conn, admin: Admin, origin: Origin) -> UserPublic:
    await _check_staff(conn, req.staff_id)
    row = await (await conn.execute(
        """INSERT INTO api_users (username, password_hash, role, sites, staff_id) VALUES (%s, %s, %s, %s, %s)
           ON CONFLICT (username) DO NOTHING RETURNING *""",
        (req.username, hash_password(req.password), req.role.value, sorted(set(req.sites)), req.staff_id),
    )).fetchone()
    if row is None:
        raise ApiError(409, "conflict", f"user {req.username!r} exists")
    user = _public(row)
    await record(conn, actor=admin.username, origin=origin, action="user.create", target=f"user:{user.id}",
                 after=user.model_dump(exclude={"created_at"}))
    return user


@router.patch("/users/{user_id}", response_model=UserPublic, tags=["users"])
async def update_user(user_id: BigId, req: UserUpdate, conn: Conn, admin: Admin, origin: Origin) -> UserPublic:
    before = await (await conn.execute("SELECT * FROM api_users WHERE id = %s FOR UPDATE", (user_id,))).fetchone()
    if before is None:
        raise not_found("user")
    await _check_staff(conn, req.staff_id)
    row = await (await conn.execute(
        """UPDATE api_users SET role = coalesce(%s, role), sites = coalesce(%s, sites),
                  active = coalesce(%s, active), password_hash = coalesce(%s, password_hash), updated_at = now(),
                  staff_id = CASE WHEN %s THEN %s ELSE staff_id END
            WHERE id = %s RETURNING *""",
        (req.role.value if req.role else None, sorted(set(req.sites)) if req.sites else None, req.active,
         hash_password(req.password) if req.password else None, "staff_id" in req.model_fields_set, req.staff_id,
         user_id),
    )).fetchone()
    assert row is not None
    if req.password or req.active is False:
        await conn.execute("DELETE FROM api_refresh_tokens WHERE user_id = %s", (user_id,))
    after = _public(row)
    await record(conn, actor=admin.username, origin=origin, action="user.update", target=f"user:{user_id}",
                 before=_public(before).model_dump(exclude={"created_at"}),
                 after={**after.model_dump(exclude={"created_at"}), "password_changed": bool(req.password)})
    return after



