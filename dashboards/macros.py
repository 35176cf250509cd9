"""Expand Grafana's PostgreSQL macros and template variables into a parameterised statement.

Grafana expands `$__timeFilter(col)` and friends into literal SQL on its server. We expand them
into psycopg placeholders instead (same meaning, no quoting of our own), so tests, `hub top` and
the daily report can run a panel's exact text against a real database. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
_MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class MacroError(ValueError):
    """A panel's SQL uses a macro or variable the context cannot fill."""


@dataclass(frozen=True)
class QueryContext:
    """What Grafana knows when it runs a panel: the time range, the interval and the variables."""

    start: datetime
    stop: datetime
    interval: timedelta = timedelta(minutes=1)
    variables: Mapping[str, Sequence[str]] = field(default_factory=dict)


def parse_duration(text: str) -> timedelta:
    """Grafana interval text ('30s', '5m', '1h') → timedelta."""
    match = _DURATION.match(text.strip().strip("'\""))
    if not match:
        raise MacroError(f"not a Grafana interval: {text!r}")
    return timedelta(seconds=int(match[1]) * _UNIT_S[match[2]])


def rfc3339(at: datetime) -> str:
    """An aware datetime as Grafana writes it in SQL macros: UTC, 'Z', fraction only if any."""
    if at.tzinfo is None:
        raise MacroError("time range bounds must carry a time zone")
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def format_interval(interval: timedelta) -> str:
    """timedelta → the text Grafana puts in `$__interval` ('1m', '5s', '2h', '1d')."""
    secs = interval.total_seconds()
    if secs < 1:
        return f"{max(1, round(secs * 1000))}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size and secs % size == 0:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def expand(sql: str, ctx: QueryContext) -> tuple[str, dict[str, Any]]:
    """Panel SQL with Grafana macros → (psycopg statement with %(name)s placeholders, params).

    Variables are substituted first (as Grafana does), then macros. A multi-value variable becomes
    a comma-separated list of placeholders, which is what `IN ($site)` needs.
    """
    if ctx.stop < ctx.start:
        raise MacroError("time range ends before it starts")
    # Grafana inlines the range as untyped RFC 3339 literals ('2026-11-18T02:00:00Z'); psycopg
    # sends a str parameter untyped too, so a panel that forgets a cast fails here as in Grafana.
    params: dict[str, Any] = {"__from": rfc3339(ctx.start), "__to": rfc3339(ctx.stop)}
    interval_text = format_interval(ctx.interval)
    text = sql.replace("%", "%%")  # literal percent signs survive psycopg's formatting

    def variable(match: re.Match[str]) -> str:
        name = match[1] or match[3] or match[4]
        if name == "__interval":
            return interval_text
        if name == "__interval_ms":
            return str(int(ctx.interval.total_seconds() * 1000))
        if name.startswith("__"):
            return match[0]  # a macro name such as $__timeFilter: handled below
        if name not in ctx.variables:
            raise MacroError(f"template variable ${name} has no value")
        values = list(ctx.variables[name])
        if not values:
            raise MacroError(f"template variable ${name} is empty")
        names = []
        for i, value in enumerate(values):
            key = f"v_{name}_{i}"
            params[key] = str(value)
            names.append(f"%({key})s")
        return ", ".join(names)

    text = _VAR.sub(variable, text)

    def macro(match: re.Match[str]) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")] if match[2].strip() else []
        if name == "timeFilter":
            _arity(name, args, 1)
            return f"{args[0]} BETWEEN %(__from)s AND %(__to)s"
        if name == "timeFrom":
            return "%(__from)s"
        if name == "timeTo":
            return "%(__to)s"
        if name in ("timeGroup", "timeGroupAlias"):
            if len(args) < 2:
                raise MacroError(f"$__{name} needs a column and an interval")
            secs = parse_duration(args[1]).total_seconds()
            key = f"__bucket_{len(params)}"
            params[key] = secs
            expr = f"to_timestamp(floor(extract(epoch FROM {args[0]}) / %({key})s) * %({key})s)"
            return expr + (' AS "time"' if name == "timeGroupAlias" else "")
        if name == "time":
            _arity(name, args, 1)
            return f'{args[0]} AS "time"'
        if name == "unixEpochFilter":
            _arity(name, args, 1)
            return (f"{args[0]} >= extract(epoch FROM %(__from)s::timestamptz) "
                    f"AND {args[0]} <= extract(epoch FROM %(__to)s::timestamptz)")
        raise MacroError(f"unknown macro $__{name}")

    text = _MACRO.sub(macro, text)
    leftover = re.search(r"\$__\w+|\$\{?\w+", text)
    if leftover:
        raise MacroError(f"unexpanded {leftover[0]!r} in panel SQL")
    return text, params


def _arity(name: str, args: list[str], n: int) -> None:
    if len(args) != n:
        raise MacroError(f"$__{name} takes {n} argument(s), got {len(args)}")
