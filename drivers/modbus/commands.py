"""Device commands as Modbus writes: the model's `command_writes` map a command to register writes.

The command dispatcher (api/commands/dispatcher.py) calls the writer registered as
`ctx.extras["modbus_command_writer"]`; a command is `done` only when every write read back as
written, `failed` with the reason otherwise. Each write is returned for the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from api.commands.dispatcher import ModbusOutcome
from hub.registry.model import CommandWrite, DeviceModel

from .driver import ModbusDriver, WriteRejected
from .endpoint import ModbusReadError

log = logging.getLogger(__name__)

WriteValue = float | bool | str


class NotMapped(ValueError):
    """The model maps no register writes for this command, or an argument is missing."""


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    metric: str
    value: WriteValue


def plan_writes(model: DeviceModel, name: str, args: dict[str, Any]) -> list[PlannedWrite]:
    """The writes a command makes, in order, with arguments filled in (pure)."""
    writes: list[CommandWrite] | None = model.modbus.command_writes.get(name) if model.modbus else None
    if not writes:
        raise NotMapped(f"device model {model.id} maps no Modbus writes for command {name!r}")
    planned: list[PlannedWrite] = []
    for write in writes:
        if write.arg is not None:
            if write.arg not in args:
                raise NotMapped(f"command {name!r} needs argument {write.arg!r} for {write.metric}")
            value = args[write.arg]
            if not isinstance(value, bool | int | float | str):
                raise NotMapped(f"argument {write.arg!r}: expected a number, flag or label")
        else:
            assert write.value is not None  # the model validator demands value or arg
            value = write.value
        planned.append(PlannedWrite(write.metric, value))
    return planned


class ModbusCommandWriter:
    """`await writer(site, device, name, args) -> ModbusOutcome` over a running `ModbusDriver`."""

    def __init__(self, driver: ModbusDriver) -> None:
        self.driver = driver

    async def __call__(self, site: str, device: str, name: str, args: dict[str, Any]) -> ModbusOutcome:
        poller = self.driver.pollers.get((site, device))
        if poller is None:
            return ModbusOutcome(False, f"{site}/{device} is not a Modbus device of this hub")
        try:
            planned = plan_writes(poller.device.model, name, args)
        except NotMapped as exc:
            return ModbusOutcome(False, str(exc))
        done: list[dict[str, Any]] = []
        for write in planned:
            record: dict[str, Any] = {"metric": write.metric, "requested": write.value}
            try:
                record["before"] = await self.driver.read_metric(site, device, write.metric)
                result = await self.driver.write_metric(site, device, write.metric, write.value)
            except WriteRejected as exc:
                return self._failed(done, record, f"{write.metric}: write refused: {exc}")
            except ModbusReadError as exc:
                why = f"the device refused the value ({exc.reason})" if exc.exception_code else f"no answer ({exc.reason})"
                return self._failed(done, record, f"{write.metric}: {why}")
            record.update(read_back=result.read_back, verified=result.verified)
            done.append(record)
            if not result.verified:
                return ModbusOutcome(False, f"{write.metric}: {result.detail}", tuple(done))
        summary = ", ".join(f"{w['metric']}={w['read_back']!r}" for w in done)
        return ModbusOutcome(True, f"written and read back: {summary}", tuple(done))

    @staticmethod
    def _failed(done: list[dict[str, Any]], record: dict[str, Any], detail: str) -> ModbusOutcome:
        record.update(read_back=None, verified=False, error=detail)
        log.warning("modbus command write failed: %s", detail)
        return ModbusOutcome(False, detail, (*done, record))

