"""MQTT driver: contract topics in (telemetry, events, status, replies), commands out."""

from drivers.mqtt.connection import MqttConnection, MqttOptions
from drivers.mqtt.ingest import INGEST_TOPICS, MqttIngest

__all__ = ["INGEST_TOPICS", "MqttConnection", "MqttIngest", "MqttOptions"]
