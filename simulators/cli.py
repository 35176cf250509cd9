"""`hub simulate`: the site's devices on the configured broker and their Modbus ports."""

from __future__ import annotations

import argparse
import asyncio
import sys

from hub.errors import HubError


def add_options(sim: argparse.ArgumentParser) -> None:
    """Options beyond the contract's (documented in docs/simulators.md)."""
    sim.add_argument("--faults", default=None, help="fault injection, e.g. drop=0.05,duplicate=0.02,garbage=0.01")
    sim.add_argument("--modbus-port-offset", type=int, default=0, help="listen on each Modbus port + this offset")
    sim.add_argument("--write-registry", default=None, help="write the (scaled) fleet's registry YAML here first")


def cmd_simulate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hub.cli import _install_stop, _settings, _setup_logging
    from hub.registry import load_registry
    from simulators.faults import FaultPlan
    from simulators.fleet import write_scaled_registry
    from simulators.runner import SimOptions, run_simulate
    from simulators.scenarios import SCENARIOS

    if args.scenario and args.scenario not in SCENARIOS:
        print(f"hub simulate: unknown scenario {args.scenario!r}; known: {', '.join(sorted(SCENARIOS))}", file=sys.stderr)
        return 2
    if args.scale < 1 or args.speed <= 0:
        print("hub simulate: --scale must be ≥ 1 and --speed > 0", file=sys.stderr)
        return 2
    try:
        faults = FaultPlan.parse(getattr(args, "faults", None))
    except ValueError as exc:
        print(f"hub simulate: --faults: {exc}", file=sys.stderr)
        return 2
    settings = _settings(args)
    _setup_logging(settings.log_level)
    if getattr(args, "write_registry", None):
        path = write_scaled_registry(load_registry(args.site), args.scale, Path(args.write_registry))
        print(f"hub simulate: wrote the fleet's registry to {path} (point HUB_REGISTRY at it)", flush=True)
    offset = getattr(args, "modbus_port_offset", 0) or 0
    options = SimOptions(scale=args.scale, speed=args.speed, scenario=args.scenario, seed=args.seed, faults=faults,
                         modbus_port_offset=offset)

    async def main() -> None:
        stop = asyncio.Event()
        _install_stop(stop)
        await run_simulate(args.site, settings.mqtt, options, args.duration, stop)

    try:
        asyncio.run(main())
    except HubError:
        raise
    except OSError as exc:
        print(f"hub simulate: {exc}", file=sys.stderr)
        return 1
    return 0
