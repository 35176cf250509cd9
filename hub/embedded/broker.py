"""Run an MQTT broker for demos and tests: Mosquitto with the project's config if installed,
else amqtt (pure Python, slower: fine for a demo, not for benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from hub.errors import BrokerError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BROKER_CONFIG = PROJECT_ROOT / "examples" / "mosquitto" / "mosquitto.conf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def render_mosquitto_config(port: int, data_dir: Path, *, extra: str = "") -> str:
    """The shipped broker settings plus a loopback listener and a private persistence folder."""
    base = BROKER_CONFIG.read_text(encoding="utf-8")
    # Started as root, Mosquitto drops to the `mosquitto` user, which cannot write a private
    # folder: persistence and the log would then fail silently. Stay the invoking user instead.
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        extra = f"user root\n{extra}"
    return (
        f"{base}\n# --- added for this instance ---\n"
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence_location {data_dir}/\nlog_dest file {data_dir}/mosquitto.log\n{extra}"
    )


class MosquittoProcess:
    """A private Mosquitto on a free loopback port, using the project's broker config."""

    def __init__(self, data_dir: Path, *, port: int | None = None, extra_config: str = "") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_config = extra_config
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("mosquitto") is not None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(render_mosquitto_config(self.port, self.data_dir, extra=self.extra_config))
        binary = shutil.which("mosquitto")
        if binary is None:
            raise BrokerError("mosquitto is not installed")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port):
                return
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start: {err.strip()}")
            time.sleep(0.05)
        raise BrokerError(f"mosquitto did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


class AmqttBroker:
    """amqtt in a background thread with its own event loop."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: object | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        from amqtt.broker import Broker

        started = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 10_000}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            try:
                broker = Broker(config, loop=loop)
                loop.run_until_complete(broker.start())
                self._broker = broker
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt-broker", daemon=True)
        self._thread.start()
        started.wait(15)
        if errors:
            raise BrokerError(f"embedded MQTT broker failed to start: {errors[0]}")
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if time.monotonic() > deadline:
                raise BrokerError("embedded MQTT broker did not listen")
            time.sleep(0.05)

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None:
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(10)


@contextlib.contextmanager
def embedded_broker(data_dir: Path) -> Iterator[str]:
    """Yield the URL of a private broker: Mosquitto when installed, amqtt otherwise."""
    broker: MosquittoProcess | AmqttBroker
    if MosquittoProcess.available():
        broker = MosquittoProcess(data_dir / "mosquitto")
    else:
        log.info("mosquitto not installed; using the embedded amqtt broker")
        broker = AmqttBroker()
    broker.start()
    try:
        yield broker.url
    finally:
        broker.stop()
