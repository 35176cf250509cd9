"""Work orders through HTTP against the running hub and the real database: the lifecycle by the
right people, role × scope rules, the alarm closing rule, idempotent accept, rating, attendance,
on-duty view, the SSE stream, and linking API users to staff."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest

from hub.dispatch.engine import dispatch_alarm
from hub.dispatch.policy import active_policy
from tests.api_support import ApiHub, add_users, start_api_hub
from tests.support import ROOT, create_database, drop_database

# username -> (role, sites, staff member); tom is linked over HTTP in the fixture.
STAFF_USERS: dict[str, tuple[str, list[str], str | None]] = {
    "sam": ("technician", ["demo"], "tech-sun"),
    "li": ("technician", ["demo"], "sup-li"),          # the site's supervisor
    "far": ("technician", ["riverside"], "tech-zhou"),  # scoped elsewhere, but demo work is assigned to him
}


@pytest.fixture(scope="module")
def api(pg_server, broker, tmp_path_factory) -> Iterator[ApiHub]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    migrate(url)
    try:
        for hub in start_api_hub(url, broker.url, tmp_path_factory.mktemp("api-wo"), client_id="hub-api-wo"):
            add_users(url, {u: (role, sites) for u, (role, sites, _) in STAFF_USERS.items()})
            for user, (_, _, staff) in STAFF_USERS.items():
                hub.sql("UPDATE api_users SET staff_id = %s WHERE username = %s", staff, user)
            hub.sql("UPDATE api_users SET staff_id = 'butler-wang' WHERE username = 'bella'")
            tom = hub.sql("SELECT id FROM api_users WHERE username = 'tom'")[0][0]
            with hub.client("root") as c:
                r = c.patch(f"/users/{tom}", json={"staff_id": "tech-liu"})
                assert r.status_code == 200 and r.json()["staff_id"] == "tech-liu", r.text
            yield hub
    finally:
        drop_database(pg_server.admin_url, name)


def _create(api: ApiHub, user: str = "bella", **body: Any) -> dict[str, Any]:
    payload = {"site_id": "demo", "kind": "repair", "title": "Leaking pipe in 3-1201", **body}
    with api.client(user) as c:
        r = c.post("/work-orders", json=payload)
    assert r.status_code == 201, r.text
    return r.json()


def _post(api: ApiHub, user: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    with api.client(user) as c:
        return c.post(path, json=body or {})


def _ok(api: ApiHub, user: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = _post(api, user, path, body)
    assert r.status_code in (200, 201), (user, path, r.status_code, r.text)
    return r.json()


def _assigned(api: ApiHub, staff: str, **body: Any) -> int:
    order = _create(api, **body)
    _ok(api, "olga", f"/work-orders/{order['id']}/assign", {"staff_id": staff})
    return int(order["id"])


def _alarm_order(api: ApiHub) -> tuple[int, int]:
    """An entrapment alarm on a demo lift, dispatched as the dispatcher would: (alarm id, order id)."""
    device = api.device_id("demo", "el-b1-1")
    alarm = api.sql("""INSERT INTO alarms (rule_id, site_id, device_id, scope_key, kind, severity, title, raised_at)
                       VALUES ('entrapment', 'demo', %s, gen_random_uuid()::text, 'entrapment', 'critical',
                               'Passenger trapped', now()) RETURNING id""", device)[0][0]
    with psycopg.connect(api.db_url) as conn:
        order = dispatch_alarm(conn, alarm, policy=active_policy())
    assert order is not None
    _ok(api, "olga", f"/work-orders/{order}/assign", {"staff_id": "tech-liu"})
    _ok(api, "tom", f"/work-orders/{order}/accept")
    _ok(api, "tom", f"/work-orders/{order}/arrive")
    return alarm, order


def test_resident_repair_lifecycle_by_the_right_people(api: ApiHub) -> None:
    order = _create(api, reporter="Ms Wu, 3-1201", location="kitchen", building_id="b1")
    oid = order["id"]
    assert order["kind"] == "repair" and order["reporter"] == "Ms Wu, 3-1201" and order["grid_id"] == "north"
    assert order["state"] in ("created", "assigned")  # the roster rule assigns at once if someone is on duty
    assert _ok(api, "olga", f"/work-orders/{oid}/assign", {"staff_id": "tech-liu", "note": "plumbing"})["assignee"] == "tech-liu"
    assert _ok(api, "tom", f"/work-orders/{oid}/accept")["state"] == "accepted"
    assert _ok(api, "tom", f"/work-orders/{oid}/arrive", {"note": "at the door"})["state"] == "on_site"
    ev = _ok(api, "tom", f"/work-orders/{oid}/evidence", {"kind": "photo", "ref": "s3://evidence/wo/1/after.jpg",
                                                          "note": "new seal fitted"})
    assert ev["ref"] == "s3://evidence/wo/1/after.jpg" and ev["actor"] == "tom"
    assert _post(api, "tom", f"/work-orders/{oid}/evidence", {"kind": "photo"}).status_code == 422  # a photo needs its ref
    assert _ok(api, "tom", f"/work-orders/{oid}/resolve", {"note": "fixed"})["state"] == "resolved"
    assert _post(api, "bella", f"/work-orders/{oid}/verify").status_code == 403
    assert _ok(api, "olga", f"/work-orders/{oid}/verify")["state"] == "verified"
    rated = _ok(api, "bella", f"/work-orders/{oid}/rating", {"rating": 4, "comment": "quick and tidy"})
    assert (rated["rating"], rated["rating_comment"]) == (4, "quick and tidy")
    assert _ok(api, "olga", f"/work-orders/{oid}/close")["state"] == "closed"
    assert _ok(api, "bella", f"/work-orders/{oid}/reopen", {"note": "drips again"})["reopen_count"] == 1

    with api.client("olga") as c:
        detail = c.get(f"/work-orders/{oid}").json()
    steps = [(t["to_state"], t["actor"]) for t in detail["transitions"] if t["actor"] != "dispatch"]
    assert steps[0] == ("created", "bella")
    assert steps[-7:] == [("assigned", "olga"), ("accepted", "tom"), ("on_site", "tom"), ("resolved", "tom"),
                          ("verified", "olga"), ("closed", "olga"), ("reopened", "bella")]
    assert {t["origin"] for t in detail["transitions"] if t["actor"] != "dispatch"} == {"api:127.0.0.1"}
    assert [e["kind"] for e in detail["evidence"]] == ["photo"]
    audited = api.sql("SELECT action, actor, origin FROM audit_log WHERE target = %s ORDER BY id", f"work_order:{oid}")
    actions = [a for a, actor, _ in audited if actor != "dispatch"]
    assert actions == ["work_order.create", "work_order.assigned", "work_order.accepted", "work_order.on_site",
                       "work_order.evidence", "work_order.resolved", "work_order.verified", "work_order.rate",
                       "work_order.closed", "work_order.reopened"]


def test_list_filters_and_pagination(api: ApiHub) -> None:
    made = [_create(api, kind="complaint", title=f"Noise {i}", priority="p4")["id"] for i in range(3)]
    with api.client("olga") as c:
        page = c.get("/work-orders", params={"kind": "complaint", "priority": "p4", "limit": 2}).json()
        assert [o["id"] for o in page["items"]] == sorted(made, reverse=True)[:2]
        rest = c.get("/work-orders", params={"kind": "complaint", "priority": "p4", "limit": 2,
                                             "cursor": page["next_cursor"]}).json()
        assert [o["id"] for o in rest["items"]] == [min(made)] and rest["next_cursor"] is None
        assert c.get("/work-orders", params={"state": "bogus"}).status_code == 422
        assert c.get("/work-orders", params={"cursor": "nope"}).status_code == 422
        assert c.get("/work-orders", params={"mine": "true"}).status_code == 422  # olga is no staff member
    oid = _assigned(api, "tech-sun")
    with api.client("sam") as c:
        mine = c.get("/work-orders", params={"mine": "true", "open": "true"}).json()["items"]
        assert oid in [o["id"] for o in mine] and {o["assignee"] for o in mine} == {"tech-sun"}
    with api.client("root") as c:
        assert [o["id"] for o in c.get("/work-orders", params={"assignee": "tech-sun", "site": "demo"}).json()["items"]][0] == oid


def test_roles_get_403_and_other_sites_404(api: ApiHub) -> None:
    oid = _assigned(api, "tech-liu")
    # creating: technicians raise no resident requests; butlers no manual maintenance
    assert _post(api, "tom", "/work-orders", {"site_id": "demo", "kind": "repair", "title": "x"}).status_code == 403
    assert _post(api, "bella", "/work-orders", {"site_id": "demo", "kind": "maintenance", "title": "x"}).status_code == 403
    assert _post(api, "olga", "/work-orders", {"site_id": "demo", "kind": "alarm", "title": "x"}).status_code == 422
    assert _post(api, "rita", "/work-orders", {"site_id": "demo", "kind": "repair", "title": "x"}).status_code == 403
    assert _create(api, "olga", kind="maintenance", title="Pump service")["kind"] == "maintenance"
    # a role without the permission: 403 whatever the object, even a missing one
    for oid_or_missing in (oid, 999_999_999):
        r = _post(api, "tom", f"/work-orders/{oid_or_missing}/assign", {"staff_id": "tech-liu"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert _post(api, "tom", f"/work-orders/{oid_or_missing}/rating", {"rating": 5}).status_code == 403
    # another site's operator: 404 exactly like a missing order
    with api.client("rita") as c:
        missing = c.get("/work-orders/999999999")
        hidden = c.get(f"/work-orders/{oid}")
        assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
        assert c.post(f"/work-orders/{oid}/assign", json={"staff_id": "tech-liu"}).json() == missing.json()
        assert c.post(f"/work-orders/{oid}/cancel", json={}).json() == missing.json()
        assert c.get("/work-orders", params={"site": "demo"}).status_code == 403
        assert c.get("/work-orders", params={"site": "nowhere"}).status_code == 403
        assert all(o["site_id"] == "riverside" for o in c.get("/work-orders").json()["items"])
    # only the assignee accepts, arrives, resolves
    assert _post(api, "sam", f"/work-orders/{oid}/accept").status_code == 403
    r = _post(api, "root", f"/work-orders/{oid}/accept")
    assert r.status_code == 403 and "not linked to a staff member" in r.json()["error"]["message"]
    _ok(api, "tom", f"/work-orders/{oid}/accept")
    assert _post(api, "sam", f"/work-orders/{oid}/arrive").status_code == 403
    _ok(api, "tom", f"/work-orders/{oid}/arrive")
    assert _post(api, "olga", f"/work-orders/{oid}/resolve").status_code == 403
    _ok(api, "tom", f"/work-orders/{oid}/resolve")
    # verify: desk or the site's supervisor, not the technician who did the work
    assert _post(api, "tom", f"/work-orders/{oid}/verify").status_code == 403
    assert _ok(api, "li", f"/work-orders/{oid}/verify")["state"] == "verified"
    # cancel: desk only; butlers may reopen resident orders but not maintenance
    other = _assigned(api, "tech-liu")
    assert _post(api, "tom", f"/work-orders/{other}/cancel").status_code == 403
    assert _post(api, "bella", f"/work-orders/{other}/cancel").status_code == 403
    assert _ok(api, "olga", f"/work-orders/{other}/cancel")["state"] == "cancelled"
    maint = _create(api, "olga", kind="maintenance", title="Fan belt")["id"]
    _ok(api, "olga", f"/work-orders/{maint}/assign", {"staff_id": "tech-liu"})
    for step in ("accept", "arrive", "resolve"):
        _ok(api, "tom", f"/work-orders/{maint}/{step}")
    assert _post(api, "bella", f"/work-orders/{maint}/reopen").status_code == 403
    assert _ok(api, "olga", f"/work-orders/{maint}/reopen")["state"] == "reopened"


def test_own_orders_are_visible_outside_site_scope(api: ApiHub) -> None:
    """A user sees the orders assigned to their staff member even on a site outside their scope."""
    mine = _assigned(api, "tech-zhou")
    not_mine = _assigned(api, "tech-liu")
    with api.client("far") as c:
        assert c.get(f"/work-orders/{mine}").status_code == 200
        assert c.get(f"/work-orders/{not_mine}").status_code == 404
        listed = {o["id"] for o in c.get("/work-orders").json()["items"]}
        assert mine in listed and not_mine not in listed
        assert c.post(f"/work-orders/{mine}/accept", json={}).json()["state"] == "accepted"
        assert c.post(f"/work-orders/{not_mine}/accept", json={}).status_code == 404


def test_alarm_order_resolves_only_after_the_alarm_clears_or_with_override(api: ApiHub) -> None:
    alarm, order = _alarm_order(api)
    r = _post(api, "tom", f"/work-orders/{order}/resolve", {"note": "car moving"})
    assert r.status_code == 409
    err = r.json()["error"]
    assert err["code"] == "closure_refused" and f"alarm {alarm} has not cleared" in err["message"]
    assert "override_reason" in err["message"]
    with api.client("olga") as c:
        assert c.get(f"/work-orders/{order}").json()["state"] == "on_site"
    done = _ok(api, "tom", f"/work-orders/{order}/resolve", {"override_reason": "sensor stuck; car level, doors open"})
    assert done["state"] == "resolved" and done["override_reason"] == "sensor stuck; car level, doors open"

    alarm2, order2 = _alarm_order(api)
    assert _post(api, "tom", f"/work-orders/{order2}/resolve").status_code == 409
    assert _ok(api, "olga", f"/alarms/{alarm2}/clear", {"note": "car level, doors open"})["state"] == "cleared"
    cleared = _ok(api, "tom", f"/work-orders/{order2}/resolve")
    assert cleared["state"] == "resolved" and cleared["override_reason"] is None


def test_invalid_steps_are_409(api: ApiHub) -> None:
    oid = _assigned(api, "tech-liu")
    r = _post(api, "tom", f"/work-orders/{oid}/resolve")  # assigned → resolved skips accept and arrival
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    assert "cannot go from assigned to resolved" in r.json()["error"]["message"]
    assert _post(api, "olga", f"/work-orders/{oid}/assign", {"staff_id": "lift-nobody"}).status_code == 422
    assert _post(api, "olga", "/work-orders", {"site_id": "demo", "kind": "repair", "title": "x",
                                               "device_id": api.device_id("demo", "el-b1-1") + 100000}).status_code == 404


def test_double_accept_is_idempotent_even_when_concurrent(api: ApiHub) -> None:
    oid = _assigned(api, "tech-liu")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _post(api, "tom", f"/work-orders/{oid}/accept"), range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    assert {a.json()["accepted_at"] for a in answers} == {answers[0].json()["accepted_at"]}
    accepted = api.sql("SELECT count(*) FROM work_order_transitions WHERE order_id = %s AND to_state = 'accepted'", oid)
    assert accepted == [(1,)]
    assert _ok(api, "tom", f"/work-orders/{oid}/arrive")["state"] == "on_site"
    assert _ok(api, "tom", f"/work-orders/{oid}/arrive")["state"] == "on_site"
    assert _post(api, "tom", f"/work-orders/{oid}/accept").status_code == 409  # going back is not a repeat


def test_rating_only_on_resident_orders_once_resolved(api: ApiHub) -> None:
    maint = _create(api, "olga", kind="maintenance", title="Lift 15-day service")["id"]
    r = _post(api, "olga", f"/work-orders/{maint}/rating", {"rating": 5})
    assert r.status_code == 422 and r.json()["error"]["code"] == "not_rateable"
    praise = _create(api, kind="praise", title="Thanks to the night guard")["id"]
    r = _post(api, "bella", f"/work-orders/{praise}/rating", {"rating": 5})
    assert r.status_code == 422 and "once resolved" in r.json()["error"]["message"]
    assert _post(api, "bella", f"/work-orders/{praise}/rating", {"rating": 6}).status_code == 422
    assert _post(api, "bella", f"/work-orders/{praise}/rating", {"rating": 0}).status_code == 422
    assert api.sql("SELECT rating FROM work_orders WHERE id = %s", praise) == [(None,)]
    # praise is feedback: the desk may close it straight away
    assert _ok(api, "olga", f"/work-orders/{praise}/close")["state"] == "closed"
    assert _ok(api, "bella", f"/work-orders/{praise}/rating", {"rating": 5})["rating"] == 5


def test_attendance_and_who_is_on_duty(api: ApiHub) -> None:
    assert _post(api, "tom", "/staff/tech-liu/check-in", {"site_id": "demo"}).status_code == 201
    assert _post(api, "tom", "/staff/butler-wang/check-in", {"site_id": "demo"}).status_code == 403
    assert _post(api, "tom", "/staff/tech-liu/check-in", {"site_id": "riverside"}).status_code == 403
    assert _post(api, "tom", "/staff/tech-liu/check-in", {"site_id": "demo", "at": "2030-01-01T00:00:00Z"}).status_code == 422
    assert _post(api, "tom", "/staff/tech-liu/check-in", {"site_id": "demo", "at": "2026-01-01T00:00:00"}).status_code == 422
    out = _ok(api, "olga", "/staff/butler-zhao/check-out", {"site_id": "demo"})
    assert (out["kind"], out["source"]) == ("out", "api")
    missing = _post(api, "rita", "/staff/nobody/check-in", {"site_id": "riverside"})
    hidden = _post(api, "rita", "/staff/tech-liu/check-in", {"site_id": "riverside"})
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    with api.client("tom") as c:
        log = c.get("/staff/tech-liu/attendance").json()
        assert [(e["kind"], e["source"], e["actor"]) for e in log] == [("in", "api", "tom")]
        assert c.get("/staff/butler-zhao/attendance").status_code == 403
    with api.client("olga") as c:
        duty = {d["staff_id"]: d for d in c.get("/duty", params={"site": "demo"}).json()}
        assert duty["tech-liu"]["attendance"] == "in" and duty["butler-zhao"]["attendance"] == "out"
        assert duty["butler-zhao"]["available"] is False
        assert duty["tech-liu"]["open_orders"] >= 1
        assert all(d["available"] for d in c.get("/duty", params={"available": "true"}).json())
    with api.client("rita") as c:
        assert c.get("/duty", params={"site": "demo"}).status_code == 403
        assert all(d["site_id"] == "riverside" for d in c.get("/duty").json())
    audited = api.sql("SELECT actor, action FROM audit_log WHERE action LIKE 'attendance.%%' ORDER BY id")
    assert audited == [("tom", "attendance.in"), ("olga", "attendance.out")]


def _listen(api: ApiHub, user: str, lines: list[str], ready: threading.Event, stop_on: str) -> threading.Thread:
    def run() -> None:
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.token(user)}"}, timeout=30) as c, \
                c.stream("GET", "/streams/work-orders") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                ready.set()
                lines.append(line)
                if stop_on in line:
                    return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_work_order_stream_is_filtered_by_scope(api: ApiHub) -> None:
    olga: list[str] = []
    far: list[str] = []
    ready_olga, ready_far = threading.Event(), threading.Event()
    t1 = _listen(api, "olga", olga, ready_olga, '"state":"cancelled"')
    t2 = _listen(api, "far", far, ready_far, '"state":"cancelled"')
    assert ready_olga.wait(10) and ready_far.wait(10)
    time.sleep(0.3)
    river = _create(api, "rita", site_id="riverside", kind="complaint", title="Barrier noise")["id"]
    demo = _create(api, title="Stream test")["id"]
    _ok(api, "olga", f"/work-orders/{demo}/assign", {"staff_id": "tech-zhou"})
    _ok(api, "olga", f"/work-orders/{demo}/cancel")
    t1.join(10)
    t2.join(10)
    olga_ids = {int(ln.split('"id":')[1].split(",")[0]) for ln in olga if ln.startswith("data:")}
    assert demo in olga_ids and river not in olga_ids, olga
    far_data = [ln for ln in far if ln.startswith("data:")]
    # far (riverside scope, staff tech-zhou) sees riverside orders and the demo order once it is his
    assert any(f'"id":{river},' in ln for ln in far_data), far
    demo_states = [ln.split('"state":"')[1].split('"')[0] for ln in far_data if f'"id":{demo},' in ln]
    assert demo_states == ["assigned", "cancelled"], far


def test_users_act_as_staff_members(api: ApiHub) -> None:
    with api.client("tom") as c:
        assert c.get("/auth/me").json()["staff_id"] == "tech-liu"
    user = api.sql("SELECT id FROM api_users WHERE username = 'sam'")[0][0]
    with api.client("root") as c:
        r = c.patch(f"/users/{user}", json={"staff_id": "no-such-person"})
        assert r.status_code == 422 and "no active staff member" in r.json()["error"]["message"]
        taken = c.patch(f"/users/{user}", json={"staff_id": "tech-liu"})
        assert taken.status_code == 409  # one API user per staff member
        assert c.patch(f"/users/{user}", json={"role": "technician"}).json()["staff_id"] == "tech-sun"  # kept
    env = {**os.environ, "HUB_DATABASE_URL": api.db_url, "HUB_NEW_PASSWORD": "a fine password"}
    done = subprocess.run([sys.executable, "-m", "hub", "users", "add", "liu-phone", "--role", "technician",
                           "--sites", "demo", "--staff", "lift-co"], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "staff lift-co" in done.stdout
    assert api.sql("SELECT staff_id FROM api_users WHERE username = 'liu-phone'") == [("lift-co",)]
    bad = subprocess.run([sys.executable, "-m", "hub", "users", "add", "ghost", "--role", "technician", "--sites", "demo",
                          "--staff", "nobody"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "--staff 'nobody'" in bad.stderr
    audited = api.sql("SELECT after ->> 'staff_id' FROM audit_log WHERE action = 'user.create' AND after ->> 'username' = 'liu-phone'")
    assert audited == [("lift-co",)]


ORDER_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    ("assign", {"staff_id": "tech-liu"}), ("accept", {}), ("arrive", {}), ("resolve", {}), ("verify", {}),
    ("close", {}), ("cancel", {}), ("reopen", {}), ("evidence", {"kind": "note", "note": "seen"}),
    ("rating", {"rating": 3}),
]


@pytest.mark.parametrize(("action", "body"), ORDER_ACTIONS, ids=[a for a, _ in ORDER_ACTIONS])
def test_every_order_action_hides_other_sites_orders(api: ApiHub, action: str, body: dict[str, Any]) -> None:
    """rita (operator of riverside): an order of demo is exactly as missing, and nothing changes."""
    oid = _assigned(api, "tech-liu")
    before = api.sql("SELECT state, assignee, rating FROM work_orders WHERE id = %s", oid)
    hidden = _post(api, "rita", f"/work-orders/{oid}/{action}", body)
    missing = _post(api, "rita", f"/work-orders/999999999/{action}", body)
    assert hidden.status_code == missing.status_code == 404, (hidden.text, missing.text)
    assert hidden.json() == missing.json() == {"error": {"code": "not_found", "message": "work order not found",
                                                         "detail": None}}
    assert api.sql("SELECT state, assignee, rating FROM work_orders WHERE id = %s", oid) == before
    assert api.sql("SELECT count(*) FROM audit_log WHERE target = %s AND actor = 'rita'", f"work_order:{oid}") == [(0,)]


def test_leave_is_managed_by_the_desk_and_shows_on_duty(api: ApiHub) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    window = {"starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": (now + timedelta(hours=1)).isoformat(),
              "reason": "sick"}
    assert _post(api, "tom", "/staff/tech-sun/leave", window).status_code == 403
    hidden, missing = _post(api, "rita", "/staff/tech-sun/leave", window), _post(api, "rita", "/staff/nobody/leave", window)
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()
    backwards = {**window, "starts_at": window["ends_at"], "ends_at": window["starts_at"]}
    assert _post(api, "olga", "/staff/tech-sun/leave", backwards).status_code == 422
    assert _post(api, "olga", "/staff/tech-sun/leave", {**window, "starts_at": "2026-01-01T00:00:00"}).status_code == 422
    leave = _ok(api, "olga", "/staff/tech-sun/leave", window)
    assert (leave["staff_id"], leave["reason"], leave["created_by"]) == ("tech-sun", "sick", "olga")
    with api.client("olga") as c:
        duty = {d["staff_id"]: d for d in c.get("/duty", params={"site": "demo"}).json()}
        assert duty["tech-sun"]["on_leave"] is True and duty["tech-sun"]["available"] is False
    with api.client("sam") as c:
        assert [x["id"] for x in c.get("/staff/tech-sun/leave").json()] == [leave["id"]]
    with api.client("tom") as c:
        assert c.get("/staff/tech-sun/leave").status_code == 403
    assert _post(api, "rita", f"/staff/leave/{leave['id']}/cancel").status_code == 404
    assert _post(api, "olga", f"/staff/leave/{leave['id']}/cancel").status_code == 204
    assert _post(api, "olga", f"/staff/leave/{leave['id']}/cancel").status_code == 404
    with api.client("olga") as c:
        assert {d["staff_id"]: d for d in c.get("/duty").json()}["tech-sun"]["on_leave"] is False
    assert api.sql("SELECT actor, action FROM audit_log WHERE action LIKE 'staff.leave%%' ORDER BY id") == [
        ("olga", "staff.leave"), ("olga", "staff.leave_cancel")]


def test_notification_delivery_status_for_the_desk(api: ApiHub) -> None:
    oid = _assigned(api, "tech-liu")
    with api.client("olga") as c:
        sent = c.get(f"/work-orders/{oid}/notifications").json()
    ours = [n for n in sent if n["staff_id"] == "tech-liu" and n["event"] == "assigned"]
    assert ours and ours[-1]["channel"] == "mqtt" and ours[-1]["target"] == "facility/demo/staff/tech-liu/notify"
    assert ours[-1]["status"] == "pending"  # no deliverer runs in this hub: never reported as delivered
    with api.client("tom") as c:
        assert c.get(f"/work-orders/{oid}/notifications").status_code == 403
    with api.client("rita") as c:
        assert c.get(f"/work-orders/{oid}/notifications").status_code == 404


def test_webhook_targets_are_shown_without_path_or_credentials() -> None:
    from api.workorder_actions import shown_target

    assert shown_target("webhook", "https://ops:secret@hooks.example.com/T0/abc123?key=1") == "https://hooks.example.com"
    assert shown_target("mqtt", "facility/demo/staff/tech-liu/notify") == "facility/demo/staff/tech-liu/notify"


def test_desk_edits_descriptive_fields_audited(api: ApiHub) -> None:
    oid = _create(api, title="Leak", location="3-1201")["id"]
    with api.client("olga") as c:
        r = c.patch(f"/work-orders/{oid}", json={"title": "Leak under the sink", "location": " 3-1201 kitchen "})
        assert r.status_code == 200, r.text
        assert (r.json()["title"], r.json()["location"]) == ("Leak under the sink", "3-1201 kitchen")
        assert c.patch(f"/work-orders/{oid}", json={"title": None}).status_code == 422
        assert c.patch(f"/work-orders/{oid}", json={"title": "   "}).status_code == 422
        assert c.patch(f"/work-orders/{oid}", json={"state": "closed"}).json()["state"] != "closed"  # not editable here
    with api.client("bella") as c:
        assert c.patch(f"/work-orders/{oid}", json={"title": "x"}).status_code == 403
    with api.client("rita") as c:
        assert c.patch(f"/work-orders/{oid}", json={"title": "x"}).status_code == 404
    _ok(api, "olga", f"/work-orders/{oid}/cancel")
    with api.client("olga") as c:
        assert c.patch(f"/work-orders/{oid}", json={"title": "late edit"}).status_code == 409
    audited = api.sql("SELECT actor, before, after FROM audit_log WHERE action = 'work_order.update' AND target = %s",
                      f"work_order:{oid}")
    assert audited == [("olga", {"title": "Leak", "location": "3-1201"},
                        {"title": "Leak under the sink", "location": "3-1201 kitchen"})]
