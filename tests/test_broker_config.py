"""The shipped Mosquitto config (examples/mosquitto/mosquitto.conf) says what it means."""

from __future__ import annotations

import re

from hub.embedded.broker import BROKER_CONFIG

C_INT_MAX = 2**31 - 1


def _settings() -> list[tuple[int, str, str]]:
    out = []
    for lineno, line in enumerate(BROKER_CONFIG.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.append((lineno, key, value.strip()))
    return out


def test_numeric_settings_fit_mosquittos_int_parser():
    """Mosquitto reads numeric options with atoi() into a C int (src/conf.c, conf__parse_int):
    `max_queued_bytes 4294967296` became 0, which means *no* byte cap."""
    numeric = [(n, k, v) for n, k, v in _settings() if re.fullmatch(r"\d+", v)]
    assert {k for _, k, _ in numeric} >= {"max_inflight_messages", "max_queued_messages", "max_queued_bytes"}
    too_big = [f"line {n}: {k} {v}" for n, k, v in numeric if int(v) > C_INT_MAX]
    assert not too_big, f"wrap to garbage in Mosquitto: {too_big}"


def test_the_limits_that_keep_data_are_set():
    settings = {k: v for _, k, v in _settings()}
    assert int(settings["max_inflight_messages"]) > 20  # Mosquitto's default starves batch acks
    assert int(settings["max_queued_messages"]) > 1000  # the default drops QoS 1 for a slow hub
    assert settings["persistence"] == "true"
