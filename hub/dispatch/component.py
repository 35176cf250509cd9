"""The dispatch `Component`: listens for alarms, sweeps on a timer, delivers notifications.

Two threads with their own connections: the dispatcher (LISTEN hub_alarms → open and assign
orders; every `sweep_s` a sweep that catches alarms raised while no hub listened, assigns
waiting orders, sends SLA reminders/escalations and generates planned maintenance) and the
deliverer (LISTEN hub_notifications → publish the outbox). Time comes from an injectable
`Clock` so tests compress SLA time; delivery backoff uses the database's wall clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import psycopg

from hub.dispatch.delivery import Delivery, DeliveryOptions
from hub.dispatch.engine import SweepResult, alarm_changed, dispatch_alarm, sweep
from hub.dispatch.policy import Policy, load_policy, set_active_policy
from hub.store.db import connect
from hub.workorders.attendance import badge_sink
from hub.workorders.clock import SYSTEM_CLOCK, Clock

if TYPE_CHECKING:
    from drivers.mqtt.connection import MqttConnection
    from hub.runtime import HubContext

log = logging.getLogger(__name__)


class DispatchComponent:
    name = "dispatch"

    def __init__(self, *, policy: Policy | None = None, clock: Clock | None = None, sweep_s: float | None = None,
                 deliver: bool = True) -> None:
        self._policy_override = policy
        self._clock_override = clock
        self._sweep_override = sweep_s
        self.deliver = deliver
        self.policy: Policy | None = None
        self.clock: Clock = SYSTEM_CLOCK
        self.dsn = ""
        self.sweeps = 0
        self.last_sweep: SweepResult | None = None
        self.dispatched = 0
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mqtt: MqttConnection | None = None
        self._ctx: HubContext | None = None
        self.delivery_stats: Any = None

    async def start(self, ctx: HubContext) -> None:
        settings = ctx.settings.dispatch
        self._ctx = ctx
        self.dsn = ctx.dsn
        self.policy = self._policy_override or load_policy(settings.policy)
        set_active_policy(self.policy)
        self.clock = self._clock_override or ctx.extras.get("clock") or SYSTEM_CLOCK
        self.sweep_s = self._sweep_override or settings.sweep_s
        ctx.extras["dispatch"] = self
        ctx.pipeline.add_sink(badge_sink)
        self._stop.clear()
        self._threads = [threading.Thread(target=self._dispatch_loop, name="dispatch", daemon=True)]
        if self.deliver:
            await asyncio.to_thread(self._connect_mqtt)
            self._threads.append(threading.Thread(target=self._delivery_loop, name="dispatch-delivery", daemon=True))
        for thread in self._threads:
            thread.start()
        log.info("dispatch: %d alarm rule(s), %d schedule(s), sweep every %.1f s", len(self.policy.alarms),
                 len(self.policy.maintenance), self.sweep_s)

    async def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 15)
        self._threads.clear()
        if self._mqtt is not None:
            await asyncio.to_thread(self._mqtt.stop)
            self._mqtt = None

    def kick(self) -> None:
        """Sweep now rather than at the next tick (tests, after moving a manual clock)."""
        self._kick.set()

    # -- dispatcher thread ----------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        assert self.policy is not None
        last_planned = 0.0
        while not self._stop.is_set():
            try:
                with connect(self.dsn, autocommit=True, application_name="hub-dispatch-listen") as listen, \
                        connect(self.dsn, autocommit=True, application_name="hub-dispatch") as work:
                    listen.execute("LISTEN hub_alarms")
                    next_sweep = 0.0
                    while not self._stop.is_set():
                        if time.monotonic() >= next_sweep or self._kick.is_set():
                            self._kick.clear()
                            planned = time.monotonic() - last_planned >= self._planned_every()
                            self.last_sweep = sweep(work, policy=self.policy, clock=self.clock, planned=planned)
                            if planned:
                                last_planned = time.monotonic()
                            self.sweeps += 1
                            next_sweep = time.monotonic() + self.sweep_s
                        wait = max(0.01, min(0.25, next_sweep - time.monotonic()))
                        for note in listen.notifies(timeout=wait):
                            self._on_alarm(work, note.payload)
                            if self._stop.is_set():
                                break
            except (psycopg.Error, OSError) as exc:
                log.warning("dispatch: database trouble (%s); reconnecting in 1 s", str(exc).strip())
                self._stop.wait(1.0)
            except Exception:
                log.exception("dispatch loop failed; restarting in 1 s")
                self._stop.wait(1.0)

    def _planned_every(self) -> float:
        return self._ctx.settings.dispatch.planned_every_s if self._ctx else 600.0

    def _on_alarm(self, conn: psycopg.Connection, payload: str) -> None:
        assert self.policy is not None
        try:
            info = json.loads(payload)
            alarm_id = int(info["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("dispatch: ignoring malformed hub_alarms payload %r", payload[:200])
            return
        try:
            if dispatch_alarm(conn, alarm_id, policy=self.policy, clock=self.clock) is not None:
                self.dispatched += 1
            if info.get("state") in ("cleared_unack", "cleared"):
                alarm_changed(conn, alarm_id, policy=self.policy)
        except psycopg.OperationalError:
            raise
        except Exception:
            if conn.broken or conn.closed:
                raise
            log.exception("dispatch: alarm %s could not be dispatched (the sweep will retry)", alarm_id)

    # -- delivery thread -----------------------------------------------------------------------
    def _connect_mqtt(self) -> None:
        from drivers.mqtt.connection import MqttConnection, MqttOptions
        from hub.errors import BrokerError

        assert self._ctx is not None
        s = self._ctx.settings
        conn = MqttConnection(s.mqtt, MqttOptions(client_id=f"{s.mqtt_client_id}-notify"[:64], clean_session=False))
        try:
            conn.start()
        except BrokerError as exc:
            log.warning("dispatch: notifications wait for the broker (%s)", exc)
            return
        self._mqtt = conn

    def _delivery_loop(self) -> None:
        assert self._ctx is not None
        s = self._ctx.settings.dispatch
        options = DeliveryOptions(publish_timeout_s=s.publish_timeout_s, max_backoff_s=s.max_backoff_s)
        with httpx.Client() as http:
            while not self._stop.is_set():
                try:
                    with connect(self.dsn, autocommit=True, application_name="hub-notify-listen") as listen, \
                            connect(self.dsn, application_name="hub-notify") as work:
                        listen.execute("LISTEN hub_notifications")
                        delivery = Delivery(work, mqtt=self._mqtt, http=http, options=options)
                        self.delivery_stats = delivery.stats
                        while not self._stop.is_set():
                            if self._mqtt is None:
                                self._connect_mqtt()
                                delivery.mqtt = self._mqtt
                            while delivery.deliver_due() and not self._stop.is_set():
                                pass
                            due = delivery.next_due_in()
                            wait = 1.0 if due is None else max(0.01, min(1.0, due))
                            for _ in listen.notifies(timeout=wait, stop_after=1):
                                break
                except (psycopg.Error, OSError) as exc:
                    log.warning("dispatch delivery: database trouble (%s); reconnecting", str(exc).strip())
                    self._stop.wait(1.0)
                except Exception:
                    log.exception("dispatch delivery failed; restarting in 1 s")
                    self._stop.wait(1.0)

    # -- for tests and tools ---------------------------------------------------------------------------
    def sweep_now(self) -> SweepResult:
        """One sweep on a connection of its own, in the caller's thread."""
        assert self.policy is not None
        with connect(self.dsn, autocommit=True, application_name="hub-dispatch-sweep") as conn:
            return sweep(conn, policy=self.policy, clock=self.clock)
