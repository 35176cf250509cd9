"""Connections. Every statement in the project goes through psycopg with bound parameters."""

from __future__ import annotations

import psycopg
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from hub.errors import StoreError


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable database url>"
    info.pop("password", None)
    host = info.get("host", "localhost")
    return f"postgresql://{info.get('user', '')}@{host}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "hub") -> psycopg.Connection:
    try:
        return psycopg.connect(
            dsn, autocommit=autocommit, application_name=application_name, connect_timeout=10
        )
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot connect to {redact(dsn)}: {str(exc).strip()}") from exc


async def connect_async(dsn: str, *, autocommit: bool = False) -> psycopg.AsyncConnection:
    try:
        return await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise StoreError(f"cannot connect to {redact(dsn)}: {str(exc).strip()}") from exc


def pool(dsn: str, *, min_size: int = 1, max_size: int = 4, name: str = "hub") -> ConnectionPool:
    return ConnectionPool(
        dsn, min_size=min_size, max_size=max_size, name=name, open=True,
        kwargs={"application_name": name},
    )


async def async_pool(dsn: str, *, min_size: int = 1, max_size: int = 8, name: str = "hub-api") -> AsyncConnectionPool:
    p = AsyncConnectionPool(
        dsn, min_size=min_size, max_size=max_size, name=name, open=False,
        kwargs={"application_name": name},
    )
    await p.open()
    return p
