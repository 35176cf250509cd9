"""FastAPI application factory: routers, error handlers, a connection pool for the app's life."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI

from api import errors
from api.deps import ApiConfig
from api.routes import (
    alarms,
    attendance,
    auth,
    commands,
    devices,
    events,
    sites,
    streams,
    visitor_passes,
    workorders,
)
from api.security import load_or_create_secret
from hub import __version__
from hub.config import Settings
from hub.store.db import async_pool, pool


def api_config(settings: Settings) -> ApiConfig:
    a = settings.api
    secret = load_or_create_secret(settings.secret_key.get_secret_value() if settings.secret_key else None, settings.data_dir)
    return ApiConfig(
        secret=secret, access_ttl=timedelta(seconds=a.access_ttl_s), refresh_ttl=timedelta(seconds=a.refresh_ttl_s),
        command_rate_per_minute=a.commands_per_minute, device_rate_per_minute=a.device_commands_per_minute,
        lease_ttl=timedelta(seconds=a.lease_s), command_expiry_s=a.command_expiry_s,
        command_complete_s=a.command_complete_s,
    )


def create_app(ctx: Any = None, *, settings: Settings | None = None) -> FastAPI:
    """The API over `ctx.settings` (inside the hub) or bare `settings` (tests, benchmarks)."""
    settings = settings or ctx.settings
    assert settings is not None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await async_pool(settings.dsn, min_size=1, max_size=10)
        # hub.workorders is synchronous psycopg: its calls run in worker threads on this pool.
        app.state.sync_pool = pool(settings.dsn, min_size=1, max_size=4, name="hub-api-sync")
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.sync_pool.close)
            await app.state.pool.close()

    app = FastAPI(title="Facility hub API", version=__version__, lifespan=lifespan,
                  description="Bearer tokens from POST /auth/token; errors are {\"error\": {code, message, detail}}.")
    app.state.ctx = ctx
    app.state.dsn = settings.dsn
    app.state.config = api_config(settings)
    errors.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: no auth, no database round trip."""
        return {"status": "ok"}

    for module in (auth, sites, devices, events, alarms, commands, visitor_passes, workorders, attendance, streams):
        app.include_router(module.router)
    from hub.metrics import mount_metrics

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    mount_metrics(app, token=token)  # /metrics: ingest queue depth, lag, drops (issue #9)
    return app
