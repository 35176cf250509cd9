"""End to end through the real broker and database: the simulator's entrapment scenario (a lift
stops between floors with two people inside, rescued ten simulated minutes later) → the real
rule engine with the default rules → one entrapment alarm, the root cause of the lift's other
alarms of the incident → one work order, the incident's only one, for the lift contractor →
notification received on the staff topic → reminder and escalation on a
compressed dispatch clock (MQTT and a webhook that fails once) → closure refused while the
alarm is open → the rescue brings the car level with its doors open, the alarm clears → resolve
allowed.

Time is compressed twice: the simulator runs `SPEED` simulated seconds per wall second (the rule
set's durations are divided by the same factor, tests/scenario_support.py), and the dispatch
SLA clock is a `ManualClock` the test moves.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest

from hub.config import parse_mqtt_url
from hub.dispatch.component import DispatchComponent
from hub.dispatch.policy import Webhook, load_policy
from hub.registry import load_registry
from hub.workorders import ClosureRefused, ManualClock, transition
from rules.component import RulesComponent
from simulators.runner import SimOptions, Simulation
from tests.hubproc import RunningHub
from tests.scenario_support import compressed_rules, unique
from tests.sims_support import clean_broker, until  # noqa: F401  (fixture)
from tests.support import mqtt_client, wait_for
from tests.workorders_support import raise_alarm, round_the_clock_registry, seed

SPEED = 20.0   # the rescue comes 600 simulated s after the stop: 30 s of wall time


class Hooks(BaseHTTPRequestHandler):
    received: list[dict[str, Any]] = []
    fail_first = True

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if Hooks.fail_first:
            Hooks.fail_first = False
            self.send_response(500)
        else:
            Hooks.received.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def webhook():
    Hooks.received, Hooks.fail_first = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hub?token=secret"
    server.shutdown()


class Inbox:
    def __init__(self, broker: Any) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt_client(broker.host, broker.port)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, json.loads(m.payload)))
        self.client.subscribe("facility/demo/staff/+/notify", qos=1)

    def of(self, staff: str, event: str, order: int | None = None) -> list[dict[str, Any]]:
        return [p for t, p in list(self.messages) if t == f"facility/demo/staff/{staff}/notify" and p["event"] == event
                and (order is None or p["order"]["id"] == order)]

    def wait(self, staff: str, event: str, order: int | None = None, timeout: float = 45) -> dict[str, Any]:
        wait_for(lambda: self.of(staff, event, order), timeout, message=f"{event} notification for {staff}")
        return self.of(staff, event, order)[0]


def _rows(db_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(sql, params).fetchall()


def _lift_at(db_url: str, at: datetime) -> dict[str, float]:
    """The lift's latest value of each metric at or before `at`."""
    rows = _rows(db_url, """SELECT DISTINCT ON (r.metric) r.metric, r.value FROM readings r
                              JOIN devices d ON d.id = r.device_id
                             WHERE d.device_id = 'el-b1-1' AND r.ts <= %s ORDER BY r.metric, r.ts DESC""", at)
    return dict(rows)


