"""What the decoder needs to know per device, resolved once from the registry."""

from __future__ import annotations

from dataclasses import dataclass

from hub.registry import Registry
from hub.registry.model import Metric

# Metric type codes, cheaper to branch on than strings in the hot path.
NUMBER, INT, BOOL, STRING, ENUM = range(5)
_TYPE_CODES = {"number": NUMBER, "int": INT, "bool": BOOL, "string": STRING, "enum": ENUM}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    type: int
    labels: dict[int, str] | None = None
    codes: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: int
    site: str
    device: str
    kind: str
    strict: bool
    offline_after_s: float
    metrics: dict[str, MetricSpec]


def metric_spec(metric: Metric) -> MetricSpec:
    labels = dict(metric.values) if metric.values else None
    codes = {v: k for k, v in labels.items()} if labels else None
    return MetricSpec(_TYPE_CODES[metric.type], labels, codes)


class DeviceCatalog:
    """Lookup by (site, device) for the ingest path; rebuilt whenever the registry reloads."""

    def __init__(self, registry: Registry, ids: dict[tuple[str, str], int]) -> None:
        self.by_key: dict[tuple[str, str], DeviceInfo] = {}
        self.by_id: dict[int, DeviceInfo] = {}
        for key, ref in registry.devices.items():
            device_id = ids.get(key)
            if device_id is None:
                continue
            info = DeviceInfo(
                id=device_id,
                site=ref.site.id,
                device=ref.device.id,
                kind=ref.model.kind,
                strict=ref.model.strict_metrics,
                offline_after_s=ref.model.offline_after,
                metrics={m.name: metric_spec(m) for m in ref.model.metrics},
            )
            self.by_key[key] = info
            self.by_id[device_id] = info

    def get(self, site: str, device: str) -> DeviceInfo | None:
        return self.by_key.get((site, device))

    def __len__(self) -> int:
        return len(self.by_key)
