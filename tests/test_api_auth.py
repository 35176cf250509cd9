"""Auth and scope through HTTP against the running hub: roles × sites, token expiry, refresh."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from api.security import API_TOKEN_PREFIX
from tests.api_support import PASSWORD, ApiHub, start_api_hub
from tests.support import create_database, drop_database


@pytest.fixture(scope="module")
def api(pg_server, broker, tmp_path_factory) -> Iterator[ApiHub]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    try:
        yield from start_api_hub(url, broker.url, tmp_path_factory.mktemp("api-auth"), client_id="hub-api-auth")
    finally:
        drop_database(pg_server.admin_url, name)


def _alarm(api: ApiHub, site: str, device: int | None, rule: str) -> int:
    rows = api.sql(
        """INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, raised_at)
           VALUES (%s, %s, %s, %s, 'test', 'major', 'test alarm', now()) RETURNING id""",
        rule, site, device, f"{rule}:{device}",
    )
    return int(rows[0][0])


def test_open_routes_need_no_token_and_everything_else_does(api: ApiHub) -> None:
    with api.client() as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/docs").status_code == 200
        paths = c.get("/openapi.json").json()["paths"]
        for path, methods in paths.items():
            if path == "/healthz" or path in ("/auth/token", "/auth/refresh"):
                continue
            concrete = path.replace("{device_id}", "1").replace("{site_id}", "demo").replace("{alarm_id}", "1")
            concrete = concrete.replace("{command_id}", "x").replace("{pass_id}", "1").replace("{code}", "abcdef")
            concrete = concrete.replace("{user_id}", "1").replace("{token_id}", "1")
            for method in methods:
                r = c.request(method.upper(), concrete)
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json()["error"]["code"] == "unauthorized"
                assert r.headers["www-authenticate"] == "Bearer"


def test_login_wrong_password_and_unknown_user_look_the_same(api: ApiHub) -> None:
    with api.client() as c:
        a = c.post("/auth/token", data={"username": "olga", "password": "wrong password"})
        b = c.post("/auth/token", data={"username": "nobody", "password": "wrong password"})
    assert a.status_code == b.status_code == 401
    assert a.json() == b.json()
    failed = api.sql("SELECT actor, origin FROM audit_log WHERE action = 'auth.login_failed' AND actor = 'olga'")
    assert failed and failed[0][1] == "127.0.0.1"


def test_expired_and_forged_tokens_are_refused(api: ApiHub) -> None:
    now = datetime.now(UTC)
    expired = jwt.encode({"sub": "1", "typ": "access", "iat": now - timedelta(hours=1), "exp": now - timedelta(seconds=1)},
                         "test-secret-key-not-for-production", algorithm="HS256")
    forged = jwt.encode({"sub": "1", "typ": "access", "exp": now + timedelta(hours=1)}, "another-key-of-enough-length-for-hs256!", algorithm="HS256")
    for token in (expired, forged, "garbage", API_TOKEN_PREFIX + "nope"):
        with api.client(token=token) as c:
            r = c.get("/sites")
            assert r.status_code == 401, token


def test_short_lived_access_token_expires_and_refresh_rotates(pg_server, broker, tmp_path) -> None:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    try:
        for hub in start_api_hub(url, broker.url, tmp_path, client_id="hub-api-ttl", api={"access_ttl_s": 3}):
            with httpx.Client(base_url=hub.url) as c:
                pair = c.post("/auth/token", data={"username": "olga", "password": PASSWORD}).json()
                assert pair["expires_in"] == 3
                auth = {"Authorization": f"Bearer {pair['access_token']}"}
                assert c.get("/sites", headers=auth).status_code == 200
                time.sleep(4.1)
                assert c.get("/sites", headers=auth).status_code == 401
                new = c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
                assert new.status_code == 200
                assert c.get("/sites", headers={"Authorization": f"Bearer {new.json()['access_token']}"}).status_code == 200
                # A refresh token works once; reuse signs the user out everywhere.
                assert c.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 401
                assert c.post("/auth/refresh", json={"refresh_token": new.json()["refresh_token"]}).status_code == 401
    finally:
        drop_database(pg_server.admin_url, name)


def test_api_tokens_for_machines_are_hashed_at_rest_and_revocable(api: ApiHub) -> None:
    uid = api.sql("SELECT id FROM api_users WHERE username = 'bella'")[0][0]
    with api.client("root") as admin:
        r = admin.post("/auth/api-tokens", json={"user_id": uid, "name": "gate simulator"})
        assert r.status_code == 201
        token, token_id = r.json()["token"], r.json()["id"]
    assert token.startswith(API_TOKEN_PREFIX)
    stored = api.sql("SELECT token_hash FROM api_tokens WHERE id = %s", token_id)[0][0]
    assert token not in stored and len(stored) == 64
    with api.client(token=token) as machine:
        me = machine.get("/auth/me").json()
        assert (me["username"], me["role"], me["via"]) == ("bella", "butler", "api_token")
    with api.client("olga") as operator:
        assert operator.post("/auth/api-tokens", json={"user_id": uid, "name": "x"}).status_code == 403
    with api.client("root") as admin:
        assert admin.delete(f"/auth/api-tokens/{token_id}").status_code == 204
    with api.client(token=token) as machine:
        assert machine.get("/auth/me").status_code == 401


def test_sites_and_devices_are_filtered_by_scope(api: ApiHub) -> None:
    with api.client("rita") as c:
        assert [s["id"] for s in c.get("/sites").json()] == ["riverside"]
        devices = c.get("/devices").json()["items"]
        assert {d["site_id"] for d in devices} == {"riverside"}
        assert c.get("/sites/demo").status_code == 404  # out of scope looks like missing
        assert c.get("/sites/nowhere").status_code == 404
        assert c.get("/devices", params={"site": "demo"}).status_code == 403
        assert c.get("/devices", params={"site": "nowhere"}).status_code == 403  # no existence leak
        demo_dev = api.device_id("demo", "el-b1-1")
        missing = c.get("/devices/999999")
        hidden = c.get(f"/devices/{demo_dev}")
        assert hidden.status_code == missing.status_code == 404
        assert hidden.json() == missing.json() | {"error": hidden.json()["error"]}
        assert hidden.json()["error"]["message"] == missing.json()["error"]["message"]
    with api.client("root") as c:
        assert {s["id"] for s in c.get("/sites").json()} == {"demo", "riverside"}


# (method, path template, body, {role: expected status}); {dev} is a demo device, {rdev} a riverside one.
MATRIX = [
    ("GET", "/dead-letters", None, {"root": 200, "olga": 403, "tom": 403, "bella": 403, "rita": 403}),
    ("GET", "/audit", None, {"root": 200, "olga": 403, "tom": 403, "bella": 403, "rita": 403}),
    ("GET", "/users", None, {"root": 200, "olga": 403, "tom": 403, "bella": 403, "rita": 403}),
    ("GET", "/devices/{dev}", None, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 404}),
    ("GET", "/devices/{rdev}", None, {"root": 200, "olga": 404, "tom": 404, "bella": 404, "rita": 200}),
    ("GET", "/devices/{dev}/history?metric=floor", None, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 404}),
    ("GET", "/sites/demo/buildings", None, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 404}),
    ("GET", "/alarms/{alarm}", None, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 404}),
    ("POST", "/alarms/{alarm}/comment", {"note": "looking"}, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 404}),
    ("POST", "/alarms/{alarm}/shelve", {"until": "+1h", "reason": "maintenance"}, {"root": 200, "olga": 200, "tom": 403, "bella": 403, "rita": 404}),
    ("POST", "/visitor-passes", "pass", {"root": 201, "olga": 201, "tom": 403, "bella": 201, "rita": 403}),
    ("GET", "/events?site=demo", None, {"root": 200, "olga": 200, "tom": 200, "bella": 200, "rita": 403}),
    ("GET", "/alarms?site=riverside", None, {"root": 200, "olga": 403, "tom": 403, "bella": 403, "rita": 200}),
]


@pytest.mark.parametrize("user", ["root", "olga", "tom", "bella", "rita"])
@pytest.mark.parametrize(("method", "path", "body", "expected"), MATRIX, ids=[f"{m} {p}" for m, p, *_ in MATRIX])
def test_role_and_scope_matrix(api: ApiHub, user: str, method: str, path: str, body: object, expected: dict[str, int]) -> None:
    alarm = _alarm(api, "demo", api.device_id("demo", "el-b1-1"), f"matrix-{user}-{method}-{path}")
    url = path.format(dev=api.device_id("demo", "el-b1-1"), rdev=api.device_id("riverside", "el-r1"), alarm=alarm)
    now = datetime.now(UTC)
    if body == "pass":
        body = {"site_id": "demo", "gates": ["gate-north"], "visitor": "Mr Li", "valid_from": now.isoformat(),
                "valid_until": (now + timedelta(hours=2)).isoformat(), "max_uses": 2}
    elif isinstance(body, dict) and body.get("until") == "+1h":
        body = {**body, "until": (now + timedelta(hours=1)).isoformat()}
    with api.client(user) as c:
        r = c.request(method, url, json=body)
    assert r.status_code == expected[user], r.text
    if r.status_code >= 400:
        assert set(r.json()["error"]) == {"code", "message", "detail"}


def test_alarm_actions_write_history_and_audit(api: ApiHub) -> None:
    alarm = _alarm(api, "demo", api.device_id("demo", "gate-north"), "alarm-actions")
    with api.client("olga") as c:
        r = c.post(f"/alarms/{alarm}/acknowledge", json={"note": "on it"})
        assert r.status_code == 200 and r.json()["state"] == "acknowledged"
        assert r.json()["acknowledged_by"] == "olga"
        assert c.post(f"/alarms/{alarm}/acknowledge", json={}).status_code == 409
        assert c.post(f"/alarms/{alarm}/clear", json={"note": "reset on site"}).json()["state"] == "cleared"
        assert c.post(f"/alarms/{alarm}/comment", json={"note": "late"}).status_code == 409
        detail = c.get(f"/alarms/{alarm}").json()
    assert [(h["from_state"], h["to_state"], h["actor"]) for h in detail["history"]] == [
        ("active", "acknowledged", "olga"), ("acknowledged", "cleared", "olga")]
    audit = api.sql("SELECT action, actor, origin, before->>'state', after->>'state' FROM audit_log WHERE target = %s ORDER BY id",
                    f"alarm:{alarm}")
    assert audit == [("alarm.acknowledge", "olga", "127.0.0.1", "active", "acknowledged"),
                     ("alarm.clear", "olga", "127.0.0.1", "acknowledged", "cleared")]


def test_alarm_list_filters_and_cursor_pagination(api: ApiHub) -> None:
    ids = [_alarm(api, "demo", None, f"page-{i}") for i in range(7)]
    seen: list[int] = []
    with api.client("olga") as c:
        cursor = None
        while True:
            params: dict[str, object] = {"limit": 3, "kind": "test", "open": True}
            if cursor:
                params["cursor"] = cursor
            page = c.get("/alarms", params=params).json()
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert set(ids) <= set(seen) and len(seen) == len(set(seen))
        bad = c.get("/alarms", params={"cursor": "not-a-cursor"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid"
        bad = c.get("/alarms", params={"state": "exploded"})
        assert bad.status_code == 422 and "state" in bad.json()["error"]["message"]


def test_users_admin_and_audit(api: ApiHub) -> None:
    with api.client("root") as c:
        r = c.post("/users", json={"username": "newbie", "password": "long enough pw", "role": "technician", "sites": ["demo"]})
        assert r.status_code == 201
        assert "password" not in r.text
        assert c.post("/users", json={"username": "newbie", "password": "long enough pw", "role": "technician",
                                      "sites": ["demo"]}).status_code == 409
        uid = r.json()["id"]
        assert c.patch(f"/users/{uid}", json={"active": False}).json()["active"] is False
        audit = c.get("/audit", params={"target": f"user:{uid}"}).json()["items"]
    assert [a["action"] for a in audit] == ["user.update", "user.create"]
    assert "long enough pw" not in str(audit)
    with httpx.Client(base_url=api.url) as c:
        assert c.post("/auth/token", data={"username": "newbie", "password": "long enough pw"}).status_code == 401


def test_bad_input_reaching_the_database_is_a_4xx(api: ApiHub) -> None:
    alarm = _alarm(api, "demo", None, "nul-bytes")
    with api.client("root") as c:
        r = c.post(f"/alarms/{alarm}/comment", json={"note": "bad \x00 byte"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid"
        assert c.get("/audit", params={"actor": "a\x00b"}).status_code == 422
        assert c.get("/devices/99999999999").status_code == 422
        assert c.post("/visitor-passes", json={"site_id": "demo", "gates": ["gate-north"], "visitor": "x",
                                               "valid_from": "0001-01-01T00:00:00Z", "valid_until": "9999-12-31T00:00:00Z"}
                      ).status_code == 422


def test_password_guessing_is_throttled_per_user(api: ApiHub) -> None:
    api.sql("INSERT INTO api_users (username, password_hash, role, sites) SELECT 'victim', password_hash, 'butler', '{demo}' "
            "FROM api_users WHERE username = 'bella'")
    with httpx.Client(base_url=api.url) as c:
        codes = [c.post("/auth/token", data={"username": "victim", "password": f"guess {i}"}).status_code for i in range(11)]
        assert codes == [401] * 10 + [429]
        assert c.post("/auth/token", data={"username": "victim", "password": PASSWORD}).status_code == 429
        assert c.post("/auth/token", data={"username": "bella", "password": PASSWORD}).status_code == 200
