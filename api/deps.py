"""Annotated dependencies: a pooled connection, the authenticated caller, permission checks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Concatenate, ParamSpec, TypeVar

import psycopg
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from api.errors import ApiError, forbidden
from api.scope import Principal, Role, parse_sites
from api.security import API_TOKEN_PREFIX, decode_access_token, token_digest


@dataclass(frozen=True)
class ApiConfig:
    """What routes need from the hub's settings, resolved once at start-up."""

    secret: str
    access_ttl: timedelta
    refresh_ttl: timedelta
    command_rate_per_minute: int
    device_rate_per_minute: int
    lease_ttl: timedelta
    command_expiry_s: float
    command_complete_s: float


def get_pool(request: Request) -> AsyncConnectionPool:
    pool: AsyncConnectionPool = request.app.state.pool
    return pool


def get_sync_pool(request: Request) -> ConnectionPool:
    pool: ConnectionPool = request.app.state.sync_pool
    return pool


P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(pool: ConnectionPool, fn: Callable[Concatenate[psycopg.Connection, P], T],
                    *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous hub function (hub.workorders) on a pooled sync connection in a worker thread.

    The pool's context commits when `fn` returns and rolls back when it raises, so `fn` may open
    its own `conn.transaction()` (the hub.workorders functions do) and errors reach the handlers.
    """

    def call() -> T:
        with pool.connection() as conn:
            return fn(conn, *args, **kwargs)

    return await asyncio.to_thread(call)


def get_config(request: Request) -> ApiConfig:
    config: ApiConfig = request.app.state.config
    return config


async def get_conn(pool: Annotated[AsyncConnectionPool, Depends(get_pool)]) -> AsyncIterator[AsyncConnection[Any]]:
    """One connection per request; a transaction commits if the handler returns normally."""
    async with pool.connection() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        yield conn


# scope="function": commit (or roll back) before the response goes out, so a client that sees
# 201 and reads again at once sees its own write.
Conn = Annotated[AsyncConnection[Any], Depends(get_conn, scope="function")]
Config = Annotated[ApiConfig, Depends(get_config)]
SyncPool = Annotated[ConnectionPool, Depends(get_sync_pool)]
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/auth/token", auto_error=False)

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def unauthorized(message: str = "missing, invalid or expired token") -> ApiError:
    return ApiError(401, "unauthorized", message, headers=_UNAUTHORIZED)


async def current_principal(
    token: Annotated[str | None, Depends(oauth2_scheme)], conn: Conn, config: Config
) -> Principal:
    if not token:
        raise unauthorized("a bearer token is required")
    if token.startswith(API_TOKEN_PREFIX):
        row = await (await conn.execute(
            """UPDATE api_tokens t SET last_used_at = now()
                 FROM api_users u
                WHERE t.token_hash = %s AND u.id = t.user_id AND u.active
                  AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())
            RETURNING u.id, u.username, u.role, u.sites, u.staff_id""",
            (token_digest(token),),
        )).fetchone()
        await conn.commit()
        via = "api_token"
    else:
        claims = decode_access_token(token, secret=config.secret)
        if claims is None:
            raise unauthorized()
        row = await (await conn.execute(
            "SELECT id, username, role, sites, staff_id FROM api_users WHERE id = %s AND active", (claims.user_id,)
        )).fetchone()
        via = "jwt"
    if row is None:
        raise unauthorized()
    return Principal(row["id"], row["username"], Role(row["role"]), parse_sites(row["sites"]), via, row["staff_id"])


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require(permission: str) -> Callable[..., Any]:
    """A dependency that yields the caller if their role has `permission`, else 403."""

    async def check(principal: CurrentUser) -> Principal:
        if not principal.may(permission):
            raise forbidden(f"role {principal.role.value} may not do this ({permission})")
        return principal

    return check


Reader = Annotated[Principal, Depends(require("read"))]


def client_origin(request: Request) -> str:
    """Where a request came from, for the audit log (the direct peer; no proxy headers trusted)."""
    return request.client.host if request.client else "unknown"


Origin = Annotated[str, Depends(client_origin)]


def scoped_sites(principal: Principal, site: str | None) -> list[str] | None:
    """Sites a list query may touch: the asked one (403 if outside scope) or the caller's scope."""
    if site is not None:
        if not principal.sees(site):
            raise forbidden("site outside your scope")
        return [site]
    return principal.site_list()
