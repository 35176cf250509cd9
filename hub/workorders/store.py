"""Row-level access to work orders: read, lock, insert, record transitions and audit entries.

Used by `hub.workorders.service` and `hub.dispatch`; every statement has bound parameters.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from hub.workorders.errors import NotFound
from hub.workorders.model import Transition, WorkOrder

_COLUMNS = sql.SQL(", ").join(map(sql.Identifier, WorkOrder.columns()))


def fetch_order(conn: psycopg.Connection, order_id: int, *, lock: bool = False) -> WorkOrder:
    query = sql.SQL("SELECT {} FROM work_orders WHERE id = %s").format(_COLUMNS)
    if lock:
        query = query + sql.SQL(" FOR UPDATE")
    row = conn.execute(query, (order_id,)).fetchone()
    if row is None:
        raise NotFound(f"work order {order_id} not found")
    return WorkOrder.from_row(row)


def fetch_orders(conn: psycopg.Connection, where: sql.Composable, params: tuple[Any, ...] | dict[str, Any]) -> list[WorkOrder]:
    query = sql.SQL("SELECT {} FROM work_orders WHERE {} ORDER BY id").format(_COLUMNS, where)
    return [WorkOrder.from_row(r) for r in conn.execute(query, params).fetchall()]


def insert_order(conn: psycopg.Connection, values: dict[str, Any], *, on_conflict_nothing: bool = False) -> int | None:
    """INSERT one order; with `on_conflict_nothing` a duplicate (same alarm, same due day) → None."""
    cols = list(values)
    query = sql.SQL("INSERT INTO work_orders ({}) VALUES ({})").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols)))
    if on_conflict_nothing:
        query = query + sql.SQL(" ON CONFLICT DO NOTHING")
    row = conn.execute(query + sql.SQL(" RETURNING id"),
                       [Jsonb(v) if isinstance(v, dict | list) else v for v in values.values()]).fetchone()
    return None if row is None else int(row[0])


def update_order(conn: psycopg.Connection, order_id: int, changes: dict[str, Any]) -> None:
    sets = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in changes)
    conn.execute(sql.SQL("UPDATE work_orders SET {}, updated_at = now() WHERE id = %s").format(sets),
                 [*(Jsonb(v) if isinstance(v, dict | list) else v for v in changes.values()), order_id])


def record_transition(conn: psycopg.Connection, t: Transition) -> None:
    conn.execute(
        """INSERT INTO work_order_transitions (order_id, at, from_state, to_state, actor, origin,
                                              assignee, note, override_reason)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (t.order_id, t.at, t.from_state, t.to_state, t.actor, t.origin, t.assignee, t.note,
         t.override_reason),
    )


def transitions_of(conn: psycopg.Connection, order_id: int) -> list[Transition]:
    rows = conn.execute(
        """SELECT order_id, at, from_state, to_state, actor, origin, assignee, note, override_reason
             FROM work_order_transitions WHERE order_id = %s ORDER BY at, id""", (order_id,)).fetchall()
    return [Transition(order_id=r[0], at=r[1], from_state=r[2], to_state=r[3], actor=r[4], origin=r[5],
                       assignee=r[6], note=r[7], override_reason=r[8]) for r in rows]


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str)) if value is not None else None


def audit(conn: psycopg.Connection, *, actor: str, origin: str, action: str, target: str,
          before: Any = None, after: Any = None, at: datetime | None = None) -> None:
    """One append-only audit entry; `at` defaults to the database's clock."""
    conn.execute(
        """INSERT INTO audit_log (at, actor, origin, action, target, before, after)
           VALUES (coalesce(%s, now()), %s, %s, %s, %s, %s, %s)""",
        (at, actor, origin, action, target, Jsonb(_plain(before)) if before is not None else None,
         Jsonb(_plain(after)) if after is not None else None),
    )
