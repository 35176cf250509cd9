"""Pipeline sink: device replies (Batch.replies) update commands in the ingest transaction."""

from __future__ import annotations

import orjson
import psycopg
from psycopg.types.json import Jsonb

from api.commands.policy import reply_transition
from hub.ingest.catalog import DeviceCatalog
from hub.ingest.decode import Batch
from hub.ingest.writer import TransactionSink


def make_reply_sink(catalog: DeviceCatalog, worker: str = "hub") -> TransactionSink:
    def sink(conn: psycopg.Connection, batch: Batch) -> None:
        for reply in batch.replies:
            apply_reply(conn, reply.device_id, reply.command_id, reply.status, reply.detail, reply.at, catalog, worker)

    return sink


def apply_reply(conn: psycopg.Connection, device_id: int, command_id: str, status: str, detail: str | None,
                at: object, catalog: DeviceCatalog, worker: str) -> None:
    row = conn.execute("SELECT state, device_id FROM commands WHERE id = %s FOR UPDATE", (command_id,)).fetchone()
    if row is None or row[1] != device_id:
        info = catalog.by_id.get(device_id)
        topic = f"facility/{info.site}/{info.device}/cmd/{command_id}/reply" if info else None
        conn.execute(
            "INSERT INTO dead_letters (source, topic, payload, reason, worker) VALUES ('mqtt', %s, %s, %s, %s)",
            (topic, orjson.dumps({"status": status, "detail": detail}),
             "command reply for an unknown command (or another device's)", worker),
        )
        return
    new = reply_transition(row[0], status)
    if new is None:  # late (after expiry/time-out) or duplicate: keep it visible, change nothing
        conn.execute(
            "UPDATE commands SET late_reply = %s, updated_at = now() WHERE id = %s",
            (orjson.dumps({"status": status, "detail": detail, "at": str(at)}).decode(), command_id),
        )
        return
    info = catalog.by_id.get(device_id)
    conn.execute(
        """INSERT INTO audit_log (actor, origin, action, target, before, after) VALUES (%s, 'mqtt', %s, %s, %s, %s)""",
        (f"device:{info.site}/{info.device}" if info else f"device:{device_id}", f"command.{new}", f"command:{command_id}",
         Jsonb({"state": row[0]}), Jsonb({"state": new, "detail": detail})),
    )
    conn.execute(
        """UPDATE commands SET state = %(new)s, detail = coalesce(%(detail)s, detail), updated_at = now(),
                  accepted_at = CASE WHEN %(new)s = 'accepted' THEN %(at)s ELSE accepted_at END,
                  finished_at = CASE WHEN %(new)s <> 'accepted' THEN %(at)s ELSE finished_at END
            WHERE id = %(id)s""",
        {"new": new, "detail": detail, "at": at, "id": command_id},
    )
