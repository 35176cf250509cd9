"""Alarm lifecycle over a psycopg connection: what the rule engine and the API call.

States (0100_alarms.sql): active → acknowledged → cleared; active → cleared_unack (the
condition recovered before anyone acknowledged) → cleared on acknowledge; shelved (hidden until
`shelved_until`). An alarm is open until `closed_at` is set; the database allows one open alarm
per (rule_id, scope_key), so raising is INSERT … ON CONFLICT DO NOTHING and two evaluators can
never duplicate one. Every step writes `alarm_history`; operator steps also write `audit_log`.
Each function runs in its own transaction (a savepoint when the caller already has one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.errors import HubError

OPEN_STATES = frozenset({"active", "acknowledged", "cleared_unack", "shelved"})

# SQL: is alarm `a` an incident of its own, for people looking at alarms? `p` is its parent
# (`LEFT JOIN alarms p ON p.id = a.parent_id`). Yes when it has no parent; an open alarm also when
# its parent has closed (else it would be on no list) or has cleared while it is still up (dispatch
# gives that one an order of its own). A closed child stays with its incident in history. The
# dashboards' active-alarm panels spell out this text (dashboards/queries.py, docs/dashboards.md);
# `GET /alarms?top_level=true` uses it.
OWN_INCIDENT = ("(a.parent_id IS NULL OR (a.closed_at IS NULL AND "
                "(p.closed_at IS NOT NULL OR (p.cleared_at IS NOT NULL AND a.cleared_at IS NULL))))")


class AlarmError(HubError):
    """An alarm action that cannot be done; the API answers 4xx with the message."""


class AlarmNotFound(AlarmError):
    pass


class InvalidTransition(AlarmError):
    pass


def _history(conn: psycopg.Connection, alarm_id: int, from_state: str | None, to_state: str, actor: str,
             action: str, note: str | None = None, at: datetime | None = None) -> None:
    conn.execute(
        "INSERT INTO alarm_history (alarm_id, at, from_state, to_state, actor, action, note)"
        " VALUES (%s, coalesce(%s, now()), %s, %s, %s, %s, %s)",
        (alarm_id, at, from_state, to_state, actor, action, note),
    )


def _audit(conn: psycopg.Connection, actor: str, action: str, alarm_id: int, before: dict[str, Any] | None,
           after: dict[str, Any] | None, origin: str = "api") -> None:
    conn.execute(
        "INSERT INTO audit_log (actor, origin, action, target, before, after) VALUES (%s, %s, %s, %s, %s, %s)",
        (actor, origin, f"alarm.{action}", f"alarm:{alarm_id}", Jsonb(before), Jsonb(after)),
    )


def _locked(conn: psycopg.Connection, alarm_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, rule_id, scope_key, state, acknowledged_at, cleared_at, closed_at, shelved_until, assignee"
            " FROM alarms WHERE id = %s FOR UPDATE", (alarm_id,)).fetchone()
    if row is None:
        raise AlarmNotFound(f"alarm {alarm_id} not found")
    return row


def get_alarm(conn: psycopg.Connection, alarm_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM alarms WHERE id = %s", (alarm_id,)).fetchone()
    if row is None:
        raise AlarmNotFound(f"alarm {alarm_id} not found")
    return row


# -- engine side -----------------------------------------------------------------------------------
def raise_alarm(conn: psycopg.Connection, *, rule_id: str, scope_key: str, site_id: str, device_id: int | None,
                kind: str, severity: str, title: str, raised_at: datetime, detail: dict[str, Any] | None = None,
                parent_id: int | None = None, actor: str = "rules") -> tuple[int, bool]:
    """Open an alarm, or return the one already open for (rule, scope); True if it is new.

    A cleared-unacknowledged alarm whose condition returns becomes active again (same row), so a
    condition that comes and goes before anyone looks is one alarm, not many.
    """
    with conn.transaction():
        row = conn.execute(
            """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, detail,
                                   raised_at, parent_id)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (rule_id, scope_key) WHERE closed_at IS NULL DO NOTHING
               RETURNING id""",
            (rule_id, site_id, device_id, scope_key, kind, severity, title, Jsonb(detail or {}), raised_at, parent_id),
        ).fetchone()
        if row is not None:
            _history(conn, row[0], None, "active", actor, "raise", title, raised_at)
            if parent_id is not None:
                _history(conn, row[0], "active", "active", actor, "link", f"raised under alarm {parent_id}", raised_at)
            return int(row[0]), True
        existing = conn.execute(
            "SELECT id, state FROM alarms WHERE rule_id = %s AND scope_key = %s AND closed_at IS NULL FOR UPDATE",
            (rule_id, scope_key)).fetchone()
        if existing is None:  # closed between our insert and select: try once more
            return raise_alarm(conn, rule_id=rule_id, scope_key=scope_key, site_id=site_id, device_id=device_id,
                               kind=kind, severity=severity, title=title, raised_at=raised_at, detail=detail,
                               parent_id=parent_id, actor=actor)
        alarm_id, state = int(existing[0]), existing[1]
        if state == "cleared_unack":
            conn.execute("UPDATE alarms SET state = 'active', cleared_at = NULL, updated_at = now() WHERE id = %s", (alarm_id,))
            _history(conn, alarm_id, state, "active", actor, "reactivate", "condition returned", raised_at)
        elif state == "shelved":
            conn.execute("UPDATE alarms SET cleared_at = NULL, updated_at = now() WHERE id = %s", (alarm_id,))
        return alarm_id, False


def condition_cleared(conn: psycopg.Connection, *, rule_id: str, scope_key: str, at: datetime,
                      actor: str = "rules", note: str | None = None) -> int | None:
    """The condition recovered: active → cleared_unack; acknowledged or shelved → cleared (closed)."""
    with conn.transaction():
        row = conn.execute(
            "SELECT id, state FROM alarms WHERE rule_id = %s AND scope_key = %s AND closed_at IS NULL FOR UPDATE",
            (rule_id, scope_key)).fetchone()
        if row is None:
            return None
        alarm_id, state = int(row[0]), row[1]
        if state == "active":
            conn.execute("UPDATE alarms SET state = 'cleared_unack', cleared_at = %s, updated_at = now() WHERE id = %s",
                         (at, alarm_id))
            _history(conn, alarm_id, state, "cleared_unack", actor, "clear", note, at)
        elif state in ("acknowledged", "shelved"):
            conn.execute("UPDATE alarms SET state = 'cleared', cleared_at = %s, closed_at = %s, updated_at = now()"
                         " WHERE id = %s", (at, at, alarm_id))
            _history(conn, alarm_id, state, "cleared", actor, "clear", note, at)
        return alarm_id


def annotate(conn: psycopg.Connection, *, rule_id: str, scope_key: str, patch: dict[str, Any], actor: str = "rules") -> int | None:
    """Merge `patch` into the open alarm's detail (e.g. flapping, the devices of a group)."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE alarms SET detail = detail || %s, updated_at = now()"
            " WHERE rule_id = %s AND scope_key = %s AND closed_at IS NULL RETURNING id, state",
            (Jsonb(patch), rule_id, scope_key)).fetchone()
        if row is None:
            return None
        _history(conn, int(row[0]), row[1], row[1], actor, "annotate", ", ".join(sorted(patch)))
        return int(row[0])


