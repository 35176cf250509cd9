"""Dispatch policy: which alarms open work orders, with what skill, priority, SLA and escalation.

A YAML file validated by pydantic; every problem is reported as file:line: field, like the
registry. `load_policy()` without a path loads the packaged default policy.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from hub.errors import ConfigError
from hub.yamlfile import load_yaml, validation_error

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """`90s`, `30m`, `4h`, `7d`, a number of seconds, or a timedelta; may be negative."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 4h or 7d")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    raise ValueError(f"expected a duration such as 30m, 4h or 7d, got {value!r}")


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Role = Literal["butler", "technician", "contractor", "supervisor"]
Skill = Literal["elevator", "fire", "access", "parking", "general"]
PriorityName = Literal["p1", "p2", "p3", "p4"]
Target = Annotated[str, Field(pattern=r"^(assignee|supervisor|operator|staff:[a-z0-9_-]+)$")]
Id = Annotated[str, Field(pattern=r"^[a-z0-9_-]+$", min_length=1, max_length=64)]


ClockName = Literal["accept", "arrive", "resolve"]


def _all_clocks() -> list[ClockName]:
    return ["accept", "arrive", "resolve"]


def _technician() -> list[Role]:
    return ["technician"]


def _butler() -> list[Role]:
    return ["butler"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sla(_Strict):
    """Time allowed from the start of the clock (alarm raised, order created) to each step."""

    accept: Duration | None = None
    arrive: Duration | None = None
    resolve: Duration | None = None

    @model_validator(mode="after")
    def _positive(self) -> Sla:
        for name in ("accept", "arrive", "resolve"):
            value = getattr(self, name)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{name} must be a positive duration")
        return self

    def merged(self, base: Sla) -> Sla:
        return Sla(accept=self.accept or base.accept, arrive=self.arrive or base.arrive,
                   resolve=self.resolve or base.resolve)


class Step(_Strict):
    """At `at` relative to a clock's due time (negative: before), notify `notify`."""

    at: Duration
    action: Literal["reminder", "escalation"] = "escalation"
    notify: list[Target] = Field(min_length=1)
    clocks: list[ClockName] = Field(default_factory=_all_clocks)


class Match(_Strict):
    """An alarm matches when every given list contains its value (globs allowed in kinds)."""

    kinds: list[str] = Field(default_factory=list)
    rule_ids: list[str] = Field(default_factory=list)
    severities: list[Literal["critical", "major", "minor", "warning"]] = Field(default_factory=list)
    device_kinds: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if not (self.kinds or self.rule_ids or self.severities or self.device_kinds):
            raise ValueError("give at least one of kinds, rule_ids, severities, device_kinds")
        return self

    def matches(self, *, kind: str, rule_id: str, severity: str, device_kind: str | None) -> bool:
        if self.kinds and not any(fnmatchcase(kind, k) for k in self.kinds):
            return False
        if self.rule_ids and not any(fnmatchcase(rule_id, r) for r in self.rule_ids):
            return False
        if self.severities and severity not in self.severities:
            return False
        return not self.device_kinds or (device_kind is not None and any(
            fnmatchcase(device_kind, d) for d in self.device_kinds))


class AlarmRule(_Strict):
    """Alarms that open an order, and how. `hold` waits that long after the alarm was raised
    before opening one, so that a symptom raised before its root cause (a lift's safety circuit
    before the entrapment detected from it) can be grouped under it first and open none."""

    id: Id
    match: Match
    priority: PriorityName = "p2"
    skill: Skill | None = Field(None, description="default: from the device kind")
    assign_to: list[Role] = Field(default_factory=_technician, min_length=1)
    sla: Sla = Sla()
    escalation: list[Step] | None = None
    hold: Duration | None = Field(None, description="open the order only once the alarm is this old and ungrouped")

    @model_validator(mode="after")
    def _positive_hold(self) -> AlarmRule:
        if self.hold is not None and self.hold <= timedelta(0):
            raise ValueError("hold must be a positive duration")
        return self


class RequestRule(_Strict):
    """How resident-raised and manual orders (repair, complaint, praise, alarm) are handled."""

    priority: PriorityName = "p3"
    skill: Skill | None = None
    assign_to: list[Role] = Field(default_factory=_butler, min_length=1)
    sla: Sla = Sla()
    escalation: list[Step] | None = None


class MaintenanceSchedule(_Strict):
    """Planned maintenance: every `every_days` from `anchor`, or monthly on `day_of_month`."""

    id: Id
    title: str
    device_kinds: list[str] = Field(min_length=1)
    every_days: int | None = Field(None, ge=1, le=366)
    day_of_month: int | None = Field(None, ge=1, le=28)
    anchor: date = date(2026, 1, 1)
    lead_days: int = Field(3, ge=0, le=60, description="create orders this many days ahead")
    skill: Skill | None = None
    assign_to: list[Role] = Field(default_factory=_technician, min_length=1)
    priority: PriorityName = "p3"
    sla: Sla = Sla()

    @model_validator(mode="after")
    def _one_rhythm(self) -> MaintenanceSchedule:
        if (self.every_days is None) == (self.day_of_month is None):
            raise ValueError("give exactly one of every_days or day_of_month")
        return self


class Webhook(_Strict):
    url: Annotated[str, Field(pattern=r"^https?://")]
    events: list[str] = Field(default_factory=lambda: ["*"])

    def wants(self, event: str) -> bool:
        return any(fnmatchcase(event, e) for e in self.events)


class Policy(_Strict):
    sla: dict[PriorityName, Sla] = Field(default_factory=dict)
    escalation: list[Step] = Field(default_factory=list)
    alarms: list[AlarmRule] = Field(default_factory=list)
    requests: dict[Literal["alarm", "repair", "complaint", "praise", "maintenance"], RequestRule] = Field(
        default_factory=dict)
    maintenance: list[MaintenanceSchedule] = Field(default_factory=list)
    skills: dict[str, Skill] = Field(default_factory=dict, description="device kind glob → skill")
    webhooks: list[Webhook] = Field(default_factory=list)
    operators: list[Id] = Field(default_factory=list, description="E-control staff; default: role operator")
    attendance_valid: Duration = Field(timedelta(hours=16), description="a check-in counts this long")

    @model_validator(mode="after")
    def _unique_ids(self) -> Policy:
        for name, items in (("alarms", self.alarms), ("maintenance", self.maintenance)):
            ids = [item.id for item in items]
            dup = {i for i in ids if ids.count(i) > 1}
            if dup:
                raise ValueError(f"duplicate {name} id(s): {', '.join(sorted(dup))}")
        return self

    def sla_for(self, priority: str, own: Sla) -> Sla:
        return own.merged(self.sla.get(priority, Sla()))  # type: ignore[call-overload]

    def match_alarm(self, *, kind: str, rule_id: str, severity: str, device_kind: str | None) -> AlarmRule | None:
        """The first rule that matches, in file order."""
        for rule in self.alarms:
            if rule.match.matches(kind=kind, rule_id=rule_id, severity=severity, device_kind=device_kind):
                return rule
        return None

    def skill_for(self, device_kind: str | None) -> str | None:
        if device_kind is None:
            return None
        for pattern, skill in self.skills.items():
            if fnmatchcase(device_kind, pattern):
                return skill
        return None

    def request(self, kind: str) -> RequestRule:
        return self.requests.get(kind, RequestRule())  # type: ignore[call-overload]

    def steps(self, own: list[Step] | None) -> list[Step]:
        return list(own) if own is not None else list(self.escalation)


def load_policy(path: Path | str | None = None) -> Policy:
    """Parse and validate a policy file; `ConfigError` names file, line and field."""
    file = Path(path) if path is not None else DEFAULT_POLICY
    source = load_yaml(file)
    data = source.data if source.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: expected a mapping with sla/escalation/alarms/requests/maintenance")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source) from exc


_active: Policy | None = None


def set_active_policy(policy: Policy | None) -> None:
    """Set by the dispatch component so API calls in the same process use the running policy."""
    global _active
    _active = policy


def active_policy() -> Policy:
    """The running policy, or the packaged default when no dispatch component runs here."""
    global _active
    if _active is None:
        _active = load_policy()
    return _active
