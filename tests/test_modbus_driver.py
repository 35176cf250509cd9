"""The Modbus driver against pymodbus's own TCP server (not the project's simulator), real sockets.

Register maps are written in the registry's documented YAML format and loaded with
`load_registry`; the server's datastore is filled with byte layouts built by `struct`.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from drivers.modbus.driver import ModbusDriver, WriteRejected, modbus_devices
from drivers.modbus.endpoint import Backoff, ModbusEndpoint, ModbusReadError
from hub.config import load_settings
from hub.errors import ConfigError
from hub.ingest.decode import Batch, Reading
from hub.registry import load_registry
from hub.runtime import default_components
from tests.modbus_testserver import PymodbusServer
from tests.support import free_port
from tests.test_modbus_codec import ORDERS, layout

ORDER_TAG = {"big": "b", "little": "l"}


def registry_yaml(port: int, *, units: tuple[int, ...] = (1, 2), poll_s: float = 0.2, offline_after_s: float = 1.0,
                  timeout_s: float = 0.3) -> str:
    metrics = []
    registers = []
    for i, (byte_order, word_order) in enumerate(ORDERS):
        tag = ORDER_TAG[byte_order] + ORDER_TAG[word_order]
        for kind, base in (("int16", 0), ("uint32", 10), ("float32", 20)):
            name = f"{kind}_{tag}"
            metrics.append(f"      - {{name: {name}, type: number}}")
            step = 1 if kind == "int16" else 2
            registers.append(f"        - {{metric: {name}, table: holding, address: {base + i * step}, type: {kind}, "
                             f"byte_order: {byte_order}, word_order: {word_order}}}")
    metrics += [
        "      - {name: temperature, type: number, unit: degC}",
        "      - {name: door_fault, type: bool}",
        "      - {name: running, type: bool}",
        "      - {name: mode, type: enum, values: {0: out_of_service, 1: normal, 2: inspection}}",
        "      - {name: fault_code, type: int}",
        "      - {name: level, type: number}",
        "      - {name: alarm, type: bool}",
        "      - {name: door_open, type: bool}",
        "      - {name: pressure, type: number, unit: MPa}",
        "      - {name: setpoint, type: number}",
    ]
    registers += [
        "        - {metric: temperature, table: holding, address: 30, type: int16, scale: 0.1, offset: -40}",
        "        - {metric: door_fault, table: holding, address: 31, type: uint16, bit: 3}",
        "        - {metric: running, table: holding, address: 31, type: uint16, bit: 0, events: false, writable: true}",
        "        - {metric: mode, table: holding, address: 32, type: uint16, writable: true}",
        "        - {metric: fault_code, table: holding, address: 33, type: uint16, events: {0: '40', 11: '11'}}",
        "        - {metric: level, table: holding, address: 34, type: uint16, nan_value: 65535}",
        "        - {metric: setpoint, table: holding, address: 36, type: float32, word_order: little, writable: true}",
        "        - {metric: alarm, table: coil, address: 0, type: bool, writable: true}",
        "        - {metric: door_open, table: discrete, address: 2, type: bool}",
        "        - {metric: pressure, table: input, address: 0, type: uint16, scale: 0.01}",
    ]
    devices = "\n".join(
        f"      - {{id: dev{unit}, model: test-modbus, modbus: {{host: 127.0.0.1, port: {port}, unit_id: {unit}}}}}"
        for unit in units)
    return f"""models:
  - id: test-modbus
    kind: sensor
    protocol: modbus
    offline_after_s: {offline_after_s}
    metrics:
{chr(10).join(metrics)}
    modbus:
      unit_id: 1
      poll_interval_s: {poll_s}
      timeout_s: {timeout_s}
      retries: 1
      registers:
{chr(10).join(registers)}
sites:
  - id: t
    devices:
{devices}
"""


class Capture:
    """A sink that keeps every batch (what the ingest pipeline would be handed)."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def __call__(self, batch: Batch) -> bool:
        self.batches.append(batch)
        return True

    @property
    def readings(self) -> list[Reading]:
        return [r for b in self.batches for r in b.readings]

    def latest(self, device_id: int, metric: str) -> Reading:
        return [r for r in self.readings if r[1] == device_id and r[2] == metric][-1]

    def events(self) -> list[tuple[int, str]]:
        return [(e[1], e[2]) for b in self.batches for e in b.events]

    def status(self) -> list[tuple[int, bool]]:
        return [(s.device_id, s.online) for b in self.batches for s in b.status]


