"""Session fixtures: a real PostgreSQL (local, else embedded) with a throwaway database, and the
tests' own MQTT broker (Mosquitto with the project's config, else the embedded amqtt)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from hub.config import parse_mqtt_url
from hub.embedded.broker import AmqttBroker, MosquittoProcess
from tests.support import LOCAL_PG, ROOT, create_database, drop_database, pg_reachable


@dataclass(frozen=True)
class PgServer:
    admin_url: str
    kind: str  # "local" or "embedded"


@dataclass
class Broker:
    url: str
    kind: str
    process: MosquittoProcess | None = None

    @property
    def host(self) -> str:
        return parse_mqtt_url(self.url).host

    @property
    def port(self) -> int:
        return parse_mqtt_url(self.url).port


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    if pg_reachable(LOCAL_PG):
        yield PgServer(LOCAL_PG, "local")
        return
    from hub.embedded.postgres import embedded_postgres

    with embedded_postgres(tmp_path_factory.mktemp("pg")) as url:
        yield PgServer(url, "embedded")


def _migrated_database(pg_server: PgServer) -> Iterator[str]:
    from hub.store.migrate import migrate

    name, url = create_database(pg_server.admin_url)
    try:
        migrate(url)
        yield url
    finally:
        with contextlib.suppress(psycopg.Error):
            drop_database(pg_server.admin_url, name)


@pytest.fixture(scope="session")
def db_url(pg_server: PgServer) -> Iterator[str]:
    """One migrated throwaway database for the whole session."""
    yield from _migrated_database(pg_server)


@pytest.fixture
def fresh_db_url(pg_server: PgServer) -> Iterator[str]:
    """A migrated database of its own, for tests that count rows from zero."""
    yield from _migrated_database(pg_server)


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(db_url) as c:
        yield c


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The tests' own broker instance, run with the project's broker config."""
    if os.environ.get("HUB_TEST_BROKER") != "amqtt" and MosquittoProcess.available():
        proc = MosquittoProcess(tmp_path_factory.mktemp("mosquitto"))
        proc.start()
        yield Broker(proc.url, "mosquitto", proc)
        proc.stop()
        return
    amqtt = AmqttBroker()
    amqtt.start()
    yield Broker(amqtt.url, "amqtt")
    amqtt.stop()


@pytest.fixture(scope="session")
def demo_registry_path() -> Path:
    return ROOT / "examples" / "sites" / "demo.yaml"


# -- fault tests (issue #9): short in CI, full with --full-faults or HUB_FAULTS=full -------------
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full-faults", action="store_true", default=False,
                     help="run the fault tests (marker `fault`) with full loads and outages")


def pytest_configure(config: pytest.Config) -> None:
    from tests import faults

    faults.configure(config)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests import faults

    faults.write_report()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "fault" in report.keywords:
        from tests import faults

        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        faults.record_skip(report.nodeid.split("::")[-1], reason.removeprefix("Skipped: "))


def pytest_terminal_summary(terminalreporter: object, exitstatus: int, config: pytest.Config) -> None:
    from tests import faults

    tallies = faults.collected()
    if tallies:
        write = terminalreporter.write_line  # type: ignore[attr-defined]
        write(f"fault tests ({'full' if faults.full() else 'short'}): sent / stored / duplicated / dead-lettered / lost")
        write(faults.HEAD)
        for tally in tallies:
            write(tally.row())
    for test, reason in faults.skipped():
        terminalreporter.write_line(f"fault test skipped: {test}: {reason}")  # type: ignore[attr-defined]
