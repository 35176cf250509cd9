"""Load a registry file or folder, check cross-references, and report problems by file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from hub.errors import ConfigError
from hub.registry.model import Device, DeviceModel, RegistryFile, Shift, Site, StaffMember
from hub.yamlfile import Loc, LocatedYaml, format_loc, load_yaml, validation_error


@dataclass(frozen=True)
class Origin:
    source: LocatedYaml
    loc: Loc

    def at(self, *more: str | int) -> str:
        loc = (*self.loc, *more)
        return f"{self.source.path}:{self.source.line_of(loc)}: {format_loc(loc)}"


@dataclass(frozen=True)
class DeviceRef:
    """A device with everything ingest and rules need to know about it, resolved once."""

    site: Site
    device: Device
    model: DeviceModel
    grid: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.site.id, self.device.id)


@dataclass
class Registry:
    """The merged, checked registry with lookups by id."""

    models: dict[str, DeviceModel] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    staff: dict[str, StaffMember] = field(default_factory=dict)
    rosters: list[Shift] = field(default_factory=list)
    devices: dict[tuple[str, str], DeviceRef] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def device(self, site_id: str, device_id: str) -> DeviceRef | None:
        return self.devices.get((site_id, device_id))


def registry_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
        if not files:
            raise ConfigError(f"{path}: registry folder holds no .yaml files")
        return files
    if not path.exists():
        raise ConfigError(f"{path}: registry file not found")
    return [path]


def load_registry(path: Path | str) -> Registry:
    """Parse and check every file; raises one `ConfigError` listing all problems found."""
    problems: list[str] = []
    registry = Registry()
    origins: dict[tuple[str, ...], Origin] = {}

    parsed: list[tuple[LocatedYaml, RegistryFile]] = []
    for file in registry_files(Path(path)):
        source = load_yaml(file)
        data = source.data if source.data is not None else {}
        if not isinstance(data, dict):
            problems.append(f"{file}:1: expected a mapping with models/sites/staff/rosters")
            continue
        try:
            parsed.append((source, RegistryFile.model_validate(data)))
        except ValidationError as exc:
            problems.append(str(validation_error(exc, source)))
        registry.files.append(file)
    if problems:
        raise ConfigError("\n".join(problems))

    def add(kind: str, key: str, origin: Origin) -> bool:
        seen = origins.get((kind, key))
        if seen is not None:
            problems.append(f"{origin.at('id')}: duplicate {kind} id {key!r} (first at {seen.at()})")
            return False
        origins[(kind, key)] = origin
        return True

    for source, content in parsed:
        for i, model in enumerate(content.models):
            if add("model", model.id, Origin(source, ("models", i))):
                registry.models[model.id] = model
        for i, site in enumerate(content.sites):
            if add("site", site.id, Origin(source, ("sites", i))):
                registry.sites[site.id] = site
        for i, person in enumerate(content.staff):
            if add("staff", person.id, Origin(source, ("staff", i))):
                registry.staff[person.id] = person
        for i, shift in enumerate(content.rosters):
            origins[("shift", str(len(registry.rosters)))] = Origin(source, ("rosters", i))
            registry.rosters.append(shift)

    for model_id, model in registry.models.items():
        _check_model(model, origins[("model", model_id)], problems)
    for site_id, site in registry.sites.items():
        _check_site(site, origins[("site", site_id)], registry, problems)
    for staff_id, person in registry.staff.items():
        origin = origins[("staff", staff_id)]
        for j, site_id in enumerate(person.sites):
            if site_id not in registry.sites:
                problems.append(f"{origin.at('sites', j)}: unknown site {site_id!r}")
        known_grids = {g.id for s in registry.sites.values() for g in s.grids}
        for j, grid_id in enumerate(person.grids):
            if grid_id not in known_grids:
                problems.append(f"{origin.at('grids', j)}: unknown grid {grid_id!r}")
        if person.supervisor and person.supervisor not in registry.staff:
            problems.append(f"{origin.at('supervisor')}: unknown staff {person.supervisor!r}")
    for n, shift in enumerate(registry.rosters):
        origin = origins[("shift", str(n))]
        if shift.staff not in registry.staff:
            problems.append(f"{origin.at('staff')}: unknown staff {shift.staff!r}")
        if shift.site not in registry.sites:
            problems.append(f"{origin.at('site')}: unknown site {shift.site!r}")
        if shift.start == shift.end:
            problems.append(f"{origin.at('end')}: a shift cannot start and end at the same time")
    if problems:
        raise ConfigError("\n".join(problems))
    return registry


def _check_model(model: DeviceModel, origin: Origin, problems: list[str]) -> None:
    names = [m.name for m in model.metrics]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"{origin.at('metrics', i, 'name')}: duplicate metric {name!r}")
    if model.protocol == "modbus":
        if model.modbus is None:
            problems.append(f"{origin.at('protocol')}: a modbus model needs a `modbus` register map")
            return
        for i, reg in enumerate(model.modbus.registers):
            if reg.metric not in names:
                problems.append(
                    f"{origin.at('modbus', 'registers', i, 'metric')}: "
                    f"metric {reg.metric!r} is not declared in the model's metrics"
                )
            if reg.address + reg.count > 65536:
                problems.append(f"{origin.at('modbus', 'registers', i, 'address')}: runs past 65535")
            if reg.bit is not None:
                width = 16 * reg.count
                if reg.table in ("coil", "discrete") or reg.type.startswith("float") or reg.bit >= width:
                    problems.append(f"{origin.at('modbus', 'registers', i, 'bit')}: bit {reg.bit} needs an "
                                    f"integer holding/input register of more than {reg.bit} bits")
        _check_command_writes(model, origin, problems)
    elif model.modbus is not None:
        problems.append(f"{origin.at('modbus')}: only a modbus model may have a register map")


def _check_command_writes(model: DeviceModel, origin: Origin, problems: list[str]) -> None:
    """Each mapped command is one of the model's, and writes a writable register with a fitting value."""
    assert model.modbus is not None
    registers = {reg.metric: reg for reg in model.modbus.registers}
    for name, writes in model.modbus.command_writes.items():
        where = ("modbus", "command_writes", name)
        if name not in model.commands:
            problems.append(f"{origin.at(*where)}: {name!r} is not one of the model's commands {model.commands}")
        if not writes:
            problems.append(f"{origin.at(*where)}: a command needs at least one register write")
        for j, write in enumerate(writes):
            reg = registers.get(write.metric)
            if reg is None:
                problems.append(f"{origin.at(*where, j, 'metric')}: no register for metric {write.metric!r}")
                continue
            if not reg.writable or reg.table in ("input", "discrete"):
                problems.append(f"{origin.at(*where, j, 'metric')}: register of {write.metric!r} is not writable "
                                f"(needs `writable: true` in the holding or coil table)")
            metric = model.metric(write.metric)
            labels = metric.values if metric is not None else None
            value = write.value
            if isinstance(value, str) and (labels is None or value not in labels.values()):
                problems.append(f"{origin.at(*where, j, 'value')}: {value!r} is not a label of {write.metric!r}"
                                + (f" ({sorted(labels.values())})" if labels else ""))
            elif (labels is not None and isinstance(value, int | float) and not isinstance(value, bool)
                  and value not in labels):
                problems.append(f"{origin.at(*where, j, 'value')}: {value!r} is not a code of {write.metric!r} "
                                f"({sorted(labels)})")


