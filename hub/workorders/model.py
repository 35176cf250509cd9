"""The work-order state machine and record types; pure, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, get_args

from hub.workorders.errors import BadInput, InvalidTransition

Kind = Literal["alarm", "repair", "complaint", "praise", "maintenance"]
Priority = Literal["p1", "p2", "p3", "p4"]
State = Literal[
    "created", "assigned", "accepted", "on_site", "resolved", "verified", "closed", "cancelled",
    "reopened",
]
ClockName = Literal["accept", "arrive", "resolve"]

KINDS: tuple[str, ...] = get_args(Kind)
PRIORITIES: tuple[str, ...] = get_args(Priority)
STATES: tuple[str, ...] = get_args(State)
RESIDENT_KINDS = frozenset({"repair", "complaint", "praise"})
# Work remains to be done in these states (the backlog); SLA clocks run only here.
OPEN_STATES = frozenset({"created", "assigned", "accepted", "on_site", "reopened"})
FINAL_STATES = frozenset({"closed", "cancelled"})

# from-state → allowed to-states. `assigned → assigned` is a reassignment.
TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"assigned", "cancelled"}),
    "assigned": frozenset({"assigned", "accepted", "cancelled"}),
    "accepted": frozenset({"assigned", "on_site", "cancelled"}),
    "on_site": frozenset({"assigned", "resolved", "cancelled"}),
    "resolved": frozenset({"verified", "closed", "reopened"}),
    "verified": frozenset({"closed", "reopened"}),
    "closed": frozenset({"reopened"}),
    "cancelled": frozenset(),
    "reopened": frozenset({"assigned", "cancelled"}),
}
# Praise (表扬) is feedback, not work: it may be closed straight away once read.
PRAISE_SHORTCUT = frozenset({("created", "closed"), ("assigned", "closed")})

# Which timestamp column each target state sets.
STAMP_COLUMN: dict[str, str] = {
    "assigned": "assigned_at",
    "accepted": "accepted_at",
    "on_site": "on_site_at",
    "resolved": "resolved_at",
    "verified": "verified_at",
    "closed": "closed_at",
    "cancelled": "cancelled_at",
}


def check_transition(kind: str, from_state: str, to_state: str) -> None:
    """Raise `InvalidTransition` unless the step is allowed for this kind of order."""
    if to_state not in STATES:
        raise BadInput(f"unknown state {to_state!r}; one of {', '.join(STATES)}")
    if kind == "praise" and (from_state, to_state) in PRAISE_SHORTCUT:
        return
    if to_state not in TRANSITIONS.get(from_state, frozenset()):
        allowed = ", ".join(sorted(TRANSITIONS.get(from_state, ()))) or "nothing (final)"
        raise InvalidTransition(f"cannot go from {from_state} to {to_state}; allowed: {allowed}")


@dataclass(frozen=True, kw_only=True)
class WorkOrder:
    """One row of `work_orders`, as the API shows it."""

    id: int
    site_id: str
    kind: str
    priority: str
    state: str
    title: str
    description: str | None
    alarm_id: int | None
    policy_rule: str | None
    skill: str | None
    device_id: int | None
    building_id: str | None
    grid_id: str | None
    location: str | None
    reporter: str | None
    assignee: str | None
    assigned_reason: str | None
    sla_start: datetime
    accept_due: datetime | None
    arrive_due: datetime | None
    resolve_due: datetime | None
    due_date: date | None
    escalation_level: int
    reopen_count: int
    created_at: datetime
    assigned_at: datetime | None
    accepted_at: datetime | None
    on_site_at: datetime | None
    resolved_at: datetime | None
    verified_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    override_reason: str | None
    rating: int | None
    rating_comment: str | None

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.__dataclass_fields__)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> WorkOrder:
        return cls(**dict(zip(cls.columns(), row, strict=True)))

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.columns():
            value = getattr(self, name)
            out[name] = value.isoformat() if isinstance(value, datetime | date) else value
        return out


@dataclass(frozen=True, kw_only=True)
class Transition:
    order_id: int
    at: datetime
    from_state: str | None
    to_state: str
    actor: str
    origin: str
    assignee: str | None
    note: str | None
    override_reason: str | None
