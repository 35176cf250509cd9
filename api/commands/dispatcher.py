"""Deliver queued commands, resend until a reply or expiry, expire and time out the rest.

Everything lives in the commands table, so a restarted hub picks up where it stopped. A
command is "sent" once the broker took it (QoS 1); only the device's reply makes it "done".
Modbus devices: a writer registered as ctx.extras["modbus_command_writer"] (the Modbus
driver's `write_metric` with read-back) executes the command; without one it fails honestly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from hub.config import MqttUrl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModbusOutcome:
    ok: bool
    detail: str
    # Each register write made (metric, requested, before, read_back, verified[, error]): audited one by one.
    writes: tuple[dict[str, Any], ...] = ()


# (site, device, command name, args) -> outcome after the driver wrote and read back.
ModbusCommandWriter = Callable[[str, str, str, dict[str, Any]], Awaitable[ModbusOutcome]]


def command_topic(site: str, device: str, command_id: str) -> str:
    return f"facility/{site}/{device}/cmd/{command_id}"


def command_payload(name: str, args: dict[str, Any], expires_at: datetime) -> bytes:
    return orjson.dumps({"name": name, "args": args, "expires_at": expires_at.isoformat()})


# End what ran out of time, and audit each change (before/after) in the same statement.
_EXPIRE_SQL = """
WITH old AS (
    SELECT id, state,
           CASE WHEN state IN ('awaiting_confirmation', 'queued') THEN 'expired' ELSE 'timed_out' END AS new_state,
           CASE WHEN state IN ('awaiting_confirmation', 'queued') THEN 'expired before it reached the device'
                WHEN state = 'sent' THEN 'sent, but the device did not reply before expiry'
                ELSE 'accepted, but the device did not report completion in time' END AS why
      FROM commands
     WHERE (state IN ('awaiting_confirmation', 'queued', 'sent') AND expires_at <= now())
        OR (state = 'accepted' AND accepted_at + complete_within_s * interval '1 second' <= now())
       FOR UPDATE),
changed AS (
    UPDATE commands c SET state = old.new_state, finished_at = now(), updated_at = now(), detail = old.why
      FROM old WHERE c.id = old.id
 RETURNING c.id, old.state AS before, c.state AS after, c.detail)
INSERT INTO audit_log (actor, origin, action, target, before, after)
SELECT 'hub', 'command dispatcher', 'command.' || after, 'command:' || id,
       jsonb_build_object('state', before), jsonb_build_object('state', after, 'detail', detail)
  FROM changed
"""

_DUE_SQL = """
SELECT c.id, c.name, c.args, c.expires_at, c.state, d.site_id, d.device_id, d.protocol
  FROM commands c JOIN devices d ON d.id = c.device_id
 WHERE c.state IN ('queued', 'sent') AND c.next_attempt_at <= now() AND c.expires_at > now()
 ORDER BY c.next_attempt_at LIMIT 200
   FOR UPDATE OF c SKIP LOCKED
"""


class CommandDispatcher:
    """The loop; `publish(topic, payload) -> bool` says whether the broker took the message."""

    def __init__(self, dsn: str, publish: Callable[[str, bytes], bool], *, retry: timedelta,
                 modbus_writer: Callable[[], ModbusCommandWriter | None] = lambda: None, tick_s: float = 0.2) -> None:
        self.dsn = dsn
        self.publish = publish
        self.retry = retry
        self.modbus_writer = modbus_writer
        self.tick_s = tick_s

    async def run(self, stop: asyncio.Event) -> None:
        conn: psycopg.AsyncConnection[Any] | None = None
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = await psycopg.AsyncConnection.connect(self.dsn, row_factory=dict_row)
                await self.tick(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                log.warning("command dispatcher: database unavailable (%s); retrying", str(exc).strip()[:200])
                conn = None
            except Exception:
                log.exception("command dispatcher tick failed")
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        await conn.rollback()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.tick_s)
        if conn is not None:
            await conn.close()

    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute(_EXPIRE_SQL)
        async with conn.transaction():
            due = await (await conn.execute(_DUE_SQL)).fetchall()
            for cmd in due:
                if cmd["protocol"] == "modbus":
                    await self._modbus(conn, cmd)
                    continue
                topic = command_topic(cmd["site_id"], cmd["device_id"], cmd["id"])
                ok = await asyncio.to_thread(self.publish, topic, command_payload(cmd["name"], cmd["args"], cmd["expires_at"]))
                if ok:
                    await conn.execute(
                        """UPDATE commands SET state = CASE WHEN state = 'queued' THEN 'sent' ELSE state END,
                                  attempts = attempts + 1, sent_at = coalesce(sent_at, now()),
                                  next_attempt_at = now() + %s, updated_at = now() WHERE id = %s""",
                        (self.retry, cmd["id"]),
                    )
                else:
                    await conn.execute(
                        "UPDATE commands SET next_attempt_at = now() + interval '1 second', updated_at = now() WHERE id = %s",
                        (cmd["id"],),
                    )

    async def _modbus(self, conn: psycopg.AsyncConnection[Any], cmd: dict[str, Any]) -> None:
        writer = self.modbus_writer()
        if writer is None:
            outcome = ModbusOutcome(False, "no Modbus command writer is registered in this hub")
        else:
            try:
                outcome = await writer(cmd["site_id"], cmd["device_id"], cmd["name"], cmd["args"])
            except Exception as exc:  # the driver's failure is the command's failure, with its reason
                outcome = ModbusOutcome(False, f"Modbus write failed: {exc}")
        state = "done" if outcome.ok else "failed"
        for write in outcome.writes:
            await conn.execute(
                """INSERT INTO audit_log (actor, origin, action, target, before, after)
                   VALUES ('hub', 'modbus driver', 'modbus.write', %s, %s, %s)""",
                (f"device:{cmd['site_id']}/{cmd['device_id']}",
                 Jsonb({"metric": write.get("metric"), "value": write.get("before")}),
                 Jsonb({**write, "command": cmd["id"]})),
            )
        await conn.execute(
            """UPDATE commands SET state = %s, detail = %s, attempts = attempts + 1, sent_at = coalesce(sent_at, now()),
                      finished_at = now(), updated_at = now() WHERE id = %s""",
            (state, outcome.detail, cmd["id"]),
        )
        await conn.execute(
            """INSERT INTO audit_log (actor, origin, action, target, before, after)
               VALUES ('hub', 'command dispatcher', %s, %s, %s, %s)""",
            (f"command.{state}", f"command:{cmd['id']}", Jsonb({"state": cmd["state"]}),
             Jsonb({"state": state, "detail": outcome.detail})),
        )


def mqtt_publisher(url: MqttUrl, client_id: str) -> tuple[Any, Callable[[str, bytes], bool]]:
    """A connection of the hub's own and a publish function that waits for the broker's PUBACK."""
    from drivers.mqtt.connection import MqttConnection, MqttOptions

    connection = MqttConnection(url, MqttOptions(client_id=client_id, clean_session=True))

    def publish(topic: str, payload: bytes) -> bool:
        if not connection.connected.is_set():
            return False
        info = connection.publish(topic, payload, qos=1)
        try:
            info.wait_for_publish(timeout=2.0)
        except (RuntimeError, ValueError):
            return False
        return bool(info.is_published())

    return connection, publish