@pytest.fixture
def server() -> Iterator[PymodbusServer]:
    with PymodbusServer(units=[1, 2]) as srv:
        yield srv


def make_driver(tmp_path: Path, port: int, capture: Capture, **kw: object) -> ModbusDriver:
    path = tmp_path / "site.yaml"
    path.write_text(registry_yaml(port, **kw))  # type: ignore[arg-type]
    registry = load_registry(path)
    ids = {key: n + 1 for n, key in enumerate(sorted(registry.devices))}
    return ModbusDriver(modbus_devices(registry, ids), capture, flush_s=0.05,
                        backoff=Backoff(first=0.2, cap=0.5), seed=1)


def fill(server: PymodbusServer, unit: int = 1) -> dict[str, float]:
    expected: dict[str, float] = {}
    for i, (byte_order, word_order) in enumerate(ORDERS):
        tag = ORDER_TAG[byte_order] + ORDER_TAG[word_order]
        for kind, base, value in (("int16", 0, -1234 - i), ("uint32", 10, 3_000_000_000 + i), ("float32", 20, 12.5 + i)):
            step = 1 if kind == "int16" else 2
            server.set_words(unit, "holding", base + i * step, layout(kind, value, byte_order, word_order))
            expected[f"{kind}_{tag}"] = value
    server.set_words(unit, "holding", 30, [struct.unpack(">H", struct.pack(">h", 655))[0]])  # 65.5-40 = 25.5
    server.set_words(unit, "holding", 31, [0b1001])  # running (bit 0) and door_fault (bit 3)
    server.set_words(unit, "holding", 32, [2])  # inspection
    server.set_words(unit, "holding", 33, [0])
    server.set_words(unit, "holding", 34, [65535])  # the device's "no data"
    server.set_bits(unit, "coil", 0, [True])
    server.set_bits(unit, "discrete", 2, [True])
    server.set_words(unit, "input", 0, [1234])
    return expected


async def test_register_map_decodes_against_pymodbus_server(tmp_path: Path, server: PymodbusServer) -> None:
    capture = Capture()
    expected = fill(server)
    driver = make_driver(tmp_path, server.port, capture)
    driver.build()
    poller = driver.pollers[("t", "dev1")]
    device_id = poller.device.id
    assert await poller.poll_once()
    driver.collector.flush()
    for metric, value in expected.items():
        assert capture.latest(device_id, metric)[3:] == (pytest.approx(value), None, 0), metric
    assert capture.latest(device_id, "temperature")[3] == pytest.approx(25.5)
    assert capture.latest(device_id, "door_fault")[3:] == (1.0, None, 0)
    assert capture.latest(device_id, "running")[3:] == (1.0, None, 0)
    assert capture.latest(device_id, "mode")[3:] == (2.0, "inspection", 0)
    assert capture.latest(device_id, "level")[3:] == (None, None, 1)  # no data: NULL, never 0
    assert capture.latest(device_id, "alarm")[3:] == (1.0, None, 0)
    assert capture.latest(device_id, "door_open")[3:] == (1.0, None, 0)
    assert capture.latest(device_id, "pressure")[3] == pytest.approx(12.34)
    # One poll = one read per table: holding 0..37 (gaps read through), coil, discrete, input.
    assert server.reads(1) == 4
    assert [(r.table, r.count) for r in poller.plan] == [("coil", 1), ("discrete", 1), ("holding", 38), ("input", 1)]
    # Change-of-state events: active flags at start, then transitions; `events: false` is quiet.
    assert set(capture.events()) == {(device_id, "door_fault.on"), (device_id, "alarm.on"), (device_id, "door_open.on")}
    assert capture.status() == [(device_id, True)]
    server.set_words(1, "holding", 31, [0b0000])
    server.set_words(1, "holding", 33, [11])
    server.set_bits(1, "coil", 0, [False])
    assert await poller.poll_once()
    driver.collector.flush()
    assert set(capture.events()[3:]) == {(device_id, "door_fault.off"), (device_id, "11"), (device_id, "alarm.off")}


