"""The default rule set over the demo site's simulated fleet: normal operation raises nothing;
a fire and a forced door raise exactly their alarms and clear when the scenario ends; a
backtest over the same history reports the same alarms the live hub raised."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import psycopg

from hub.registry import load_registry
from rules.cli import backtest
from rules.component import DEFAULT_RULES, RulesComponent
from rules.model import load_rules
from simulators.basic import BasicMqttFleet
from tests.hubproc import RunningHub
from tests.support import ROOT, mqtt_client, wait_for

DEMO = ROOT / "examples" / "sites" / "demo.yaml"


def _open(url: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as c:
        return c.execute("SELECT rule_id, scope_key, state FROM alarms ORDER BY id").fetchall()


def test_default_rules_over_the_demo_fleet(fresh_db_url, broker):
    started = datetime.now(UTC) - timedelta(seconds=1)
    component = RulesComponent(tick_s=0.1, grace_s=0.3, poll_s=0.3)
    with RunningHub(fresh_db_url, broker.url, DEMO, components=[component], client_id="hub-scenario-test") as hub:
        fleet = BasicMqttFleet(hub.settings.mqtt, load_registry(DEMO), interval_s=0.5, seed=7)
        fleet.start()
        try:
            wait_for(lambda: hub.pipeline.stats.messages >= fleet.sent > 100, 30, message="fleet data ingested")
            time.sleep(1.0)
            assert _open(fresh_db_url) == []  # normal operation: no alarm at all
        finally:
            fleet.stop()
        client = mqtt_client(broker.host, broker.port)
        try:
            def send(device: str, channel: str, body: dict) -> None:
                client.publish(f"facility/demo/{device}/{channel}", json.dumps(body), qos=1).wait_for_publish(5)

            now = datetime.now(UTC).isoformat()
            send("smoke-b1-f1", "telemetry", {"ts": now, "fire_alarm": 1})
            send("smoke-b1-f2", "telemetry", {"ts": now, "fire_alarm": 1})
            send("gate-north", "event", {"code": "forced_open"})
            expected = {("fire-pre-alarm", "demo/zone:b1-z1"), ("fire-confirmed", "demo/zone:b1-z1"),
                        ("gate-forced-open", "demo/gate-north#forced_open")}
            wait_for(lambda: {(r, s) for r, s, _ in _open(fresh_db_url)} == expected, 10,
                     message=f"scenario alarms (have {_open(fresh_db_url)})")
            time.sleep(1.0)
            assert {(r, s) for r, s, _ in _open(fresh_db_url)} == expected  # and nothing more
            later = datetime.now(UTC).isoformat()
            send("smoke-b1-f1", "telemetry", {"ts": later, "fire_alarm": 0})
            send("smoke-b1-f2", "telemetry", {"ts": later, "fire_alarm": 0})
            wait_for(lambda: all(state == "cleared_unack" for _, _, state in _open(fresh_db_url)), 10,
                     message="scenario over: all alarms cleared (awaiting acknowledgement)")
        finally:
            client.disconnect()
    with psycopg.connect(fresh_db_url, autocommit=True) as conn:
        result = backtest(conn, load_rules(DEFAULT_RULES), load_registry(DEMO), started, datetime.now(UTC),
                          dsn=fresh_db_url)
    assert {(e.rule_id, e.scope_key) for e in result.episodes} == expected
    assert all(e.cleared_at is not None for e in result.episodes)
