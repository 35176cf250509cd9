"""How large a simulated fleet this machine runs: MQTT devices connected and messages per second
sent by `hub simulate --scale N`, beside a raw paho QoS 1 publisher on one connection (the
client-library limit) in the same run, against a private Mosquitto.

    python -m bench.simulators [--quick] [--scale N] [--speed X] [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.report import write_section
from hub.config import parse_mqtt_url
from hub.embedded.broker import MosquittoProcess
from hub.registry import load_registry
from simulators.runner import SimOptions, Simulation

ROOT = Path(__file__).resolve().parents[1]


class Counter:
    """A subscriber counting messages and distinct devices on `facility/+/+/telemetry`."""

    def __init__(self, host: str, port: int) -> None:
        self.count = 0
        self.devices: set[str] = set()
        self.lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-counter")
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.subscribe("facility/+/+/telemetry", qos=0)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.count += 1
            self.devices.add(msg.topic.split("/")[2])

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def raw_paho_rate(host: str, port: int, payload: bytes, seconds: float) -> float:
    """QoS 1 messages per second one paho connection publishes (its own network thread)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(2000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    sent = 0
    started = time.monotonic()
    last = None
    while time.monotonic() - started < seconds:
        for _ in range(500):
            last = client.publish("facility/bench/raw-0/telemetry", payload, qos=1)
            sent += 1
        while len(client._out_messages) > 4000:  # bound memory: wait for acks
            time.sleep(0.001)
    if last is not None:
        last.wait_for_publish(30)
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    return sent / elapsed


async def fleet_run(url_text: str, scale: int, speed: float, seconds: float) -> dict[str, float]:
    url = parse_mqtt_url(url_text)
    demo = load_registry(ROOT / "examples" / "sites" / "demo.yaml")
    counter = Counter(url.host, url.port)
    started = time.monotonic()
    try:
        async with Simulation(demo, url, options=SimOptions(scale=scale, speed=speed, modbus=False,
                                                            client_prefix="bench")) as sim:
            connected_s = time.monotonic() - started
            assert sim.mqtt is not None
            sent0, t0 = sim.mqtt.sent, time.monotonic()
            lags: list[float] = []
            loop = asyncio.get_running_loop()
            end = t0 + seconds
            while time.monotonic() < end:
                before = loop.time()
                await asyncio.sleep(0.1)
                lags.append(loop.time() - before - 0.1)
            rate = (sim.mqtt.sent - sent0) / (time.monotonic() - t0)
            devices = sim.mqtt_devices
            ticks_expected = seconds * speed / sim.options.tick_s
        await asyncio.sleep(0.5)
        lags.sort()
        return {"devices": devices, "connected_s": connected_s, "rate": rate, "seen": len(counter.devices),
                "loop_lag_p99_ms": 1000 * lags[int(0.99 * (len(lags) - 1))], "ticks_expected": ticks_expected}
    finally:
        counter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run (2 cores shared: use this)")
    parser.add_argument("--scale", type=int, default=None)
    parser.add_argument("--speed", type=float, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    scale = args.scale or 150                       # 150 × 14 MQTT devices = 2,100
    speed = args.speed or (5.0 if args.quick else 10.0)
    seconds = args.seconds or (5.0 if args.quick else 30.0)
    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoProcess(Path(tmp))
        broker.start()
        try:
            result = asyncio.run(fleet_run(broker.url, scale, speed, seconds))
            url = parse_mqtt_url(broker.url)
            raw = raw_paho_rate(url.host, url.port, b'{"ts":1790000000000,"seq":1,"floor":7,"running":true,"speed":1.75}' * 4,
                                min(seconds, 5.0))
        finally:
            broker.stop()
    offered = result["devices"] / 5.0 * speed        # one telemetry per device per 5 simulated s
    body = f"""## Simulators: fleet size on one machine (`bench/simulators.py`{' --quick' if args.quick else ''})

| figure | value |
|---|---|
| MQTT devices, one connection each (own last will) | {result['devices']:,.0f} |
| all connected (CONNACK) after | {result['connected_s']:.1f} s |
| distinct devices seen by a subscriber | {result['seen']:,.0f} |
| messages/s sent by the fleet at speed x{speed:g} (offered ≈ {offered:,.0f}/s + events) | {result['rate']:,.0f} |
| event-loop lag p99 while running | {result['loop_lag_p99_ms']:.1f} ms |
| raw paho QoS 1 publisher, one connection, same run | {raw:,.0f} msg/s |

One asyncio loop drives every paho client (no thread per device). The fleet's rate is what the
scenario offers, not its ceiling; the raw paho figure is the client library's ceiling on one
connection. {'Quick run on a shared 2-core machine: indicative only.' if args.quick else ''}
"""
    write_section("simulators", body)
    print(body)


if __name__ == "__main__":
    main()
