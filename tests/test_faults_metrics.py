"""Backpressure made visible: the ingest collector, /metrics on the API, and `hub doctor`."""

from __future__ import annotations

import json
import time

import httpx
from fastapi.testclient import TestClient

from api.app import create_app
from api.component import ApiComponent
from hub.config import load_settings
from hub.doctor import check_hub_metrics
from hub.ingest.pipeline import IngestPipeline
from hub.metrics import ingest_metrics, parse_snapshot
from tests.hubproc import RunningHub
from tests.support import mqtt_client, wait_for


def _values(pipeline: IngestPipeline, now: float) -> dict[str, float]:
    return {s.name: s.value for m in ingest_metrics(pipeline, now=now) for s in m.samples}


def test_queue_depth_and_lag_come_from_the_live_queue() -> None:
    """A pipeline whose writer is not running: messages wait, depth and lag grow, nothing drops."""
    pipeline = IngestPipeline(dsn="postgresql://unused", catalog=None, queue_size=100)  # type: ignore[arg-type]
    assert _values(pipeline, time.time())["hub_ingest_lag_seconds"] == 0.0
    for _ in range(3):
        assert pipeline.put_mqtt("facility/s/d/telemetry", b"{}", None)
    received = time.time()
    v = _values(pipeline, received + 7.5)
    assert v["hub_ingest_queue_depth"] == 3
    assert v["hub_ingest_queue_capacity"] == 100
    assert 7.0 <= v["hub_ingest_lag_seconds"] <= 8.0
    assert v["hub_ingest_dropped_total"] == 0
    pipeline.stop(timeout=0.1)  # stopping: further messages are refused (left for redelivery), and counted
    assert pipeline.put_mqtt("facility/s/d/telemetry", b"{}", None) is False
    assert _values(pipeline, time.time())["hub_ingest_refused_total"] == 1


def test_metrics_endpoint_and_doctor_against_a_running_hub(fresh_db_url, broker, demo_registry_path, capsys) -> None:
    api = ApiComponent()
    token = "metrics-test-token"
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="faults-metrics", components=[api],
                    api_port=0, metrics_token=token) as hub:
        client = mqtt_client(broker.host, broker.port)
        client.publish("facility/demo/el-b1-1/telemetry", json.dumps({"floor": 3}), qos=1).wait_for_publish(5)
        client.publish("facility/demo/el-b1-1/telemetry", b"{bad json", qos=1).wait_for_publish(5)
        client.disconnect()
        wait_for(lambda: hub.pipeline.stats.messages >= 2, message="both messages committed")
        url = f"http://127.0.0.1:{api.port}/metrics"
        # /metrics needs its bearer token like every route but health and docs
        assert httpx.get(url, timeout=5, follow_redirects=True).status_code == 401
        assert httpx.get(url, timeout=5, follow_redirects=True, headers={"Authorization": "Bearer nope"}).status_code == 401
        text = httpx.get(url, timeout=5, follow_redirects=True, headers={"Authorization": f"Bearer {token}"}).text
        assert "# TYPE hub_ingest_queue_depth gauge" in text
        snap = parse_snapshot(text)
        assert snap.messages == 2 and snap.dead_letters == 1 and snap.dropped == 0 and snap.queue_depth == 0
        settings = load_settings(None, database_url=fresh_db_url, api_port=api.port, api_host="127.0.0.1", metrics_token=token)
        [(status, name, detail)] = check_hub_metrics(settings)
        assert (status, name) == ("ok", "hub")
        assert "queue 0/" in detail and "2 messages, 1 dead letters" in detail and "0 dropped" in detail
    settings = load_settings(None, database_url=fresh_db_url, api_port=api.port, api_host="127.0.0.1")
    [(status, _, detail)] = check_hub_metrics(settings)  # the hub is gone: a warning, not a failure
    assert status == "warn" and "no running hub" in detail


def test_metrics_without_a_hub_is_empty_not_an_error(fresh_db_url) -> None:
    settings = load_settings(None, database_url=fresh_db_url, metrics_token="t")
    with TestClient(create_app(None, settings=settings)) as client:
        response = client.get("/metrics/", headers={"Authorization": "Bearer t"})
        assert response.status_code == 200
        assert "hub_ingest" not in response.text


def test_metrics_refuse_everyone_when_no_token_is_configured(fresh_db_url) -> None:
    settings = load_settings(None, database_url=fresh_db_url)
    with TestClient(create_app(None, settings=settings)) as client:
        response = client.get("/metrics/", headers={"Authorization": "Bearer anything"})
        assert response.status_code == 401
        assert "HUB_METRICS_TOKEN" in response.json()["error"]["message"]
