"""Run the hub inside the test process (a background event loop) against the test servers."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from hub.config import Settings, load_settings
from hub.runtime import HubContext, HubRuntime


class RunningHub:
    """`with RunningHub(...) as hub:` starts ingest (and given components) in a thread."""

    def __init__(self, db_url: str, broker_url: str, registry: Path, *, components: list[Any] | None = None, client_id: str = "hub-test", **settings: Any) -> None:
        self.settings: Settings = load_settings(
            None, database_url=db_url, mqtt_url=broker_url, registry=registry, mqtt_client_id=client_id,
            api_enabled=False, **settings,
        )
        self.runtime = HubRuntime(self.settings, components=components or [], worker=client_id)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.ctx: HubContext | None = None

    def __enter__(self) -> RunningHub:
        self.thread.start()
        self.ctx = asyncio.run_coroutine_threadsafe(self.runtime.start(), self.loop).result(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runtime.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def pipeline(self) -> Any:
        assert self.ctx is not None
        return self.ctx.pipeline