@pytest.mark.usefixtures("clean_broker")
async def test_simulated_entrapment_to_closed_order_with_escalation(fresh_db_url, broker, tmp_path, webhook):
    registry = round_the_clock_registry(tmp_path)
    t0 = datetime.now(UTC).replace(microsecond=0)
    clock = ManualClock(t0)
    policy = load_policy().model_copy(update={"webhooks": [Webhook(url=webhook, events=["escalation"])],
                                              "maintenance": []})  # planned work is tested elsewhere
    dispatch = DispatchComponent(policy=policy, clock=clock, sweep_s=0.2)
    rules = RulesComponent(rules_path=compressed_rules(tmp_path / "rules", SPEED), tick_s=0.1, grace_s=1.0, poll_s=0.3)
    inbox = Inbox(broker)
    options = SimOptions(speed=SPEED, scenario="entrapment", seed=1, modbus=False, client_prefix=unique("e2e"))
    with RunningHub(fresh_db_url, broker.url, registry, components=[rules, dispatch],
                    client_id=unique("hub-e2e"), dispatch={"max_backoff_s": 1.0}):
        async with Simulation(load_registry(registry), parse_mqtt_url(broker.url), options=options) as sim:
            lift = sim.fleet.devices[("demo", "el-b1-1")]
            entrapment = "SELECT id, raised_at, cleared_at FROM alarms WHERE kind = 'entrapment'"
            await until(lambda: _rows(fresh_db_url, entrapment), within=30, what="entrapment alarm")
            alarms = _rows(fresh_db_url, entrapment)
            assert len(alarms) == 1 and alarms[0][2] is None   # one entrapment alarm, still open
            alarm_id, raised_at, _ = alarms[0]
            order_sql = "SELECT id, assignee, state, assigned_reason FROM work_orders WHERE alarm_id = %s"
            await until(lambda: _rows(fresh_db_url, order_sql, alarm_id), within=15, what="work order")
            orders = _rows(fresh_db_url, order_sql, alarm_id)
            assert len(orders) == 1
            order_id, assignee, state, reason = orders[0]
            assert (assignee, state) == ("lift-co", "assigned")
            assert "contractor with skill elevator" in reason
            assigned = await asyncio.to_thread(inbox.wait, "lift-co", "assigned", order_id)
            assert assigned["order"]["priority"] == "p1" and assigned["order"]["alarm_id"] == alarm_id
            assert assigned["order"]["due"]["arrive"] == (raised_at + timedelta(minutes=30)).isoformat()
            # The hub's rule and the terminal's own detection agree: the car is stuck between floors.
            assert lift.phase == "stuck" and not lift.level and lift.passengers >= 2

            # Nobody accepts: 3.5 min in, the reminder; 5.5 min in, the accept SLA (5 min) is breached.
            clock.set(raised_at + timedelta(minutes=3, seconds=30))
            dispatch.kick()
            await asyncio.to_thread(inbox.wait, "lift-co", "reminder", order_id)
            assert not inbox.of("sup-li", "escalation", order_id)
            clock.set(raised_at + timedelta(minutes=5, seconds=30))
            dispatch.kick()
            escalation = await asyncio.to_thread(inbox.wait, "sup-li", "escalation", order_id)
            assert escalation["clock"] == "accept" and "breached" in escalation["message"]
            await asyncio.to_thread(inbox.wait, "lift-co", "escalation", order_id)
            hooks = lambda: [h for h in Hooks.received if h["order"]["id"] == order_id]  # noqa: E731
            await until(hooks, within=45, what="webhook delivery after one failed attempt")
            assert hooks()[0]["event"] == "escalation" and hooks()[0]["to"] == ["lift-co", "sup-li"]

            with psycopg.connect(fresh_db_url, autocommit=True) as conn:
                transition(conn, order_id, "accepted", "lift-co", "app", clock=clock)
                clock.advance(minutes=10)
                transition(conn, order_id, "on_site", "lift-co", "app", clock=clock)
                assert lift.phase == "stuck", "the test must try to resolve before the simulated rescue"
                with pytest.raises(ClosureRefused):
                    transition(conn, order_id, "resolved", "lift-co", "app", clock=clock)
            # The rescue (600 simulated s after the stop) brings the car level and opens the doors.
            await until(lambda: _rows(fresh_db_url, "SELECT cleared_at FROM alarms WHERE id = %s", alarm_id)[0][0],
                        within=60, what="entrapment alarm cleared by the rescue")
            cleared_at = _rows(fresh_db_url, "SELECT cleared_at FROM alarms WHERE id = %s", alarm_id)[0][0]
            at_clear = _lift_at(fresh_db_url, cleared_at)
            assert at_clear["door_zone"] == 1 and at_clear["door_state"] == 1   # level, doors open
            before = _rows(fresh_db_url, """SELECT r.value FROM readings r JOIN devices d ON d.id = r.device_id
                                             WHERE d.device_id = 'el-b1-1' AND r.metric = 'running'
                                               AND r.ts > %s AND r.ts < %s AND r.value = 1""", raised_at, cleared_at)
            assert before, "the car moved during the rescue without clearing the alarm"
            await asyncio.to_thread(inbox.wait, "lift-co", "alarm_cleared", order_id)
        with psycopg.connect(fresh_db_url, autocommit=True) as conn:
            clock.advance(minutes=5)
            done = transition(conn, order_id, "resolved", "lift-co", "app", note="passengers released", clock=clock)
            assert done.state == "resolved"
            wait_for(lambda: conn.execute("SELECT count(*) FROM notifications WHERE status = 'pending'").fetchone()[0] == 0,
                     15, message="outbox drained")
            hooks_sent = conn.execute("""SELECT attempts, status, last_error FROM notifications
                                          WHERE channel = 'webhook'""").fetchall()
            mqtt_rows = {r[0] for r in conn.execute("SELECT id FROM notifications WHERE channel = 'mqtt' AND order_id = %s",
                                                   (order_id,))}
            kpi = conn.execute("""SELECT accept_on_time, arrive_on_time, resolve_on_time
                                    FROM wo_kpi_orders WHERE id = %s""", (order_id,)).fetchone()
            entrapments = conn.execute("SELECT count(*) FROM alarms WHERE kind = 'entrapment'").fetchone()[0]
            children = conn.execute("SELECT kind FROM alarms WHERE parent_id = %s", (alarm_id,)).fetchall()
            top_level = conn.execute("SELECT count(*) FROM alarms WHERE parent_id IS NULL").fetchone()[0]
            orders_total = conn.execute("SELECT alarm_id FROM work_orders").fetchall()
    assert entrapments == 1   # one entrapment alarm for the whole incident, also after the rescue
    # The lift's fault 01 and alarm button (held by the policy, then adopted by the entrapment) and
    # "stopped outside the door zone" (born under it) are its children: one alarm, one order in
    # total, through the escalation, the rescue and the sweeps after it.
    assert sorted(k for (k,) in children) == ["alarm_button", "elevator_fault", "stopped_outside_door_zone"]
    assert top_level == 1
    assert orders_total == [(alarm_id,)]
    # The first POST failed (HTTP 500) and was delivered on retry; every other went through at once.
    assert all(h[1:] == ("delivered", None) for h in hooks_sent)
    assert sorted(h[0] for h in hooks_sent) == [1] * (len(hooks_sent) - 1) + [2]
    assert kpi == (False, True, True)
    # Every MQTT outbox row of the order reached the real subscriber (QoS 1 may repeat one; ids dedupe).
    mine = [p for _, p in inbox.messages if p.get("order", {}).get("id") == order_id]
    assert {p["notification_id"] for p in mine} == mqtt_rows
    assert {p["event"] for p in mine} == {"assigned", "reminder", "escalation", "alarm_cleared"}
    inbox.client.disconnect()


