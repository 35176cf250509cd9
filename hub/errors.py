"""One exception tree for the hub, so callers can catch `HubError` and print a clean message."""

from __future__ import annotations


class HubError(Exception):
    """Base of every error the hub raises on purpose; the message is meant for a person."""


class ConfigError(HubError):
    """A configuration or registry file is wrong; the message names file, line and field."""


class StoreError(HubError):
    """The database is unreachable or in an unexpected state."""


class BrokerError(HubError):
    """The MQTT broker is unreachable or refused us."""

    def __init__(self, message: str, *, rc: int | None = None) -> None:
        super().__init__(message if rc is None else f"{message} (MQTT code {rc})")
        self.rc = rc
