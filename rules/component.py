"""The rule engine inside the hub: listens to committed batches, evaluates, writes alarms.

The ingest writer thread hands each committed batch to `_on_commit`, which only queues it.
One worker thread drains the queue (merging whatever piled up into one evaluation), runs the
timers, and writes the resulting alarm actions in one transaction. It also polls offline
events written by the hub's offline sweep, maintenance windows, shelving expiry, and the
rules files (a changed file is reloaded without a restart). A second thread LISTENs on
`hub_alarms` and publishes every alarm change on MQTT (`facility/{site}/alarms/{id}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from drivers.mqtt.connection import MqttConnection, MqttOptions
from hub.errors import HubError
from hub.ingest.pipeline import Committed, IngestPipeline
from hub.runtime import HubContext
from hub.store.db import connect
from rules import alarms
from rules.devices import DeviceMeta, device_metas
from rules.engine import Action, Engine, EventIn, Rows
from rules.model import RuleSet, load_rules
from rules.store import apply_actions, fetch_alarm_message, warm_start

log = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "examples" / "rules"


def alarm_topic(site: str, alarm_id: int) -> str:
    return f"facility/{site}/alarms/{alarm_id}"


class RulesComponent:
    name = "rules"

    def __init__(self, *, rules_path: Path | None = None, tick_s: float = 0.25, grace_s: float = 1.0,
                 poll_s: float = 1.0, publish: bool = True) -> None:
        self.rules_path = rules_path
        self.tick_s = tick_s
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.publish = publish
        self.engine: Engine | None = None
        self.ruleset: RuleSet | None = None
        self.metas: dict[int, DeviceMeta] = {}
        self.stats: dict[str, float] = {"batches": 0, "raised": 0, "cleared": 0, "errors": 0, "reloads": 0, "published": 0}
        self._queue: queue.Queue[Committed] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._dsn = ""
        self._mqtt: MqttConnection | None = None
        self._path: Path = DEFAULT_RULES
        self._replayed_until = datetime.min.replace(tzinfo=UTC)
        self._worker_name = "hub"
        self._pipeline: IngestPipeline | None = None
        self._last_horizon = 0.0

    # -- component protocol ---------------------------------------------------------------------
    async def start(self, ctx: HubContext) -> None:
        self._dsn = ctx.dsn
        self._worker_name = ctx.worker
        self._path = Path(self.rules_path or ctx.settings.rules or DEFAULT_RULES)
        self.ruleset = load_rules(self._path)
        self.metas = device_metas(ctx.registry, ctx.device_ids)
        self.engine = await asyncio.to_thread(self._warm_engine, self.ruleset)
        ctx.pipeline.add_listener(self._on_commit)
        self._pipeline = ctx.pipeline
        ctx.extras["rules"] = self
        if self.publish:
            self._mqtt = MqttConnection(ctx.settings.mqtt, MqttOptions(client_id=f"{ctx.settings.mqtt_client_id}-alarms",
                                                                       clean_session=True, max_queued=10_000))
            await asyncio.to_thread(self._mqtt.start)
            self._spawn(self._publisher, "rules-publisher")
        self._spawn(self._worker, "rules-worker")
        log.info("rules: %d rule(s) from %s over %d devices", len(self.ruleset.rules), self._path, len(self.metas))

    async def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            await asyncio.to_thread(t.join, 10)
        if self._mqtt is not None:
            await asyncio.to_thread(self._mqtt.stop)

    def _spawn(self, target: Any, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # -- ingest side (writer thread: return at once) -------------------------------------------------
    def _on_commit(self, committed: Committed) -> None:
        self._queue.put_nowait(committed)

    # -- worker ------------------------------------------------------------------------------------
    def _warm_engine(self, ruleset: RuleSet) -> Engine:
        engine = Engine(ruleset, self.metas)
        now = datetime.now(UTC)
        with connect(self._dsn, autocommit=True, application_name="hub-rules-warm") as conn:
            engine.external_maint = alarms.devices_in_maintenance(conn)
            warm_start(conn, engine, now, actor="rules")
            conn.execute("INSERT INTO audit_log (actor, origin, action, target, after) VALUES ('rules', %s, 'rules.load', %s, %s)",
                         (self._worker_name, str(self._path), Jsonb({"rules": [r.id for r in ruleset.rules],
                                                                     "files": [str(f) for f in ruleset.files]})))
        # Batches committed before `now` are in the replay already; feeding them again would
        # repeat their events (a momentary alarm would come back).
        self._replayed_until = now
        return engine

    def _drain(self, first: Committed | None) -> tuple[Rows, list[EventIn]]:
        assert self.engine is not None
        items = [] if first is None else [first]
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        parts: list[Rows] = []
        events: list[EventIn] = []
        for c in items:
            if c.committed_at < self._replayed_until:
                continue
            if c.batch.readings:
                parts.append(self.engine.rows_from_readings(c.batch.readings))
            events.extend((e[0].timestamp(), e[1], e[2], e[3]) for e in c.batch.events)
            events.extend((s.at.timestamp(), s.device_id, "online" if s.online else "offline", None)
                          for s in c.result.transitions)
        self.stats["batches"] += len(items)
        return Rows.concat(parts), events

    def _worker(self) -> None:
        conn: psycopg.Connection | None = None
        pending: list[Action] = []
        last_tick = last_poll = 0.0
        status_mark = datetime.now(UTC)
        while not self._stop.is_set():
            try:
                first: Committed | None = self._queue.get(timeout=self.tick_s)
            except queue.Empty:
                first = None
            engine = self.engine
            assert engine is not None
            try:
                if conn is None:
                    conn = connect(self._dsn, autocommit=True, application_name="hub-rules")
                now = time.time()
                # Timers may only run up to what ingest has handed over: a reading still in its
                # queue or batch would otherwise come after a duration had already "held"
                # (a lift between two readings looks stopped for as long as ingest lags).
                # Read before draining: everything received earlier is then in our queue.
                horizon = self._horizon(now)
                # Batches already queued first: a status event polled from the database must
                # not overtake the data committed before it.
                rows, events = self._drain(first)
                if len(rows) or events:
                    pending += engine.feed(rows, events)
                if now - last_poll >= self.poll_s:
                    last_poll = now
                    status_mark, polled = self._poll(conn, status_mark)
                    if polled:
                        pending += engine.feed(Rows.empty(), polled)
                    if self._maybe_reload():
                        apply_actions(conn, pending, ruleset=engine.ruleset)
                        pending = []
                        continue
                if now - last_tick >= self.tick_s:
                    last_tick = now
                    pending += engine.advance(horizon)
                if pending:
                    apply_actions(conn, pending, ruleset=engine.ruleset)
                    self.stats["raised"] += sum(type(a).__name__ == "Raise" for a in pending)
                    self.stats["cleared"] += sum(type(a).__name__ == "Clear" for a in pending)
                    pending = []
            except (psycopg.OperationalError, psycopg.InterfaceError, HubError) as exc:
                self.stats["errors"] += 1
                log.warning("rules: database unavailable (%s); keeping %d action(s) and retrying", exc, len(pending))
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                conn = None
                self._stop.wait(1.0)
            except Exception:
                self.stats["errors"] += 1
                log.exception("rules: evaluation step failed; %d action(s) dropped", len(pending))
                pending = []
        if conn is not None:
            conn.close()

    def _horizon(self, now: float) -> float:
        """Time the engine's timers may advance to: wall clock or the oldest message ingest
        still holds, less the grace for device-to-hub latency."""
        oldest = self._pipeline.oldest_waiting() if self._pipeline is not None else None
        self._last_horizon = max(self._last_horizon, (now if oldest is None else min(now, oldest)) - self.grace_s)
        return self._last_horizon

    def _poll(self, conn: psycopg.Connection, mark: datetime) -> tuple[datetime, list[EventIn]]:
        """Offline/online events written outside the pipeline (the offline sweep), maintenance, shelves."""
        assert self.engine is not None
        rows = conn.execute(
            "SELECT extract(epoch FROM ts)::float8, device_id, code, received_at FROM events"
            " WHERE code IN ('online', 'offline') AND received_at > %s ORDER BY received_at", (mark,)).fetchall()
        events: list[EventIn] = [(float(r[0]), int(r[1]), r[2], None) for r in rows]
        if rows:
            mark = rows[-1][3]
        self.engine.external_maint = alarms.devices_in_maintenance(conn)
        alarms.expire_shelves(conn)
        return mark, events

    def _maybe_reload(self) -> bool:
        assert self.ruleset is not None
        try:
            if not self.ruleset.changed():
                return False
            ruleset = load_rules(self._path)
        except HubError as exc:
            log.error("rules: not reloaded, keeping the running rules: %s", exc)
            # Remember the broken files' times so the error is logged once per change.
            self.ruleset = self.ruleset.model_copy(update={"mtimes": {str(f): f.stat().st_mtime for f in self.ruleset.files if f.exists()}})
            return False
        self.engine = self._warm_engine(ruleset)
        self.ruleset = ruleset
        self.stats["reloads"] += 1
        log.info("rules: reloaded %d rule(s) from %s", len(ruleset.rules), self._path)
        return True

    # -- MQTT publisher ------------------------------------------------------------------------------
    def _publisher(self) -> None:
        while not self._stop.is_set():
            try:
                with connect(self._dsn, autocommit=True, application_name="hub-rules-publish") as conn:
                    conn.execute("LISTEN hub_alarms")
                    while not self._stop.is_set():
                        # Collect first: no query may run while the notifies generator is open.
                        notes = list(conn.notifies(timeout=0.5, stop_after=200))
                        for note in notes:
                            self._publish_one(conn, note.payload)
            except (psycopg.Error, HubError) as exc:
                log.warning("rules publisher: %s; reconnecting", exc)
                self._stop.wait(1.0)
            except Exception:
                log.exception("rules publisher failed; restarting it")
                self._stop.wait(1.0)

    def _publish_one(self, conn: psycopg.Connection, payload: str) -> None:
        try:
            alarm_id = int(orjson.loads(payload)["id"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("rules publisher: unexpected notification %r", payload[:200])
            return
        msg = fetch_alarm_message(conn, alarm_id)
        if msg is None or self._mqtt is None:
            return
        self._mqtt.publish(alarm_topic(msg["site"], alarm_id), orjson.dumps(msg, default=str), qos=1)
        self.stats["published"] += 1