def link_parent(conn: psycopg.Connection, *, rule_id: str, scope_key: str, parent_rule: str, parent_scope: str,
                actor: str = "rules") -> int | None:
    """Put an open alarm under its root-cause parent (e.g. one device offline under a building)."""
    with conn.transaction():
        row = conn.execute(
            """UPDATE alarms c SET parent_id = p.id, updated_at = now()
                 FROM alarms p
                WHERE c.rule_id = %s AND c.scope_key = %s AND c.closed_at IS NULL
                  AND p.rule_id = %s AND p.scope_key = %s AND p.closed_at IS NULL AND c.id <> p.id
            RETURNING c.id, c.state, p.id""",
            (rule_id, scope_key, parent_rule, parent_scope)).fetchone()
        if row is None:
            return None
        _history(conn, int(row[0]), row[1], row[1], actor, "link", f"grouped under alarm {row[2]}")
        return int(row[0])


def _device_scope(scope_key: str) -> str:
    """`site/device` of a device alarm's scope (`site/device` or `site/device#code`)."""
    return scope_key.split("#", 1)[0]


def find_root(conn: psycopg.Connection, *, device_id: int, scope_key: str, raised_at: datetime,
              roots: list[tuple[str, float]]) -> int | None:
    """The open alarm on the same device that is the root cause of a symptom raised at `raised_at`.

    `roots` are (rule id, window s) of the rules naming the symptom's kind in `root_cause_of`.
    The root must still be up (its condition present: a cleared root explains nothing new) and
    raised no later than `window` after the symptom (one written out of time order still finds
    it). Read from the database, so it holds across restarts and reloads.
    """
    if not roots:
        return None
    device = _device_scope(scope_key)
    row = conn.execute(
        """SELECT p.id FROM alarms p
             JOIN unnest(%s::text[], %s::float8[]) AS r (rule_id, window_s) ON r.rule_id = p.rule_id
            WHERE p.device_id = %s AND p.closed_at IS NULL AND p.cleared_at IS NULL
              AND (p.scope_key = %s OR starts_with(p.scope_key, %s))
              AND p.raised_at <= %s + make_interval(secs => r.window_s)
            ORDER BY p.raised_at, p.id LIMIT 1""",
        ([r for r, _ in roots], [w for _, w in roots], device_id, device, device + "#", raised_at)).fetchone()
    return int(row[0]) if row else None


