"""MQTT side of the simulators: one paho connection per device, all driven by one asyncio loop.

Each device needs its own connection because the broker publishes a connection's last will
(`"offline"` on the device's retained status topic) only for that connection: devices sharing a
connection would all look alive, or all die together. Threads per connection do not scale to
thousands, so paho runs without its own thread: the loop watches every socket
(`add_reader`/`add_writer`) and calls paho's `loop_read`/`loop_write`, and one task calls
`loop_misc` for keep-alives. About 2,000 devices fit in one process this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from hub.config import MqttUrl
from simulators.engine import Key, Message
from simulators.faults import FaultInjector

log = logging.getLogger(__name__)
CommandHandler = Callable[[Key, str, bytes], None]
ONLINE, OFFLINE = b'"online"', b'"offline"'


class DeviceConnection:
    """One device's MQTT session: retained status, last will, command subscription."""

    def __init__(self, key: Key, url: MqttUrl, loop: asyncio.AbstractEventLoop, on_command: CommandHandler,
                 *, client_prefix: str, keepalive: int) -> None:
        self.key = key
        self.url = url
        self.loop = loop
        self.on_command = on_command
        self.keepalive = keepalive
        site, device = key
        self.base = f"facility/{site}/{device}"
        self.connected = asyncio.Event()
        self.powered = True
        self.sent = 0
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_prefix}-{site}-{device}"[:128],
                             clean_session=True)
        if url.username:
            client.username_pw_set(url.username, url.password.get_secret_value() if url.password else None)
        client.max_inflight_messages_set(200)
        client.max_queued_messages_set(10_000)
        client.will_set(f"{self.base}/status", OFFLINE, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        self.client = client

    # -- paho ↔ asyncio ---------------------------------------------------------------------
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(sock)
            self.loop.remove_writer(sock)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_writer(sock)

    # -- MQTT -------------------------------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            log.warning("%s: connect refused: %s", self.base, reason)
            return
        client.subscribe(f"{self.base}/cmd/+", qos=1)
        client.publish(f"{self.base}/status", ONLINE, qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) == 5 and parts[3] == "cmd":
            self.on_command(self.key, parts[4], bytes(msg.payload))

    def connect(self) -> None:
        self.client.connect(self.url.host, self.url.port, keepalive=self.keepalive)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.powered:
            self.client.publish(topic, payload, qos=1, retain=retain)
            self.sent += 1

    def power_off(self) -> None:
        """Lose power: the TCP connection dies without DISCONNECT, so the broker sends the will."""
        self.powered = False
        sock = self.client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)   # type: ignore[attr-defined]

    def power_on(self) -> None:
        self.powered = True
        try:
            self.client.reconnect()
        except OSError as exc:
            log.warning("%s: reconnect failed: %s", self.base, exc)

    def close(self) -> None:
        """A clean stop: say `offline` (retained) ourselves, then disconnect."""
        if self.powered and self.client.is_connected():
            self.client.publish(f"{self.base}/status", OFFLINE, qos=1, retain=True)
        self.client.disconnect()


class MqttTransport:
    """All MQTT devices of a fleet, with injected faults applied on the way out."""

    def __init__(self, url: MqttUrl, keys: Iterable[Key], *, on_command: CommandHandler,
                 faults: FaultInjector | None = None, client_prefix: str = "sim", keepalive: int = 60) -> None:
        self.url = url
        self.keys = list(keys)
        self.on_command = on_command
        self.faults = faults
        self.client_prefix = client_prefix
        self.keepalive = keepalive
        self.links: dict[Key, DeviceConnection] = {}
        self._misc: asyncio.Task[None] | None = None
        self._delayed: set[asyncio.TimerHandle] = set()
        self.dropped = self.duplicated = self.delayed = 0

    async def start(self, *, connect_within_s: float = 120.0, batch: int = 100) -> None:
        loop = asyncio.get_running_loop()
        for i, key in enumerate(self.keys):
            link = DeviceConnection(key, self.url, loop, self.on_command, client_prefix=self.client_prefix,
                                    keepalive=self.keepalive)
            self.links[key] = link
            try:
                link.connect()
            except OSError as exc:
                raise OSError(f"MQTT broker {self.url.host}:{self.url.port} unreachable: {exc}") from exc
            if i % batch == batch - 1:
                await asyncio.sleep(0.01)   # let CONNACKs in before the next batch
        self._misc = asyncio.create_task(self._misc_loop())
        async with asyncio.timeout(connect_within_s):
            await asyncio.gather(*(link.connected.wait() for link in self.links.values()))

    async def _misc_loop(self) -> None:
        """Keep-alives, and reconnects after the broker went away (as real devices retry)."""
        tick = 0
        while True:
            tick += 1
            for link in self.links.values():
                if not link.powered:
                    continue
                if link.client.socket() is not None:
                    link.client.loop_misc()
                elif tick % 3 == 0:
                    link.power_on()
            await asyncio.sleep(1.0)

    @property
    def connected(self) -> int:
        return sum(1 for link in self.links.values() if link.connected.is_set())

    def send(self, msg: Message) -> None:
        link = self.links.get(msg.key)
        if link is None:
            return
        if msg.channel == "power":
            if msg.payload == b"0":
                link.power_off()
            else:
                link.power_on()
            return
        payloads, delay = [msg.payload], 0.0
        if self.faults is not None and msg.channel != "reply":
            payloads, delay = self.faults.mqtt(msg.payload)
            if msg.channel == "event" and payloads and payloads[0] != msg.payload:
                payloads = [msg.payload] * len(payloads)   # garbage only replaces telemetry
            self.dropped += not payloads
            self.duplicated += len(payloads) > 1
        for payload in payloads:
            if delay:
                self.delayed += 1
                handle = asyncio.get_running_loop().call_later(delay, link.publish, msg.topic, payload)
                self._delayed.add(handle)
            else:
                link.publish(msg.topic, payload)

    def publish_raw(self, key: Key, topic: str, payload: bytes) -> None:
        self.links[key].publish(topic, payload)

    async def stop(self) -> None:
        for handle in self._delayed:
            handle.cancel()
        for link in self.links.values():
            link.close()
        await asyncio.sleep(0.2)      # let the last packets and DISCONNECTs leave
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
        for link in self.links.values():
            sock = link.client.socket()
            if sock is not None:
                self._forget(sock)

    def _forget(self, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(sock)
            loop.remove_writer(sock)

    @property
    def sent(self) -> int:
        return sum(link.sent for link in self.links.values())
