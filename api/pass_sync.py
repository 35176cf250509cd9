"""Visitor passes on the gates: pushed as commands, used as gate events (docs/api.md).

The API owns the pass; each gate of its gate set holds a copy so it decides offline. Creating a
pass queues `add_visitor_pass` for each gate, revoking it queues `revoke_visitor_pass`, both
through the normal command path (commands table, dispatcher, retries until the device replies,
audited). A gate reports every decision as a `granted`/`denied` event with
`data.method = "visitor_pass"` and `data.pass_id`; the ingest sink below counts each grant once
(redelivered events are ignored) and, when the pass is used up, revokes it on every gate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch
from hub.ingest.writer import TransactionSink

ADD, REVOKE = "add_visitor_pass", "revoke_visitor_pass"
MAX_BIGINT = 2**63 - 1

# One command per gate of the pass's set (only real gates of the pass's site), each audited.
# The idempotency key makes a push happen once per (pass, command, gate, requester).
PUSH_SQL = """
WITH new AS (
    INSERT INTO commands (id, device_id, site_id, name, args, state, requested_by, origin, idempotency_key,
                          request_hash, dangerous, expires_at, complete_within_s)
    SELECT substr(replace(gen_random_uuid()::text, '-', ''), 1, 16), d.id, d.site_id, %(name)s, %(args)s, 'queued',
           %(actor)s, %(origin)s, 'visitor_pass:' || %(pass_id)s::text || ':' || %(name)s || ':' || d.device_id,
           %(hash)s, false, %(expires)s, %(complete)s
      FROM devices d
     WHERE d.site_id = %(site)s AND d.device_id = ANY(%(gates)s) AND d.kind = 'gate'
       AND %(expires)s > now()
    ON CONFLICT (requested_by, idempotency_key) DO NOTHING
 RETURNING id, device_id, site_id, name)
INSERT INTO audit_log (actor, origin, action, target, after)
SELECT %(actor)s, %(origin)s, 'command.create', 'command:' || new.id,
       jsonb_build_object('device', new.site_id || '/' || d.device_id, 'name', new.name,
                          'visitor_pass', %(pass_id)s::bigint, 'state', 'queued')
  FROM new JOIN devices d ON d.id = new.device_id
"""

# Pushes of the pass not yet confirmed by the gate are withdrawn when it is revoked, so a resend
# of `add_visitor_pass` can never arrive after the revocation and re-enable the pass.
WITHDRAW_SQL = """
WITH old AS (
    SELECT id, state FROM commands
     WHERE name = 'add_visitor_pass' AND state IN ('queued', 'sent', 'accepted')
       AND idempotency_key LIKE 'visitor\\_pass:' || %(pass_id)s::text || ':%%'
       FOR UPDATE),
changed AS (
    UPDATE commands c SET state = 'failed', finished_at = now(), updated_at = now(),
           detail = 'withdrawn: the visitor pass was revoked before the gate confirmed it'
      FROM old WHERE c.id = old.id
 RETURNING c.id, old.state AS before)
INSERT INTO audit_log (actor, origin, action, target, before, after)
SELECT %(actor)s, %(origin)s, 'command.failed', 'command:' || id, jsonb_build_object('state', before),
       jsonb_build_object('state', 'failed', 'detail', 'withdrawn: visitor pass revoked')
  FROM changed
