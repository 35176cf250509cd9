"""Append to audit_log: who, when, from where, what, before and after."""

from __future__ import annotations

from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb


def jsonb(value: Any) -> Jsonb:
    """Jsonb that also takes datetimes and other values orjson knows."""
    return Jsonb(value, dumps=lambda v: orjson.dumps(v, default=str).decode())


async def record(conn: AsyncConnection[Any], *, actor: str, origin: str | None, action: str, target: str,
                 before: Any = None, after: Any = None) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, origin, action, target, before, after) VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, origin, action, target, None if before is None else jsonb(before),
         None if after is None else jsonb(after)),
    )
