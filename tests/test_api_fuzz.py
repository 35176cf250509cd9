"""Schemathesis over the OpenAPI schema against the running API (real database): no 500s.

Requests go through httpx: in this environment `urllib3` is urllib3-future, which breaks the
`requests` transport schemathesis uses by default.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.api_support import ApiHub, start_api_hub  # noqa: E402
from tests.support import create_database, drop_database  # noqa: E402

# The SSE streams never end by design; changing users would lock the fuzzing user out.
SKIP_PATHS = ("/streams/alarms", "/streams/work-orders", "/users/{user_id}")
EXAMPLES = int(os.environ.get("HUB_FUZZ_EXAMPLES", "12"))


@pytest.fixture(scope="module")
def api(pg_server, broker, tmp_path_factory) -> Iterator[ApiHub]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    try:
        for hub in start_api_hub(url, broker.url, tmp_path_factory.mktemp("api-fuzz"), client_id="hub-api-fuzz",
                                 api={"commands_per_minute": 100000, "device_commands_per_minute": 100000}):
            _seed_work_orders(hub)
            yield hub
    finally:
        drop_database(pg_server.admin_url, name)


def _seed_work_orders(hub: ApiHub) -> None:
    """Low-numbered work orders (generated ids hit them) with bella as a staff member, so the
    fuzzed work-order steps reach the state machine and the closing rule, not only 404s."""
    import psycopg

    from hub.workorders import create_order, transition

    hub.sql("UPDATE api_users SET staff_id = 'butler-wang' WHERE username = 'bella'")
    with psycopg.connect(hub.db_url) as conn:
        for kind, state in (("repair", "assigned"), ("complaint", "accepted"), ("praise", "created"),
                            ("maintenance", "on_site")):
            order = create_order(conn, site_id="demo", kind=kind, title=f"fuzz {kind}", actor="fuzz", origin="test",
                                 auto_assign=False)
            if state != "created":
                transition(conn, order.id, "assigned", "fuzz", "test", assignee="butler-wang")
            for step in ("accepted", "on_site"):
                if state in ("accepted", "on_site") and (step == "accepted" or state == "on_site"):
                    transition(conn, order.id, step, "fuzz", "test")


@pytest.fixture(scope="module")
def fuzz_schema(api: ApiHub) -> Any:
    with httpx.Client(base_url=api.url) as c:
        raw = c.get("/openapi.json").json()
    raw["paths"] = {p: ops for p, ops in raw["paths"].items() if p not in SKIP_PATHS}
    return schemathesis.openapi.from_dict(raw)


def _send(kwargs: dict[str, Any], token: str) -> httpx.Response:
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
    headers["Authorization"] = f"Bearer {token}"
    content = kwargs.get("data")
    return httpx.request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=headers, cookies=kwargs.get("cookies"),
        json=kwargs.get("json"), content=content if isinstance(content, (bytes, str)) else None,
        data=content if isinstance(content, dict) else None, timeout=30,
    )


def test_no_server_errors(api: ApiHub, fuzz_schema: Any) -> None:
    """Every operation, generated requests sent as an admin (every route) and a butler (scoped)."""
    tokens = {user: api.token(user) for user in ("root", "bella")}
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert len(operations) > 30

    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url=api.url)
            for user, token in tokens.items():
                response = _send(kwargs, token)
                where = f"{user}: {case.method} {case.formatted_path} {kwargs.get('params')}"
                assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:500]}"
                case.validate_response(response, checks=[not_a_server_error])
                if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
                    assert set(response.json()["error"]) == {"code", "message", "detail"}, f"{where}: {response.text}"

        check()
