"""`hub run` component: poll every Modbus device of the registry into the ingest pipeline."""

from __future__ import annotations

import logging
from typing import Any

from hub.ingest.decode import Batch
from hub.runtime import HubContext

from .commands import ModbusCommandWriter
from .driver import ModbusDriver, modbus_devices

log = logging.getLogger(__name__)


class ModbusComponent:
    """Starts a `ModbusDriver` for the registry's Modbus devices; `ctx.extras["modbus"]` is it."""

    name = "modbus"

    def __init__(self, *, flush_s: float = 0.1, seed: int | None = None) -> None:
        self.flush_s = flush_s
        self.seed = seed
        self.driver: ModbusDriver | None = None
        self.ctx_extras: dict[str, Any] | None = None

    async def start(self, ctx: HubContext) -> None:
        if ctx.settings.log_level != "DEBUG":
            # The driver logs connection loss and offline/online itself, once per change;
            # pymodbus would log every failed connect and every timeout with a frame dump.
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        devices = modbus_devices(ctx.registry, ctx.device_ids)
        pipeline = ctx.pipeline

        def sink(batch: Batch) -> bool:
            # Never block the event loop: a full queue keeps the rows for the next flush.
            return pipeline.put_prepared(batch, timeout=0)

        self.driver = ModbusDriver(devices, sink, flush_s=self.flush_s, seed=self.seed)
        ctx.extras["modbus"] = self.driver
        # The command dispatcher executes Modbus device commands through this (drivers/modbus/commands.py).
        ctx.extras["modbus_command_writer"] = ModbusCommandWriter(self.driver)
        self.ctx_extras = ctx.extras
        if devices:
            await self.driver.start()
        else:
            log.info("modbus: no Modbus devices in the registry")

    async def stop(self) -> None:
        if self.ctx_extras is not None:
            self.ctx_extras.pop("modbus_command_writer", None)
        if self.driver is not None:
            await self.driver.stop()
            self.driver = None