def test_alarm_raised_while_no_dispatcher_ran_is_picked_up_after_restart(fresh_db_url, broker, tmp_path):
    registry = round_the_clock_registry(tmp_path)
    ids = seed(fresh_db_url, registry)
    now = datetime.now(UTC)
    with psycopg.connect(fresh_db_url) as conn:
        alarm = raise_alarm(conn, ids[("demo", "el-b2-1")], raised_at=now - timedelta(minutes=1))
    inbox = Inbox(broker)
    policy = load_policy().model_copy(update={"maintenance": []})
    dispatch = DispatchComponent(policy=policy, clock=ManualClock(now), sweep_s=0.2)
    with RunningHub(fresh_db_url, broker.url, registry, components=[dispatch]):
        note = inbox.wait("lift-co", "assigned")
    assert note["order"]["alarm_id"] == alarm
    with psycopg.connect(fresh_db_url) as conn:
        assert conn.execute("SELECT status FROM notifications").fetchall() == [("delivered",)]
    inbox.client.disconnect()


def test_staff_badge_at_a_gate_checks_in_and_out(fresh_db_url, broker, demo_registry_path):
    policy = load_policy().model_copy(update={"maintenance": []})
    # Its own persistent session: the shared default one may hold other tests' queued events.
    with RunningHub(fresh_db_url, broker.url, demo_registry_path, client_id="hub-e2e-badge",
                    components=[DispatchComponent(policy=policy, deliver=False)]):
        with psycopg.connect(fresh_db_url, autocommit=True) as conn:
            conn.execute("INSERT INTO staff_badges (card, staff_id) VALUES ('04A1B2C3', 'tech-sun')")
            conn.execute("""UPDATE devices SET spec = jsonb_set(spec, '{tags}', '{"attendance": "out"}')
                             WHERE device_id = 'gate-south'""")
        client = mqtt_client(broker.host, broker.port)
        t = datetime.now(UTC).replace(microsecond=0)
        events = [
            ("gate-north", {"ts": t.isoformat(), "code": "granted", "data": {"staff_id": "tech-liu", "method": "face"}}),
            ("gate-north", {"ts": (t + timedelta(seconds=1)).isoformat(), "code": "granted",
                            "data": {"card": "04A1B2C3", "method": "card"}}),
            ("gate-north", {"ts": (t + timedelta(seconds=2)).isoformat(), "code": "granted",
                            "data": {"card": "resident-card", "method": "card"}}),
            ("gate-south", {"ts": (t + timedelta(seconds=3)).isoformat(), "code": "granted",
                            "data": {"staff_id": "tech-liu"}}),
        ]
        for device, payload in events:
            client.publish(f"facility/demo/{device}/event", json.dumps(payload), qos=1).wait_for_publish(5)
        with psycopg.connect(fresh_db_url, autocommit=True) as conn:
            wait_for(lambda: conn.execute("SELECT count(*) FROM events WHERE code = 'granted'").fetchone()[0] >= 4,
                     30, message="4 gate events stored")
        client.disconnect()
    with psycopg.connect(fresh_db_url) as conn:
        rows = conn.execute("""SELECT a.staff_id, a.kind, a.source, d.device_id FROM attendance a
                                 JOIN devices d ON d.id = a.device_id ORDER BY a.at""").fetchall()
    assert rows == [("tech-liu", "in", "badge", "gate-north"), ("tech-sun", "in", "badge", "gate-north"),
                    ("tech-liu", "out", "badge", "gate-south")]


