"""Change-of-state events derived from polled values (pure).

Polling sees states, rules and operators want transitions. Per register (`events` in the
register map):

- not set: flags (coils, discrete inputs, `type: bool`, `bit` fields) give ``<metric>.on`` /
  ``<metric>.off`` when they change; numbers give nothing.
- ``events: false``: nothing.
- ``events: true``: any change gives ``<metric>.<label>`` (enum label, ``on``/``off`` for flags,
  otherwise the integer value).
- ``events: {value: code, ...}``: a change *to* a listed raw value gives that code, e.g. a
  lift fault-code register ``{1: "01", 11: "11", 0: "40"}`` (GB/T 24476 codes).

The first good read after start has no "before": it only reports an active state (a flag that
is on, or a listed value other than 0), so a fault present at start-up is not missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hub.registry.model import Register

from .codec import NoData, Value, is_bool


@dataclass(frozen=True, slots=True)
class StateEvent:
    code: str
    data: dict[str, Any]


def _mapping(register: Register) -> dict[int, str] | bool | None:
    return register.events


def emits_events(register: Register) -> bool:
    mapping = _mapping(register)
    if mapping is None:
        return is_bool(register)
    return bool(mapping)


def state_event(register: Register, labels: dict[int, str] | None, previous: Value | None,
                current: Value) -> StateEvent | None:
    """The event for a change from `previous` (None: first read) to `current`, if any."""
    if isinstance(current, NoData) or isinstance(previous, NoData):
        return None
    if previous is not None and previous == current:
        return None
    mapping = _mapping(register)
    if mapping is False or (mapping is None and not is_bool(register)):
        return None
    metric = register.metric
    data: dict[str, Any] = {"metric": metric, "value": _jsonable(current), "source": "modbus"}
    if previous is not None:
        data["previous"] = _jsonable(previous)
    if isinstance(mapping, dict):
        if isinstance(current, bool) or float(current).is_integer():
            key = int(current)
        else:
            return None
        code = mapping.get(key)
        if code is None or (previous is None and key == 0):
            return None
        return StateEvent(code, data)
    if isinstance(current, bool):
        if previous is None and not current:
            return None
        return StateEvent(f"{metric}.{'on' if current else 'off'}", data)
    if previous is None:
        return None  # `events: true` on a number: transitions only
    number = float(current)
    label = labels.get(int(number)) if labels and number.is_integer() else None
    suffix = label if label is not None else (str(int(number)) if number.is_integer() else None)
    if suffix is None:
        return None
    return StateEvent(f"{metric}.{suffix}", data)


def _jsonable(value: Value) -> float | bool | int:
    if isinstance(value, bool):
        return value
    assert not isinstance(value, NoData)
    number = float(value)
    return int(number) if number.is_integer() else number
