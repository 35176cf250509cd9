"""What the rule engine knows of each device: where it is, what it is. Built from the registry."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

from hub.registry import Registry
from rules.model import GroupBy, Scope


@dataclass(frozen=True, slots=True)
class DeviceMeta:
    id: int
    site: str
    device: str
    kind: str
    model: str
    building: str | None
    grid: str | None
    zone: str | None
    floor: int | None
    tz: ZoneInfo
    name: str | None = None

    @property
    def scope_key(self) -> str:
        return f"{self.site}/{self.device}"

    def group_key(self, by: GroupBy) -> str | None:
        """The scope key of the device's zone/building/… or None if it has none."""
        if by == "site":
            return f"{self.site}/site"
        value = {"zone": self.zone, "building": self.building, "grid": self.grid,
                 "floor": None if self.floor is None or self.building is None else f"{self.building}.{self.floor}"}[by]
        return None if value is None else f"{self.site}/{by}:{value}"

    def matches(self, scope: Scope) -> bool:
        return ((not scope.sites or self.site in scope.sites)
                and (not scope.buildings or self.building in scope.buildings)
                and (not scope.grids or self.grid in scope.grids)
                and (not scope.kinds or self.kind in scope.kinds)
                and (not scope.models or self.model in scope.models)
                and (not scope.devices or self.device in scope.devices or self.scope_key in scope.devices))


def device_metas(registry: Registry, ids: dict[tuple[str, str], int]) -> dict[int, DeviceMeta]:
    out: dict[int, DeviceMeta] = {}
    for key, ref in registry.devices.items():
        device_id = ids.get(key)
        if device_id is None:
            continue
        out[device_id] = DeviceMeta(
            id=device_id, site=ref.site.id, device=ref.device.id, kind=ref.model.kind, model=ref.model.id,
            building=ref.device.building, grid=ref.grid, zone=ref.device.zone, floor=ref.device.floor,
            tz=ZoneInfo(ref.site.timezone), name=ref.device.name,
        )
    return out


def known_metrics(registry: Registry) -> dict[str, set[str]]:
    """Device kind → every metric some model of that kind reports (for `hub rules check`)."""
    out: dict[str, set[str]] = {}
    for model in registry.models.values():
        out.setdefault(model.kind, set()).update(m.name for m in model.metrics)
    return out