def _check_site(site: Site, origin: Origin, registry: Registry, problems: list[str]) -> None:
    buildings = {b.id for b in site.buildings}
    grids = {g.id for g in site.grids}
    for kind, ids in (("building", [b.id for b in site.buildings]), ("grid", [g.id for g in site.grids])):
        for i, item_id in enumerate(ids):
            if item_id in ids[:i]:
                problems.append(f"{origin.at(kind + 's', i, 'id')}: duplicate {kind} {item_id!r}")
    for i, grid in enumerate(site.grids):
        for j, building in enumerate(grid.buildings):
            if building not in buildings:
                problems.append(f"{origin.at('grids', i, 'buildings', j)}: unknown building {building!r}")
    for i, device in enumerate(site.devices):
        where = ("devices", i)
        if (site.id, device.id) in registry.devices:
            problems.append(f"{origin.at(*where, 'id')}: duplicate device {device.id!r}")
            continue
        model = registry.models.get(device.model)
        if model is None:
            problems.append(f"{origin.at(*where, 'model')}: unknown device model {device.model!r}")
            continue
        if device.building is not None and device.building not in buildings:
            problems.append(f"{origin.at(*where, 'building')}: unknown building {device.building!r}")
        if device.grid is not None and device.grid not in grids:
            problems.append(f"{origin.at(*where, 'grid')}: unknown grid {device.grid!r}")
        if model.protocol == "modbus" and device.modbus is None:
            problems.append(f"{origin.at(*where)}: device of modbus model needs `modbus: {{host, port}}`")
        if model.protocol == "mqtt" and device.modbus is not None:
            problems.append(f"{origin.at(*where, 'modbus')}: device model {model.id!r} speaks mqtt")
        registry.devices[(site.id, device.id)] = DeviceRef(site, device, model, site.grid_of(device))
