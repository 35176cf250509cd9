"""`hub rules check FILE` and `hub rules backtest --from T --to T [--rules FILE]`."""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg

from hub.config import load_settings
from hub.errors import ConfigError, HubError
from hub.registry import Registry, load_registry
from hub.store.db import connect
from rules.devices import device_metas, known_metrics
from rules.engine import Action, Clear, Engine, Raise
from rules.model import RuleSet, load_rules
from rules.store import replay

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "examples" / "rules"


def _registry_if_configured(config: Path | None) -> Registry | None:
    try:
        settings = load_settings(config)
    except HubError:
        return None
    return load_registry(settings.registry) if settings.registry else None


def cmd_check(args: argparse.Namespace) -> int:
    registry = _registry_if_configured(getattr(args, "config", None))
    ruleset = load_rules(args.file, known_metrics=known_metrics(registry) if registry else None)
    kinds = Counter(r.kind for r in ruleset.rules)
    print(f"{args.file}: {len(ruleset.rules)} rule(s) in {len(ruleset.files)} file(s) are valid"
          + (" (metrics checked against the registry)" if registry else ""))
    print("  " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    return 0


def parse_time(raw: str, name: str) -> datetime:
    """RFC 3339 or a date (midnight UTC); naive times are taken as UTC."""
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        t = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {raw!r} is not a date or RFC 3339 time") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Episode:
    rule_id: str
    scope_key: str
    severity: str
    title: str
    raised_at: float
    cleared_at: float | None


@dataclass(frozen=True)
class BacktestResult:
    episodes: list[Episode]
    rows: int
    seconds: float


def backtest(conn: psycopg.Connection, ruleset: RuleSet, registry: Registry, start: datetime, end: datetime, *,
             dsn: str | None = None) -> BacktestResult:
    """Replay [start, end) through `ruleset` (after a silent warm-up of its lookback); write nothing."""
    ids = {(s, d): i for s, d, i in conn.execute("SELECT site_id, device_id, id FROM devices").fetchall()}
    engine = Engine(ruleset, device_metas(registry, ids))
    began = time.perf_counter()
    warm = replay(conn, engine, start - timedelta(seconds=ruleset.lookback_s), start)
    open_: dict[tuple[str, str], Episode] = {}
    done: list[Episode] = []

    def collect(actions: list[Action]) -> None:
        for a in actions:
            key = (a.rule_id, a.scope_key)
            if isinstance(a, Raise) and key not in open_:
                open_[key] = Episode(a.rule_id, a.scope_key, a.severity, a.title, a.at, None)
            elif isinstance(a, Clear) and key in open_:
                e = open_.pop(key)
                done.append(Episode(e.rule_id, e.scope_key, e.severity, e.title, e.raised_at, a.at))

    rows = replay(conn, engine, start, end, sink=collect, prefetch_dsn=dsn, step=timedelta(hours=1))
    episodes = sorted([*done, *open_.values()], key=lambda e: (e.raised_at, e.rule_id, e.scope_key))
    return BacktestResult(episodes, rows + warm, time.perf_counter() - began)


def cmd_backtest(args: argparse.Namespace) -> int:
    settings = load_settings(getattr(args, "config", None))
    if settings.registry is None:
        raise ConfigError("HUB_REGISTRY is not set: the backtest needs the site registry")
    registry = load_registry(settings.registry)
    start, end = parse_time(args.start, "from"), parse_time(args.end, "to")
    if end <= start:
        raise ConfigError("--to must be after --from")
    rules_path = args.rules or settings.rules or DEFAULT_RULES
    ruleset = load_rules(rules_path, known_metrics=known_metrics(registry))
    with connect(settings.dsn, autocommit=True, application_name="hub-rules-backtest") as conn:
        result = backtest(conn, ruleset, registry, start, end, dsn=settings.dsn)
    fmt = "%Y-%m-%d %H:%M:%S"
    print(f"backtest {start.isoformat()} → {end.isoformat()} with {len(ruleset.rules)} rule(s) from {rules_path}")
    print(f"{'raised (UTC)':19}  {'cleared (UTC)':19}  {'severity':8}  {'rule':34}  title")
    for e in result.episodes:
        cleared = datetime.fromtimestamp(e.cleared_at, UTC).strftime(fmt) if e.cleared_at else "(still active)"
        print(f"{datetime.fromtimestamp(e.raised_at, UTC).strftime(fmt):19}  {cleared:19}  {e.severity:8}  {e.rule_id:34}  {e.title}")
    per_rule = Counter(e.rule_id for e in result.episodes)
    print(f"{len(result.episodes)} alarm(s) would have been raised"
          + (": " + ", ".join(f"{r} {n}" for r, n in per_rule.most_common()) if per_rule else ""))
    rate = result.rows / result.seconds if result.seconds else 0.0
    print(f"replayed {result.rows} rows and events in {result.seconds:.2f} s ({rate:,.0f}/s); no alarms were written")
    return 0