def adopt_symptoms(conn: psycopg.Connection, *, root_id: int, device_id: int, scope_key: str, kinds: list[str],
                   since: datetime, actor: str = "rules") -> list[int]:
    """A root cause was raised: its device's open, parentless alarms of `kinds` raised since
    `since` (the root's time less its window) become its children; returns their ids."""
    device = _device_scope(scope_key)
    with conn.transaction():
        rows = conn.execute(
            """UPDATE alarms c SET parent_id = %s, updated_at = now()
                WHERE c.device_id = %s AND c.closed_at IS NULL AND c.parent_id IS NULL AND c.id <> %s
                  AND c.kind = ANY(%s) AND (c.scope_key = %s OR starts_with(c.scope_key, %s))
                  AND c.raised_at >= %s
            RETURNING c.id, c.state""",
            (root_id, device_id, root_id, kinds, device, device + "#", since)).fetchall()
        for child, state in rows:
            _history(conn, int(child), state, state, actor, "link", f"grouped under alarm {root_id} (root cause)")
        return sorted(int(r[0]) for r in rows)


# -- operator side (the API calls these) ------------------------------------------------------------
def _acknowledge_locked(conn: psycopg.Connection, a: dict[str, Any], actor: str, note: str | None, origin: str) -> str:
    alarm_id, state = a["id"], a["state"]
    if state == "active":
        new = "acknowledged"
        conn.execute("UPDATE alarms SET state = %s, acknowledged_at = now(), acknowledged_by = %s, updated_at = now()"
                     " WHERE id = %s", (new, actor, alarm_id))
    elif state == "cleared_unack":
        new = "cleared"
        conn.execute("UPDATE alarms SET state = %s, acknowledged_at = now(), acknowledged_by = %s, closed_at = now(),"
                     " updated_at = now() WHERE id = %s", (new, actor, alarm_id))
    else:
        raise InvalidTransition(f"alarm {alarm_id} is {state}; only active or cleared_unack alarms can be acknowledged")
    _history(conn, alarm_id, state, new, actor, "acknowledge", note)
    _audit(conn, actor, "acknowledge", alarm_id, {"state": state}, {"state": new, "note": note}, origin)
    return new


