"""Notifications as outbox rows, written in the same transaction as the change they announce.

Delivery (`hub.dispatch.delivery`) picks pending rows after commit and retries with backoff
until the broker acknowledges (QoS 1 PUBACK) or the webhook answers 2xx.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from hub.dispatch.policy import Policy
from hub.workorders.model import WorkOrder


def staff_topic(site_id: str, staff_id: str) -> str:
    """The contract's staff topic."""
    return f"facility/{site_id}/staff/{staff_id}/notify"


def order_summary(order: WorkOrder) -> dict[str, Any]:
    def iso(v: Any) -> Any:
        return v.isoformat() if v is not None else None

    return {
        "id": order.id, "site": order.site_id, "kind": order.kind, "priority": order.priority,
        "state": order.state, "title": order.title, "alarm_id": order.alarm_id,
        "device_id": order.device_id, "building": order.building_id, "grid": order.grid_id,
        "location": order.location, "assignee": order.assignee, "reason": order.assigned_reason,
        "due": {"accept": iso(order.accept_due), "arrive": iso(order.arrive_due),
                "resolve": iso(order.resolve_due)},
        "due_date": iso(order.due_date),
    }


def backoff(attempts: int, *, base_s: float = 1.0, max_s: float = 300.0) -> timedelta:
    """1 s, 2 s, 4 s … capped at `max_s`: the wait after the n-th failed attempt."""
    return timedelta(seconds=min(max_s, base_s * (2 ** max(0, attempts - 1))))


def enqueue(conn: psycopg.Connection, order: WorkOrder, event: str, staff_ids: Iterable[str], *,
            policy: Policy, message: str | None = None, extra: dict[str, Any] | None = None) -> list[int]:
    """One MQTT row per person and one row per webhook that wants `event`; returns their ids."""
    staff = sorted({s for s in staff_ids if s})
    payload: dict[str, Any] = {"type": "work_order", "event": event, "message": message,
                               "order": order_summary(order), "to": staff}
    if extra:
        payload.update(extra)
    ids: list[int] = []
    with conn.cursor() as cur:
        for staff_id in staff:
            cur.execute(
                """INSERT INTO notifications (order_id, event, channel, target, staff_id, payload)
                   VALUES (%s, %s, 'mqtt', %s, %s, %s) RETURNING id""",
                (order.id, event, staff_topic(order.site_id, staff_id), staff_id, Jsonb(payload)))
            ids.append(int(cur.fetchone()[0]))  # type: ignore[index]
        for hook in policy.webhooks:
            if hook.wants(event):
                cur.execute(
                    """INSERT INTO notifications (order_id, event, channel, target, payload)
                       VALUES (%s, %s, 'webhook', %s, %s) RETURNING id""",
                    (order.id, event, hook.url, Jsonb(payload)))
                ids.append(int(cur.fetchone()[0]))  # type: ignore[index]
    return ids
