"""Prometheus metrics of the ingest path: backpressure, lag and losses made visible.

A custom collector reads `IngestPipeline.stats` (and the live queue) only when scraped, so the
hot path pays nothing for metrics. `mount_metrics(app)` puts `/metrics` on the API;
`scrape(url)` reads a running hub's figures back for `hub doctor`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, make_asgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from hub.ingest.pipeline import IngestPipeline

PipelineSource = Callable[[], IngestPipeline | None]


def ingest_metrics(pipeline: IngestPipeline, *, now: float | None = None) -> list[Metric]:
    """The metric families of one pipeline at one instant (pure apart from reading its state)."""
    s = pipeline.stats
    now = time.time() if now is None else now
    oldest = pipeline.oldest_waiting()
    lag = max(0.0, now - oldest) if oldest is not None else 0.0
    stored = s.messages - s.dead_letters

    def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    return [
        gauge("hub_ingest_queue_depth", "Messages waiting in the ingest queue (bounded; full means the broker holds the rest)", pipeline.queue_depth),
        gauge("hub_ingest_queue_capacity", "Bound of the ingest queue", pipeline.queue_capacity),
        gauge("hub_ingest_lag_seconds", "Now minus the receive time of the oldest message not yet committed", lag),
        counter("hub_ingest_messages", "Messages committed: stored or dead-lettered", s.messages),
        counter("hub_ingest_messages_stored", "Messages whose rows were committed", max(stored, 0)),
        counter("hub_ingest_dead_letters", "Messages dead-lettered with a reason", s.dead_letters),
        counter("hub_ingest_readings", "Readings committed", s.readings),
        counter("hub_ingest_events", "Events committed", s.events),
        counter("hub_ingest_batches", "Batches committed", s.batches),
        counter("hub_ingest_dedup_batches", "Batches that held redelivered rows (written idempotently)", s.dedup_batches),
        counter("hub_ingest_write_errors", "Failed batch writes (retried with backoff; nothing is acknowledged)", s.write_errors),
        counter("hub_ingest_dropped", "Messages shed without being stored or dead-lettered (should stay 0); "
                "drivers that shed load count into stats.extra['dropped']", s.extra.get("dropped", 0.0)),
        counter("hub_ingest_refused", "Messages refused while stopping, left unacknowledged for redelivery", s.refused),
        SummaryMetricFamily("hub_ingest_batch_write_seconds", "Time to write and commit one batch",
                            count_value=s.batches, sum_value=s.batch_ms_total / 1000),
        gauge("hub_ingest_last_batch_seconds", "Write time of the most recent batch", s.last_batch_ms / 1000),
    ]


class IngestCollector(Collector):
    """Collects from whatever pipeline `source()` returns at scrape time (none: nothing)."""

    def __init__(self, source: PipelineSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        pipeline = self.source()
        if pipeline is not None:
            yield from ingest_metrics(pipeline)


def registry_for(source: PipelineSource) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(source))
    return registry


def mount_metrics(app: Any, *, token: str | None) -> None:
    """Serve the ingest metrics of `app.state.ctx.pipeline` on `/metrics`.

    Like every route but health and docs it needs a bearer token: `HUB_METRICS_TOKEN`, which
    Prometheus sends (`authorization: {credentials: …}`) and `hub doctor` reads from settings.
    """
    import hmac
    import json

    def source() -> IngestPipeline | None:
        ctx = getattr(app.state, "ctx", None)
        return getattr(ctx, "pipeline", None)

    inner = make_asgi_app(registry=registry_for(source))
    expected = f"Bearer {token}".encode() if token else None

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if expected is None or not hmac.compare_digest(given, expected):
                message = ("set HUB_METRICS_TOKEN and send it as a bearer token" if expected is None
                           else "a valid metrics bearer token is required")
                body = json.dumps({"error": {"code": "unauthorized", "message": message, "detail": None}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await inner(scope, receive, send)

    app.mount("/metrics", guarded)


@dataclass(frozen=True, kw_only=True)
class IngestSnapshot:
    """What `hub doctor` prints of a running hub."""

    queue_depth: float
    queue_capacity: float
    lag_s: float
    dead_letters: float
    write_errors: float
    dropped: float
    messages: float


def parse_snapshot(text: str) -> IngestSnapshot:
    """Prometheus text exposition → the few figures doctor shows (pure)."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values.setdefault(sample.name, sample.value)
    return IngestSnapshot(
        queue_depth=values.get("hub_ingest_queue_depth", 0.0),
        queue_capacity=values.get("hub_ingest_queue_capacity", 0.0),
        lag_s=values.get("hub_ingest_lag_seconds", 0.0),
        dead_letters=values.get("hub_ingest_dead_letters_total", 0.0),
        write_errors=values.get("hub_ingest_write_errors_total", 0.0),
        dropped=values.get("hub_ingest_dropped_total", 0.0),
        messages=values.get("hub_ingest_messages_total", 0.0),
    )


def scrape(url: str, *, token: str | None = None, timeout: float = 2.0) -> IngestSnapshot:
    """GET `url` (…/metrics) with the metrics token and parse it; raises httpx.HTTPError if unreachable."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, timeout=timeout, follow_redirects=True, headers=headers)
    response.raise_for_status()
    return parse_snapshot(response.text)
