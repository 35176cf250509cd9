"""Compose the hub: registry → store → ingest (MQTT, Modbus) → rules → dispatch → API.

Only this module and the CLI know every part; the parts know `hub` and nothing of each other.
A part is a `Component`: started after ingest is up, stopped in reverse order.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from hub.config import Settings
from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Limits
from hub.ingest.pipeline import IngestPipeline
from hub.maintenance import Maintenance
from hub.registry import Registry, load_registry
from hub.store.db import connect, redact
from hub.store.migrate import MigrationReport, migrate
from hub.store.registry_sync import sync_registry

log = logging.getLogger(__name__)


@dataclass
class HubContext:
    """What components share. Built once by `HubRuntime.start`."""

    settings: Settings
    registry: Registry
    device_ids: dict[tuple[str, str], int]
    catalog: DeviceCatalog
    pipeline: IngestPipeline
    migration: MigrationReport
    worker: str
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        return self.settings.dsn


class Component(Protocol):
    name: str

    async def start(self, ctx: HubContext) -> None: ...

    async def stop(self) -> None: ...


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running hub.

    Ingest allocates a few tuples per reading (100,000+ a second) and keeps up to a queue's worth
    of messages alive; with the default thresholds the cyclic collector runs hundreds of times
    a second and its full passes walk that whole queue, holding the GIL the MQTT and COPY threads
    need. Almost nothing the hub makes is cyclic, so collect rarely, and move what exists after
    imports out of the collector's view.
    """
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def default_components(settings: Settings) -> list[Component]:
    """The parts `hub run` starts besides ingest; each import stays local to keep start-up lean."""
    components: list[Component] = []
    from drivers.modbus.component import ModbusComponent

    components.append(ModbusComponent())
    if settings.dispatch.enabled:
        from hub.dispatch.component import DispatchComponent

        components.append(DispatchComponent())
    from rules.component import RulesComponent

    components.append(RulesComponent())
    if settings.api_enabled:
        from api.component import ApiComponent

        components.append(ApiComponent())
    return components


class HubRuntime:
    def __init__(self, settings: Settings, *, components: list[Component] | None = None, worker: str | None = None) -> None:
        self.settings = settings
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}"
        self.components = components if components is not None else default_components(settings)
        self.ctx: HubContext | None = None
        self._mqtt: Any = None
        self._maintenance: Maintenance | None = None
        self._started: list[Component] = []

    async def start(self) -> HubContext:
        from drivers.mqtt.ingest import MqttIngest

        s = self.settings
        if s.registry is None:
            raise SystemExit("HUB_REGISTRY is not set: point it at a site registry file or folder")
        registry = load_registry(s.registry)
        report = await asyncio.to_thread(migrate, s.dsn, s.timescale)
        log.info("database %s: %s", redact(s.dsn), report.summary())
        with connect(s.dsn) as conn:
            ids = sync_registry(conn, registry, actor=f"hub run ({self.worker})")
        catalog = DeviceCatalog(registry, ids)
        ing = s.ingest
        from datetime import timedelta

        pipeline = IngestPipeline(
            dsn=s.dsn,
            catalog=catalog,
            limits=Limits(ing.max_payload_bytes, timedelta(seconds=ing.max_future_s), timedelta(seconds=ing.max_age_s)),
            batch_rows=ing.batch_rows,
            batch_ms=ing.batch_ms,
            queue_size=ing.queue_messages,
            worker=self.worker,
        )
        self.ctx = HubContext(s, registry, ids, catalog, pipeline, report, self.worker)
        # Components may add sinks/listeners to the pipeline before data flows.
        for component in self.components:
            await component.start(self.ctx)
            self._started.append(component)
        pipeline.start()
        self._mqtt = MqttIngest(s.mqtt, pipeline, client_id=s.mqtt_client_id, shared_group=s.mqtt_shared_group)
        await asyncio.to_thread(self._mqtt.start)
        self._maintenance = Maintenance(s.dsn, pipeline, catalog, sweep_s=ing.offline_sweep_s)
        self._maintenance.start()
        log.info("hub worker %s: %d devices on %d site(s); MQTT %s:%d", self.worker, len(catalog),
                 len(registry.sites), s.mqtt.host, s.mqtt.port)
        return self.ctx

    async def stop(self) -> None:
        """Stop in reverse: no new messages, flush and acknowledge the queue, then the rest."""
        if self.ctx is None:
            return
        pipeline = self.ctx.pipeline
        await asyncio.to_thread(pipeline.stop)
        if self._mqtt is not None:
            await asyncio.to_thread(self._mqtt.stop)
        if self._maintenance is not None:
            await asyncio.to_thread(self._maintenance.stop)
        for component in reversed(self._started):
            try:
                await component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        self._started.clear()
        log.info("hub stopped: %d messages, %d readings, %d dead letters", pipeline.stats.messages,
                 pipeline.stats.readings, pipeline.stats.dead_letters)
        self.ctx = None


async def run_until_stopped(runtime: HubRuntime, stop: asyncio.Event) -> None:
    await runtime.start()
    try:
        await stop.wait()
    finally:
        await runtime.stop()
