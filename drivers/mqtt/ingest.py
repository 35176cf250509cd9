"""Subscribe to the contract's device→hub topics and feed the ingest pipeline."""

from __future__ import annotations

from drivers.mqtt.connection import MqttConnection, MqttOptions
from hub.config import MqttUrl
from hub.ingest.pipeline import IngestPipeline

INGEST_TOPICS = (
    "facility/+/+/telemetry",
    "facility/+/+/event",
    "facility/+/+/status",
    "facility/+/+/cmd/+/reply",
)


def ingest_subscriptions(shared_group: str | None) -> list[tuple[str, int]]:
    """Topics with QoS 1; with a group, `$share/<group>/…` so several workers split the load."""
    prefix = f"$share/{shared_group}/" if shared_group else ""
    return [(prefix + topic, 1) for topic in INGEST_TOPICS]


class MqttIngest:
    """A persistent-session subscriber whose messages are acknowledged after commit."""

    def __init__(self, url: MqttUrl, pipeline: IngestPipeline, *, client_id: str, shared_group: str | None = None, max_inflight: int = 20_000) -> None:
        self.pipeline = pipeline
        self.connection = MqttConnection(
            url,
            MqttOptions(client_id=client_id, clean_session=False, manual_ack=True, max_inflight=max_inflight),
            subscriptions=ingest_subscriptions(shared_group),
            on_message=self._on_message,
        )
        pipeline.acker = self.connection.ack  # type: ignore[assignment]

    def _on_message(self, topic: str, payload: bytes, token: tuple[int, int] | None, redelivered: bool) -> None:
        self.pipeline.put_mqtt(topic, payload, token, redelivered=redelivered)

    def start(self) -> None:
        self.connection.start()

    def stop(self) -> None:
        self.connection.stop()

    def __enter__(self) -> MqttIngest:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