def acknowledge(conn: psycopg.Connection, alarm_id: int, actor: str, note: str | None = None, *, origin: str = "api") -> str:
    """Acknowledge an alarm and, when it is an incident's root, the symptoms grouped under it:
    operators see incidents (OWN_INCIDENT), so an acknowledged incident must not leave its
    children active and unacknowledged out of sight. A child that is an incident of its own
    (still up after its root cleared) is not touched. Each child gets its own history and audit
    row naming the root."""
    with conn.transaction():
        a = _locked(conn, alarm_id)
        new = _acknowledge_locked(conn, a, actor, note, origin)
        with conn.cursor(row_factory=dict_row) as cur:
            children = cur.execute(
                "SELECT id, state FROM alarms WHERE parent_id = %s AND state IN ('active', 'cleared_unack')"
                " AND (%s::timestamptz IS NULL OR cleared_at IS NOT NULL) ORDER BY id FOR UPDATE",
                (alarm_id, a["cleared_at"])).fetchall()
        child_note = f"with incident {alarm_id}" + (f": {note}" if note else "")
        for child in children:
            _acknowledge_locked(conn, child, actor, child_note, origin)
        return new


def shelve(conn: psycopg.Connection, alarm_id: int, actor: str, until: datetime, note: str | None = None, *, origin: str = "api") -> str:
    """Hide an open alarm until `until` (it returns to its state then; a recovery closes it)."""
    if until.tzinfo is None:
        raise AlarmError("shelve until: give a time with a UTC offset")
    with conn.transaction():
        a = _locked(conn, alarm_id)
        state = a["state"]
        if state not in ("active", "acknowledged", "cleared_unack", "shelved"):
            raise InvalidTransition(f"alarm {alarm_id} is {state}; it cannot be shelved")
        if until <= datetime.now(UTC):
            raise AlarmError("shelve until: must be in the future")
        conn.execute("UPDATE alarms SET state = 'shelved', shelved_until = %s, updated_at = now() WHERE id = %s",
                     (until, alarm_id))
        _history(conn, alarm_id, state, "shelved", actor, "shelve", note or f"until {until.isoformat()}")
        _audit(conn, actor, "shelve", alarm_id, {"state": state}, {"state": "shelved", "until": until.isoformat(), "note": note}, origin)
        return "shelved"


def _unshelved_state(a: dict[str, Any]) -> str:
    if a["cleared_at"] is not None:
        return "cleared_unack" if a["acknowledged_at"] is None else "cleared"
    return "acknowledged" if a["acknowledged_at"] is not None else "active"


def unshelve(conn: psycopg.Connection, alarm_id: int, actor: str, note: str | None = None, *, origin: str = "api") -> str:
    with conn.transaction():
        a = _locked(conn, alarm_id)
        if a["state"] != "shelved":
            raise InvalidTransition(f"alarm {alarm_id} is {a['state']}, not shelved")
        new = _unshelved_state(a)
        conn.execute("UPDATE alarms SET state = %s, shelved_until = NULL, updated_at = now(),"
                     " closed_at = CASE WHEN %s = 'cleared' THEN now() END WHERE id = %s", (new, new, alarm_id))
        _history(conn, alarm_id, "shelved", new, actor, "unshelve", note)
        _audit(conn, actor, "unshelve", alarm_id, {"state": "shelved"}, {"state": new, "note": note}, origin)
        return new


def expire_shelves(conn: psycopg.Connection, now: datetime | None = None) -> list[int]:
    """Shelved alarms whose time is up come back (run periodically by the rules component)."""
    with conn.transaction():
        ids = [r[0] for r in conn.execute(
            "SELECT id FROM alarms WHERE state = 'shelved' AND shelved_until <= coalesce(%s, now())"
            " ORDER BY id FOR UPDATE SKIP LOCKED", (now,)).fetchall()]
        for alarm_id in ids:
            a = _locked(conn, alarm_id)
            new = _unshelved_state(a)
            conn.execute("UPDATE alarms SET state = %s, shelved_until = NULL, updated_at = now(),"
                         " closed_at = CASE WHEN %s = 'cleared' THEN now() END WHERE id = %s", (new, new, alarm_id))
            _history(conn, alarm_id, "shelved", new, "rules", "unshelve", "shelving expired")
        return ids