def test_notifications_wait_out_a_broker_outage_and_are_delivered(fresh_db_url, tmp_path):
    from hub.embedded.broker import MosquittoProcess

    if not MosquittoProcess.available():
        pytest.skip("mosquitto not installed")
    own = MosquittoProcess(tmp_path / "mosquitto")
    own.start()
    registry = round_the_clock_registry(tmp_path)
    policy = load_policy().model_copy(update={"maintenance": []})
    now = datetime.now(UTC)
    dispatch = DispatchComponent(policy=policy, clock=ManualClock(now), sweep_s=0.2)
    try:
        with RunningHub(fresh_db_url, own.url, registry, components=[dispatch], dispatch={"max_backoff_s": 1.0}) as hub:
            own.kill()
            assert hub.ctx is not None
            device_pk = hub.ctx.device_ids[("demo", "el-b1-2")]
            with psycopg.connect(fresh_db_url, autocommit=True) as conn:
                raise_alarm(conn, device_pk, raised_at=now)
                wait_for(lambda: conn.execute("SELECT attempts FROM notifications WHERE last_error IS NOT NULL")
                         .fetchone(), 15, message="a failed delivery attempt while the broker is down")
                assert conn.execute("SELECT status FROM notifications").fetchall() == [("pending",)]
                own.start()  # same port; the hub's notifier reconnects by itself
                wait_for(lambda: conn.execute("SELECT status FROM notifications").fetchone()[0] == "delivered",
                         30, message="delivery after the broker came back")
                row = conn.execute("SELECT attempts, last_error FROM notifications").fetchone()
            assert row[0] >= 2 and row[1] is None  # failed at least once, then PUBACKed
    finally:
        own.stop()
