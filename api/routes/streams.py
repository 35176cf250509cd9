"""Server-sent events: alarm and work-order changes (LISTEN hub_alarms / hub_work_orders) in the caller's scope."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from api.deps import Reader
from api.scope import Principal
from api.workorder_actions import visible

router = APIRouter(tags=["streams"])
HEARTBEAT_S = 15.0


def sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {orjson.dumps(data, default=str).decode()}\n\n".encode()


async def notify_events(dsn: str, channel: str, event: str, visible: Callable[[dict[str, Any]], bool],
                        request: Request) -> AsyncIterator[bytes]:
    """One LISTEN connection per stream; notifications the caller may not see are skipped."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield b": connected\n\n"
        notifies = conn.notifies()
        while not await request.is_disconnected():
            try:
                note = await asyncio.wait_for(anext(notifies), HEARTBEAT_S)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            try:
                payload = orjson.loads(note.payload)
            except orjson.JSONDecodeError:
                continue
            if isinstance(payload, dict) and visible(payload):
                yield sse(event, payload)
    finally:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


def alarm_events(dsn: str, user: Principal, request: Request) -> AsyncIterator[bytes]:
    return notify_events(dsn, "hub_alarms", "alarm", lambda p: user.sees(str(p.get("site_id"))), request)


def work_order_events(dsn: str, user: Principal, request: Request) -> AsyncIterator[bytes]:
    """Same visibility as GET /work-orders: the caller's sites, or assigned to the caller's staff member."""
    return notify_events(dsn, "hub_work_orders", "work_order",
                         lambda p: visible(user, str(p.get("site_id")), p.get("assignee")), request)


@router.get("/streams/alarms", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "`event: alarm` with {id, state, site_id, rule_id}"}})
async def stream_alarms(request: Request, user: Reader) -> StreamingResponse:
    dsn: str = request.app.state.dsn
    return StreamingResponse(alarm_events(dsn, user, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/streams/work-orders", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`event: work_order` with {id, state, site_id, assignee}"}})
async def stream_work_orders(request: Request, user: Reader) -> StreamingResponse:
    dsn: str = request.app.state.dsn
    return StreamingResponse(work_order_events(dsn, user, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