async def test_nearby_block_refused_falls_back_to_adjacent_runs(tmp_path: Path) -> None:
    with PymodbusServer(units=[1], holes=[(4, 10), (18, 20), (28, 30), (35, 36)]) as server:
        fill(server)
        capture = Capture()
        driver = make_driver(tmp_path, server.port, capture, units=(1,))
        driver.build()
        poller = driver.pollers[("t", "dev1")]
        assert await poller.poll_once()  # coil/discrete/input still read; holding block refused
        driver.collector.flush()
        assert capture.latest(poller.device.id, "int16_bb")[3:] == (None, None, 2)
        assert poller.strict_plan
        holding = [r for r in poller.plan if r.table == "holding"]
        assert [(r.address, r.count) for r in holding] == [(0, 4), (10, 8), (20, 8), (30, 5), (36, 2)]
        before = server.reads(1)
        assert await poller.poll_once()
        driver.collector.flush()
        assert server.reads(1) - before == 3 + len(holding)
        assert capture.latest(poller.device.id, "int16_bb")[3:] == (-1234, None, 0)
        assert capture.latest(poller.device.id, "setpoint")[5] == 0


async def test_outage_stores_bad_quality_never_zero_and_recovers(tmp_path: Path, server: PymodbusServer) -> None:
    fill(server)
    fill(server, unit=2)
    capture = Capture()
    async with make_driver(tmp_path, server.port, capture) as driver:
        ids = {key: p.device.id for key, p in driver.pollers.items()}
        await wait_until(lambda: sum(1 for s in capture.status() if s[1]) == 2, 5)
        server.stop()
        stopped_at = len(capture.readings)
        await wait_until(lambda: sorted(s for s in capture.status() if not s[1]) == sorted((i, False) for i in ids.values()), 8)
        outage = capture.readings[stopped_at:]
        bad = [r for r in outage if r[5] == 2]
        assert bad, "failed reads must be stored with quality bad"
        assert all(r[3] is None and r[4] is None for r in bad)
        assert not any(r[3] == 0 and r[5] != 0 for r in outage)
        assert not any(b.seen for b in capture.batches[-3:])  # no 'seen' while nothing answers
        server.start()
        await wait_until(lambda: capture.status()[-2:] and all(s[1] for s in capture.status()[-2:]), 8)
        assert driver.endpoints[("127.0.0.1", server.port)].stats.connect_failures >= 1
        tasks = list(driver._tasks)
        assert len(tasks) == 3  # two pollers and the flusher
    latest = capture.latest(ids[("t", "dev1")], "int16_bb")
    assert latest[3:] == (-1234, None, 0)
    assert all(task.done() for task in tasks)  # stopped cleanly


async def test_exception_codes_and_timeouts_never_crash_the_poller(tmp_path: Path, server: PymodbusServer) -> None:
    fill(server)
    fill(server, unit=2)
    capture = Capture()
    async with make_driver(tmp_path, server.port, capture, offline_after_s=30) as driver:
        dev1, dev2 = driver.pollers[("t", "dev1")], driver.pollers[("t", "dev2")]
        for fault in (("exception", 4), ("exception", 6), ("exception", 11), ("exception", 1), ("delay", 0.6)):
            server.faults[1] = fault
            mark = len(capture.readings)

            def bad_then_good(mark: int = mark) -> bool:
                later = capture.readings[mark:]
                return (sum(1 for r in later if r[1] == dev1.device.id and r[5] == 2) >= 20
                        and any(r[1] == dev2.device.id and r[5] == 0 for r in later))

            await wait_until(bad_then_good, 10)  # dev1 fails; dev2 on the same connection still reads
            failed = [r for r in capture.readings[mark:] if r[1] == dev1.device.id and r[5] != 0]
            assert all(r[3] is None and r[4] is None and r[5] == 2 for r in failed), fault
            assert not any(t.done() for t in driver._tasks), fault
        server.faults.clear()
        mark = len(capture.readings)
        await wait_until(lambda: any(r[1] == dev1.device.id and r[5] == 0 for r in capture.readings[mark:]), 5)
        assert dev1.online is True
        assert driver.endpoints[("127.0.0.1", server.port)].stats.exceptions >= 4


