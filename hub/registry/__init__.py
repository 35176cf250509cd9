"""Site registry: YAML files describing sites, devices, device models, staff and rosters."""

from hub.registry.loader import DeviceRef, Registry, load_registry
from hub.registry.model import Device, DeviceModel, Metric, Register, Site

__all__ = ["Device", "DeviceModel", "DeviceRef", "Metric", "Register", "Registry", "Site", "load_registry"]
