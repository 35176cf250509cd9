"""Deliver outbox rows: MQTT QoS 1 (delivered = PUBACK received) and webhooks (delivered = 2xx).

Rows are claimed with FOR UPDATE SKIP LOCKED, so several hub workers can deliver side by side
without sending a row twice at once. A failure stores the error and schedules the next
attempt with exponential backoff; a row stays pending until it is delivered.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg

from drivers.mqtt.connection import MqttConnection
from hub.dispatch.outbox import backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DeliveryOptions:
    batch: int = 500
    publish_timeout_s: float = 5.0
    webhook_timeout_s: float = 5.0
    max_backoff_s: float = 300.0


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed: int = 0


def _host(url: str) -> str:
    """Where a webhook points, without path or query (which may hold tokens)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}:{parts.port or ''}"


class Delivery:
    """One delivery pass at a time over its own connection; call `deliver_due()` in a loop."""

    def __init__(self, conn: psycopg.Connection, *, mqtt: MqttConnection | None, http: httpx.Client,
                 options: DeliveryOptions | None = None) -> None:
        self.conn = conn
        self.mqtt = mqtt
        self.http = http
        self.options = options or DeliveryOptions()
        self.stats = DeliveryStats()

    def deliver_due(self) -> int:
        """Deliver what is due now; returns how many rows were attempted."""
        opts = self.options
        with self.conn.transaction():
            rows = self.conn.execute(
                """SELECT id, channel, target, payload, attempts FROM notifications
                    WHERE status = 'pending' AND next_attempt_at <= now()
                    ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED""", (opts.batch,)).fetchall()
            if not rows:
                return 0
            results: dict[int, str | None] = {}
            pending_mqtt: list[tuple[int, Any]] = []
            for nid, channel, target, payload, _attempts in rows:
                body = json.dumps({**payload, "notification_id": nid}, ensure_ascii=False)
                if channel == "mqtt":
                    if self.mqtt is None or not self.mqtt.connected.is_set():
                        results[nid] = "MQTT broker not connected"
                        continue
                    info = self.mqtt.publish(target, body.encode(), qos=1)
                    if info.rc != 0:
                        results[nid] = f"publish refused (paho rc {info.rc})"
                    else:
                        pending_mqtt.append((nid, info))
                else:
                    results[nid] = self._post(target, body)
            for nid, info in pending_mqtt:
                try:
                    info.wait_for_publish(opts.publish_timeout_s)
                except (RuntimeError, ValueError) as exc:
                    results[nid] = f"publish failed: {exc}"
                    continue
                results[nid] = None if info.is_published() else f"no PUBACK within {opts.publish_timeout_s} s"
            by_id = {r[0]: r[4] for r in rows}
            done = [nid for nid, err in results.items() if err is None]
            if done:
                self.conn.execute(
                    """UPDATE notifications SET status = 'delivered', delivered_at = now(),
                              attempts = attempts + 1, last_error = NULL WHERE id = ANY(%s)""", (done,))
            failed = [(err, backoff(by_id[nid] + 1, max_s=opts.max_backoff_s), nid)
                      for nid, err in results.items() if err is not None]
            if failed:
                self.conn.cursor().executemany(
                    """UPDATE notifications SET attempts = attempts + 1, last_error = %s,
                              next_attempt_at = now() + %s WHERE id = %s""", failed)
                log.warning("%d notification(s) not delivered yet (first: %s); will retry", len(failed), failed[0][0])
            self.stats.delivered += len(done)
            self.stats.failed += len(failed)
            return len(rows)

    def _post(self, url: str, body: str) -> str | None:
        try:
            response = self.http.post(url, content=body.encode(), headers={"content-type": "application/json"},
                                      timeout=self.options.webhook_timeout_s)
        except httpx.HTTPError as exc:
            return f"webhook {_host(url)}: {type(exc).__name__}"
        if 200 <= response.status_code < 300:
            return None
        return f"webhook {_host(url)}: HTTP {response.status_code}"

    def next_due_in(self) -> float | None:
        """Seconds until the next pending row is due (None: nothing pending)."""
        row = self.conn.execute(
            "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM notifications WHERE status = 'pending'"
        ).fetchone()
        self.conn.commit()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))
