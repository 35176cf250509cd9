"""Errors the API maps to 4xx: not found → 404, refused transition → 409, bad input → 422."""

from __future__ import annotations

from hub.errors import HubError


class WorkOrderError(HubError):
    """Base of work-order errors; the message is meant for the person who asked."""


class NotFound(WorkOrderError):
    """No such work order, staff member or leave record."""


class InvalidTransition(WorkOrderError):
    """The state machine does not allow this step from the order's current state."""


class ClosureRefused(InvalidTransition):
    """An alarm order cannot resolve while its alarm is still active (no override given)."""


class BadInput(WorkOrderError):
    """A value is outside what the model accepts (rating 1–5, unknown kind, …)."""