def comment(conn: psycopg.Connection, alarm_id: int, actor: str, text: str, *, origin: str = "api") -> None:
    if not text.strip():
        raise AlarmError("comment: text is empty")
    with conn.transaction():
        a = _locked(conn, alarm_id)
        if a["closed_at"] is not None:
            raise InvalidTransition(f"alarm {alarm_id} is closed; it cannot take comments")
        _history(conn, alarm_id, a["state"], a["state"], actor, "comment", text)
        _audit(conn, actor, "comment", alarm_id, None, {"text": text}, origin)


def assign(conn: psycopg.Connection, alarm_id: int, actor: str, assignee: str | None, note: str | None = None, *, origin: str = "api") -> None:
    with conn.transaction():
        a = _locked(conn, alarm_id)
        if a["closed_at"] is not None:
            raise InvalidTransition(f"alarm {alarm_id} is closed; it cannot be assigned")
        conn.execute("UPDATE alarms SET assignee = %s, updated_at = now() WHERE id = %s", (assignee, alarm_id))
        _history(conn, alarm_id, a["state"], a["state"], actor, "assign", note or f"assigned to {assignee}")
        _audit(conn, actor, "assign", alarm_id, {"assignee": a["assignee"]}, {"assignee": assignee, "note": note}, origin)


def clear(conn: psycopg.Connection, alarm_id: int, actor: str, note: str | None = None, *, origin: str = "api") -> str:
    """An operator closes an alarm for good (e.g. a false alarm). The engine raises a new one if
    the condition is still present at its next change."""
    with conn.transaction():
        a = _locked(conn, alarm_id)
        if a["closed_at"] is not None:
            raise InvalidTransition(f"alarm {alarm_id} is already {a['state']}")
        conn.execute("UPDATE alarms SET state = 'cleared', closed_at = now(), cleared_at = coalesce(cleared_at, now()),"
                     " acknowledged_at = coalesce(acknowledged_at, now()), acknowledged_by = coalesce(acknowledged_by, %s),"
                     " updated_at = now() WHERE id = %s", (actor, alarm_id))
        _history(conn, alarm_id, a["state"], "cleared", actor, "close", note)
        _audit(conn, actor, "clear", alarm_id, {"state": a["state"]}, {"state": "cleared", "note": note}, origin)
        return "cleared"


def start_maintenance(conn: psycopg.Connection, device_id: int, actor: str, *, until: datetime | None = None,
                      reason: str | None = None) -> int:
    """Put a device in maintenance (no new alarms) until `until` or `end_maintenance`."""
    with conn.transaction():
        row = conn.execute("INSERT INTO device_maintenance (device_id, ends_at, reason, actor) VALUES (%s, %s, %s, %s)"
                           " RETURNING id", (device_id, until, reason, actor)).fetchone()
        assert row is not None
        conn.execute("INSERT INTO audit_log (actor, origin, action, target, after) VALUES (%s, 'api', 'device.maintenance',"
                     " %s, %s)", (actor, f"device:{device_id}", Jsonb({"until": until.isoformat() if until else None, "reason": reason})))
        return int(row[0])


def end_maintenance(conn: psycopg.Connection, device_id: int, actor: str) -> int:
    with conn.transaction():
        n = conn.execute("UPDATE device_maintenance SET ends_at = now() WHERE device_id = %s"
                         " AND (ends_at IS NULL OR ends_at > now()) AND starts_at < now()", (device_id,)).rowcount
        conn.execute("INSERT INTO audit_log (actor, origin, action, target) VALUES (%s, 'api', 'device.maintenance_end', %s)",
                     (actor, f"device:{device_id}"))
        return n


def devices_in_maintenance(conn: psycopg.Connection) -> set[int]:
    rows = conn.execute("SELECT DISTINCT device_id FROM device_maintenance WHERE starts_at <= now()"
                        " AND (ends_at IS NULL OR ends_at > now())").fetchall()
    return {int(r[0]) for r in rows}