"""


def push_params(row: Mapping[str, Any], name: str, *, actor: str, origin: str | None, complete_s: float) -> dict[str, Any]:
    """Parameters of PUSH_SQL for one pass row (pure). The push lives as long as the pass."""
    args: dict[str, Any] = {"code": row["code"], "pass_id": row["id"]}
    if name == ADD:
        args |= {"valid_from": _iso(row["valid_from"]), "valid_until": _iso(row["valid_until"]),
                 "uses": max(0, row["max_uses"] - row["uses"]), "gates": list(row["gates"]), "visitor_arrives": False}
    digest = hashlib.sha256(orjson.dumps([row["id"], name], option=orjson.OPT_SORT_KEYS)).hexdigest()
    return {"name": name, "args": Jsonb(args), "actor": actor, "origin": origin, "pass_id": row["id"], "hash": digest,
            "expires": row["valid_until"], "complete": complete_s, "site": row["site_id"], "gates": list(row["gates"])}


def _iso(value: datetime) -> str:
    return value.isoformat()


async def push_to_gates(conn: psycopg.AsyncConnection[Any], row: Mapping[str, Any], name: str, *, actor: str,
                        origin: str | None, complete_s: float) -> None:
    if name == REVOKE:
        await conn.execute(WITHDRAW_SQL, {"pass_id": row["id"], "actor": actor, "origin": origin})
    await conn.execute(PUSH_SQL, push_params(row, name, actor=actor, origin=origin, complete_s=complete_s))


# A gate's decision about a hub-issued pass; counted once per (pass, gate, event time).
_RECORD_USE_SQL = """
INSERT INTO visitor_pass_checks (pass_id, code, gate, at, granted, reason, source, device_id)
SELECT p.id, p.code, %(gate)s, %(at)s, %(granted)s, %(reason)s, 'gate', %(device_id)s
  FROM visitor_passes p WHERE p.id = %(pass_id)s AND p.site_id = %(site)s
ON CONFLICT (pass_id, gate, at) WHERE source = 'gate' DO NOTHING
RETURNING pass_id
"""
_COUNT_SQL = """
UPDATE visitor_passes SET uses = uses + 1 WHERE id = %s AND %s = ANY(gates)
RETURNING *
"""


def gate_decision(code: str, data: object) -> tuple[int, bool, str] | None:
    """(pass id, granted, reason) when an event is a gate's decision about a hub pass (pure)."""
    if code not in ("granted", "denied") or not isinstance(data, dict) or data.get("method") != "visitor_pass":
        return None
    pass_id = data.get("pass_id")
    if isinstance(pass_id, bool) or not isinstance(pass_id, int) or not 0 < pass_id <= MAX_BIGINT:
        return None
    reason = data.get("reason") if code == "denied" else "ok"
    return pass_id, code == "granted", str(reason or "denied")[:64]


def make_pass_use_sink(catalog: DeviceCatalog, *, complete_s: float = 60.0) -> TransactionSink:
    """Pipeline sink: count gate-reported uses in the ingest transaction that stores the events."""

    def sink(conn: psycopg.Connection, batch: Batch) -> None:
        for ts, device_id, code, data in batch.events:
            decision = gate_decision(code, data)
            info = catalog.by_id.get(device_id)
            if decision is None or info is None:
                continue
            pass_id, granted, reason = decision
            new = conn.execute(_RECORD_USE_SQL, {"gate": info.device, "at": ts, "granted": granted, "reason": reason,
                                                 "device_id": device_id, "pass_id": pass_id, "site": info.site}).fetchone()
            if new is None or not granted:
                continue  # unknown pass, another site's, or a redelivered event
            row = conn.cursor(row_factory=dict_row).execute(_COUNT_SQL, (pass_id, info.device)).fetchone()
            if row is not None and row["uses"] >= row["max_uses"] and row["revoked_at"] is None:
                _used_up(conn, row, complete_s)

    return sink


def _used_up(conn: psycopg.Connection, row: Mapping[str, Any], complete_s: float) -> None:
    """The last use is spent: take the pass off every gate (they count uses per gate)."""
    origin = "visitor pass uses"
    conn.execute(WITHDRAW_SQL, {"pass_id": row["id"], "actor": "hub", "origin": origin})
    conn.execute(PUSH_SQL, push_params(row, REVOKE, actor="hub", origin=origin, complete_s=complete_s))
    conn.execute(
        "INSERT INTO audit_log (actor, origin, action, target, before, after) VALUES ('hub', %s, %s, %s, %s, %s)",
        (origin, "visitor_pass.used_up", f"visitor_pass:{row['id']}", Jsonb({"uses": row["uses"] - 1}),
         Jsonb({"uses": row["uses"], "max_uses": row["max_uses"]})),
    )
