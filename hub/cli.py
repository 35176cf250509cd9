"""The `hub` command. Each sub-command is a small function; the parts are imported lazily."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hub.config import Settings, load_settings
from hub.errors import HubError

log = logging.getLogger("hub")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_REGISTRY = PROJECT_ROOT / "examples" / "sites" / "demo.yaml"


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("amqtt", "transitions", "pymodbus", "uvicorn.error", "passlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    return load_settings(getattr(args, "config", None), **overrides)


async def _serve(runtime_factory: Callable[[], object], stop: asyncio.Event) -> None:
    from hub.runtime import HubRuntime, run_until_stopped

    runtime = runtime_factory()
    assert isinstance(runtime, HubRuntime)
    await run_until_stopped(runtime, stop)


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


# -- commands ------------------------------------------------------------------------------
def cmd_migrate(args: argparse.Namespace) -> int:
    from hub.store.db import redact
    from hub.store.migrate import migrate

    settings = _settings(args)
    report = migrate(settings.dsn, settings.timescale)
    print(f"{redact(settings.dsn)}: {report.summary()}")
    for name in report.applied:
        print(f"  applied {name}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from hub.runtime import HubRuntime, tune_gc

    settings = _settings(args)
    _setup_logging(settings.log_level)
    tune_gc()

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        await _serve(lambda: HubRuntime(settings), stop)

    asyncio.run(main())
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from hub.doctor import run_checks

    return run_checks(getattr(args, "config", None))


def cmd_demo(args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    return run_demo(args)


def _lazy(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """A command implemented in another package, imported only when it runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), name)(args))

    return run


def _simulate(args: argparse.Namespace) -> int:
    from simulators.cli import cmd_simulate

    return cmd_simulate(args)


def _simulate_options(parser: argparse.ArgumentParser) -> None:
    from simulators.cli import add_options

    add_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hub", description="Facility hub: IoT monitoring and facility control")
    parser.add_argument("--version", action="version", version="facility-hub 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str, *, config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if config:
            p.add_argument("--config", type=Path, help="YAML settings file (HUB_* environment variables win)")
        p.set_defaults(func=func)
        return p

    demo = command("demo", cmd_demo, "everything embedded: database, broker, simulators, hub, API")
    demo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    demo.add_argument("--data-dir", type=Path, default=None, help="where embedded servers keep data (default .demo/)")
    command("run", cmd_run, "production run: drivers, ingest, rules, dispatch, API")
    command("migrate", cmd_migrate, "create or upgrade the schema (safe to run twice)")
    command("doctor", cmd_doctor, "check database, TimescaleDB, broker, Modbus endpoints, config")

    sim = command("simulate", _simulate, "device simulators for a site (MQTT and Modbus TCP)")
    sim.add_argument("--site", type=Path, required=True)
    sim.add_argument("--scale", type=int, default=1)
    sim.add_argument("--speed", type=float, default=1.0)
    sim.add_argument("--scenario", default=None)
    sim.add_argument("--duration", type=float, default=None)
    sim.add_argument("--seed", type=int, default=1)
    _simulate_options(sim)

    rules = sub.add_parser("rules", help="validate rules; replay history through them")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    check = rules_sub.add_parser("check", help="validate a rules file or folder")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_lazy("rules.cli", "cmd_check"))
    backtest = rules_sub.add_parser("backtest", help="replay stored history and report alarms")
    backtest.add_argument("--from", dest="start", required=True)
    backtest.add_argument("--to", dest="end", required=True)
    backtest.add_argument("--rules", type=Path)
    backtest.add_argument("--config", type=Path)
    backtest.set_defaults(func=_lazy("rules.cli", "cmd_backtest"))

    dash = sub.add_parser("dashboards", help="Grafana dashboards as code")
    dash_sub = dash.add_subparsers(dest="dashboards_command", required=True)
    build = dash_sub.add_parser("build", help="write dashboard JSON and provisioning files")
    build.add_argument("--out", type=Path, default=Path("build/grafana"))
    build.set_defaults(func=_lazy("dashboards.cli", "cmd_build"))
    push = dash_sub.add_parser("push", help="push dashboards to a running Grafana")
    push.add_argument("--url", required=True)
    push.add_argument("--token", required=True)
    push.set_defaults(func=_lazy("dashboards.cli", "cmd_push"))

    top = command("top", _lazy("dashboards.cli", "cmd_top"), "live terminal view of devices, alarms, work orders")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    report = sub.add_parser("report", help="operations reports")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    daily = report_sub.add_parser("daily", help="the daily operations report as one HTML file")
    daily.add_argument("--site", required=True)
    daily.add_argument("--date", required=True)
    daily.add_argument("--config", type=Path)
    daily.add_argument("--out", type=Path, default=None, help="HTML file to write (default report-SITE-DATE.html)")
    daily.set_defaults(func=_lazy("dashboards.cli", "cmd_report_daily"))

    users = sub.add_parser("users", help="API users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="add an API user")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=["admin", "operator", "technician", "butler"])
    add.add_argument("--sites", default="*")
    add.add_argument("--config", type=Path)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (else HUB_NEW_PASSWORD or a prompt)")
    add.add_argument("--staff", metavar="STAFF_ID", help="the registry staff member this user acts as (work orders, attendance)")
    add.set_defaults(func=_lazy("api.cli", "cmd_users_add"))
    mqtt = sub.add_parser("mqtt", help="broker security")
    mqtt_sub = mqtt.add_subparsers(dest="mqtt_command", required=True)
    cred = mqtt_sub.add_parser("credentials", help="per-device broker passwords and ACLs")
    cred.add_argument("--config", type=Path)
    cred.add_argument("--out", type=Path, default=Path("mosquitto-auth"), help="folder for passwd, acl, passwords.json")
    cred.add_argument("--hub-user", default="hub", help="the hub's own broker user (full access)")
    cred.set_defaults(func=_lazy("api.cli", "cmd_mqtt_credentials"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HubError as exc:
        print(f"hub {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
