"""The site registry: sites → buildings → grids (网格) → devices, device models, staff, rosters.

Pure data, validated by pydantic. Cross-references (a device's model, building, grid) are
checked by `hub.registry.loader`, which knows the file and line of every object.
"""

from __future__ import annotations

from datetime import time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Id = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]
MetricName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]

DeviceKind = Literal[
    "elevator",
    "escalator",
    "gate",
    "door",
    "fire_panel",
    "fire_detector",
    "fire_module",
    "parking_meter",
    "parking_lane",
    "barrier",
    "sensor",
]
Protocol = Literal["mqtt", "modbus"]
MetricType = Literal["number", "int", "bool", "string", "enum"]
RegisterTable = Literal["holding", "input", "coil", "discrete"]
RegisterType = Literal[
    "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool"
]
Order = Literal["big", "little"]
Skill = Literal["elevator", "fire", "access", "parking", "general"]
StaffRole = Literal["butler", "technician", "supervisor", "operator", "contractor"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Metric(_Strict):
    """One value a device reports; `type` decides what the ingest path accepts."""

    name: MetricName
    type: MetricType = "number"
    unit: str | None = None
    description: str | None = None
    values: dict[int, str] | None = Field(None, description="enum: code → label")

    @model_validator(mode="after")
    def _enum_needs_values(self) -> Metric:
        if self.type == "enum" and not self.values:
            raise ValueError("an enum metric needs `values` (code: label)")
        return self


class Register(_Strict):
    """Where a metric lives in a Modbus device, and how to decode it."""

    metric: MetricName
    table: RegisterTable = "holding"
    address: int = Field(ge=0, le=65535)
    type: RegisterType = "uint16"
    byte_order: Order = "big"
    word_order: Order = "big"
    scale: float = 1.0
    offset: float = 0.0
    bit: int | None = Field(None, ge=0, le=63, description="read one bit of the value")
    nan_value: float | None = Field(None, description="raw value that means 'no data'")
    writable: bool = False
    events: bool | dict[int, str] | None = Field(
        None, description="change-of-state events (docs/modbus.md); default: flags give <metric>.on/.off"
    )

    @property
    def count(self) -> int:
        """Registers (16-bit words) this value occupies; coils and discretes count one bit."""
        if self.table in ("coil", "discrete") or self.type in ("int16", "uint16", "bool"):
            return 1
        if self.type in ("int32", "uint32", "float32"):
            return 2
        return 4


class CommandWrite(_Strict):
    """One register write a command makes: a fixed `value`, or the command argument `arg`."""

    metric: MetricName
    value: float | bool | str | None = Field(None, description="number, flag, or enum label")
    arg: MetricName | None = Field(None, description="take the value from this command argument")

    @model_validator(mode="after")
    def _value_or_arg(self) -> CommandWrite:
        if (self.value is None) == (self.arg is None):
            raise ValueError("give exactly one of `value` or `arg`")
        return self


class ModbusSpec(_Strict):
    unit_id: int = Field(1, ge=0, le=255)
    poll_interval_s: float = Field(1.0, gt=0)
    timeout_s: float = Field(1.0, gt=0)
    retries: int = Field(2, ge=0, le=10)
    registers: list[Register] = Field(min_length=1)
    command_writes: dict[MetricName, list[CommandWrite]] = Field(
        default_factory=dict, description="command name → register writes, in order (docs/modbus.md)"
    )


class DeviceModel(_Strict):
    """A make of device: its kind, protocol, metrics, and (for Modbus) its register map."""

    id: Id
    kind: DeviceKind
    protocol: Protocol
    vendor: str | None = None
    description: str | None = None
    heartbeat_s: float = Field(60.0, gt=0)
    offline_after_s: float | None = Field(None, gt=0, description="default: 3 × heartbeat")
    strict_metrics: bool = Field(True, description="reject metrics the model does not declare")
    metrics: list[Metric] = Field(default_factory=list)
    modbus: ModbusSpec | None = None
    commands: list[str] = Field(default_factory=list)

    @property
    def offline_after(self) -> float:
        return self.offline_after_s or 3 * self.heartbeat_s

    def metric(self, name: str) -> Metric | None:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        return None


class ModbusEndpoint(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(502, ge=1, le=65535)
    unit_id: int | None = Field(None, ge=0, le=255, description="overrides the model's unit id")


class Building(_Strict):
    id: Id
    name: str | None = None
    floors: int = Field(1, ge=1, le=200)
    basement_floors: int = Field(0, ge=0, le=20)


class Grid(_Strict):
    """A grid (网格): a group of buildings with one responsible butler per shift."""

    id: Id
    name: str | None = None
    buildings: list[Id] = Field(default_factory=list)


class Device(_Strict):
    id: Id
    model: Id
    name: str | None = None
    building: Id | None = None
    grid: Id | None = Field(None, description="default: the grid that holds the building")
    floor: int | None = None
    zone: str | None = Field(None, description="fire zone, lane, or door group")
    modbus: ModbusEndpoint | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Site(_Strict):
    id: Id
    name: str | None = None
    timezone: str = "Asia/Shanghai"
    address: str | None = None
    buildings: list[Building] = Field(default_factory=list)
    grids: list[Grid] = Field(default_factory=list)
    devices: list[Device] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    def grid_of(self, device: Device) -> str | None:
        if device.grid:
            return device.grid
        for grid in self.grids:
            if device.building in grid.buildings:
                return grid.id
        return None


class StaffMember(_Strict):
    id: Id
    name: str
    role: StaffRole
    sites: list[Id] = Field(default_factory=list)
    grids: list[Id] = Field(default_factory=list, description="grids a butler is responsible for")
    skills: list[Skill] = Field(default_factory=list)
    phone: str | None = None
    supervisor: Id | None = None


class Shift(_Strict):
    """A recurring shift in the site's local time; `end` before `start` runs past midnight."""

    staff: Id
    site: Id
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))
    start: time
    end: time


class RegistryFile(_Strict):
    """What one YAML file may hold; a registry folder merges several."""

    models: list[DeviceModel] = Field(default_factory=list)
    sites: list[Site] = Field(default_factory=list)
    staff: list[StaffMember] = Field(default_factory=list)
    rosters: list[Shift] = Field(default_factory=list)