async def test_write_metric_reads_back(tmp_path: Path, server: PymodbusServer) -> None:
    fill(server)
    capture = Capture()
    driver = make_driver(tmp_path, server.port, capture)
    driver.build()
    result = await driver.write_metric("t", "dev1", "setpoint", 21.5)
    assert result.verified and result.read_back == 21.5
    assert server.get_words(1, "holding", 36, 2) == layout("float32", 21.5, "big", "little")
    result = await driver.write_metric("t", "dev1", "mode", "normal")
    assert result.verified and server.get_words(1, "holding", 32, 1) == [1]
    result = await driver.write_metric("t", "dev1", "running", False)  # bit 0 of a shared word
    assert result.verified and server.get_words(1, "holding", 31, 1) == [0b1000]  # bit 3 untouched
    result = await driver.write_metric("t", "dev1", "alarm", False)
    assert result.verified and server.get_words(1, "coil", 0, 1)[0] is False
    for metric, value in (("pressure", 1.0), ("temperature", 20), ("mode", 7), ("mode", "bogus"),
                          ("alarm", 5), ("nope", 1)):
        with pytest.raises(WriteRejected):
            await driver.write_metric("t", "dev1", metric, value)
    with pytest.raises(WriteRejected):
        await driver.write_metric("t", "ghost", "mode", 1)
    driver.collector.flush()
    assert capture.latest(1, "setpoint")[3:] == (21.5, None, 0)  # the read-back is stored
    await driver.stop()


async def wait_until(predicate: Callable[[], object], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {seconds} s")
        await asyncio.sleep(0.05)


def test_bit_on_a_float_register_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    text = registry_yaml(1502).replace("address: 36, type: float32, word_order: little,",
                                       "address: 36, type: float32, bit: 2, word_order: little,")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "bit: 2" in row)
    with pytest.raises(ConfigError, match=rf"bad.yaml:{line}.*bit 2 needs an integer"):
        load_registry(path)


def test_hub_run_starts_the_modbus_component() -> None:
    settings = load_settings(None, database_url="postgresql://x@127.0.0.1/x", api_enabled=False)
    assert "modbus" in [c.name for c in default_components(settings)]


async def test_full_ingest_pauses_polls_instead_of_piling_up(tmp_path: Path, server: PymodbusServer) -> None:
    fill(server)
    refused: list[int] = []

    def refusing(batch: Batch) -> bool:
        refused.append(len(batch.readings))
        return False  # the ingest queue stays full

    path = tmp_path / "site.yaml"
    path.write_text(registry_yaml(server.port, units=(1,), poll_s=0.05))
    registry = load_registry(path)
    driver = ModbusDriver(modbus_devices(registry, {("t", "dev1"): 1}), refusing, flush_s=0.05)
    driver.collector.max_rows = 100
    async with driver:
        poller = driver.pollers[("t", "dev1")]
        await wait_until(lambda: poller.stats.skipped >= 5, 5)
        assert poller.paused
    assert 100 <= len(driver.collector.batch.readings) < 100 + 2 * 28  # at most one poll past the cap
    assert refused  # the hand-off was tried, and the rows were kept, not dropped


async def test_unreachable_endpoint_backs_off_exponentially_and_fails_fast() -> None:
    port = free_port()  # nothing listens here
    async with ModbusEndpoint("127.0.0.1", port, timeout_s=0.5, backoff=Backoff(first=0.1, cap=0.4)) as endpoint:
        delays = []
        for _ in range(4):
            with pytest.raises(ModbusReadError) as failed:
                await endpoint.read("holding", 0, 1, unit=1)
            assert failed.value.connection
            delays.append(endpoint._delay)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ModbusReadError, match="retry in"):  # inside the backoff: no I/O
                await endpoint.read("holding", 0, 1, unit=1)
            assert loop.time() - started < 0.05
            await asyncio.sleep(endpoint._delay + 0.02)
        assert delays == [0.1, 0.2, 0.4, 0.4]
        assert endpoint.stats.connect_failures == 4 and endpoint.stats.requests == 0
        with PymodbusServer(units=[1], port=port) as server:
            server.set_words(1, "holding", 0, [77])
            await asyncio.sleep(endpoint._delay + 0.02)
            assert await endpoint.read("holding", 0, 1, unit=1) == [77]
            assert endpoint._delay == 0.0


async def test_write_to_a_silent_device_raises_read_error(tmp_path: Path) -> None:
    capture = Capture()
    driver = make_driver(tmp_path, free_port(), capture)
    driver.build()
    with pytest.raises(ModbusReadError):
        await driver.write_metric("t", "dev1", "setpoint", 20.0)
    await driver.stop()
