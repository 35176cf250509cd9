"""Runs the API (uvicorn) and the command dispatcher inside the hub process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

import uvicorn

from api.app import create_app
from api.commands.dispatcher import CommandDispatcher, mqtt_publisher
from api.commands.replies import make_reply_sink
from api.pass_sync import make_pass_use_sink

log = logging.getLogger(__name__)


class ApiComponent:
    name = "api"

    def __init__(self, *, serve_http: bool = True) -> None:
        self.serve_http = serve_http
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[Any] | None = None
        self.port: int | None = None
        self._stop = asyncio.Event()
        self._dispatch: asyncio.Task[Any] | None = None
        self._mqtt: Any = None

    async def start(self, ctx: Any) -> None:
        s = ctx.settings
        # Replies are applied inside the ingest transaction that stores them.
        ctx.pipeline.add_sink(make_reply_sink(ctx.catalog, ctx.worker))
        # Gates report visitor-pass uses as events; counted in the same transaction (api/pass_sync.py).
        ctx.pipeline.add_sink(make_pass_use_sink(ctx.catalog, complete_s=s.api.command_complete_s))
        self._mqtt, publish = mqtt_publisher(s.mqtt, f"{s.mqtt_client_id}-cmd")
        await asyncio.to_thread(self._mqtt.start)
        dispatcher = CommandDispatcher(s.dsn, publish, retry=timedelta(seconds=s.api.command_retry_s),
                                       modbus_writer=lambda: ctx.extras.get("modbus_command_writer"))
        self._stop = asyncio.Event()
        self._dispatch = asyncio.create_task(dispatcher.run(self._stop), name="command-dispatcher")
        if not self.serve_http:
            return
        config = uvicorn.Config(create_app(ctx), host=s.api_host, port=s.api_port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(), name="api")
        while not self.server.started:
            if self.task.done():
                await self.stop()  # the dispatcher and its MQTT connection too
                raise RuntimeError(f"API server could not start on {s.api_host}:{s.api_port} (port in use?)")
            await asyncio.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        self.port = sockets[0].getsockname()[1] if sockets else s.api_port
        ctx.extras["api_url"] = f"http://{s.api_host}:{self.port}"
        log.info("API on http://%s:%s (docs at /docs)", s.api_host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self.task
        self._stop.set()
        if self._dispatch is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatch
        if self._mqtt is not None:
            await asyncio.to_thread(self._mqtt.stop)
