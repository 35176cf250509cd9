"""`hub dashboards build|push`, `hub top`, `hub report daily`: thin shells over the modules."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from hub.config import load_settings
from hub.errors import ConfigError


def cmd_build(args: argparse.Namespace) -> int:
    from dashboards.build import DatabaseTarget, write_build

    target = DatabaseTarget()
    if os.environ.get("HUB_DATABASE_URL") or getattr(args, "config", None):
        settings = load_settings(getattr(args, "config", None))
        if settings.database_url is not None:
            target = DatabaseTarget.from_dsn(settings.dsn, timescale=settings.timescale.mode == "on")
    out: Path = args.out
    files = write_build(out, target)
    for path in files:
        print(f"wrote {path}")
    print(f"datasource: {target.host}:{target.port}/{target.database} as hub_grafana; "
          "Grafana needs HUB_GRAFANA_DB_PASSWORD in its environment")
    return 0


def _audit_push(url: str, after: dict[str, object]) -> None:
    """Record the push in audit_log when a hub database is configured; warn if that fails."""
    import getpass
    import sys
    from urllib.parse import urlsplit

    from psycopg.types.json import Jsonb

    from hub.errors import HubError
    from hub.store.db import connect

    if not os.environ.get("HUB_DATABASE_URL"):
        return
    parts = urlsplit(url)
    target = f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
    try:
        settings = load_settings(None)
        with connect(settings.dsn, autocommit=True, application_name="hub-dashboards") as conn:
            conn.execute(
                "INSERT INTO audit_log (actor, origin, action, target, after) VALUES (%s, 'cli', %s, %s, %s)",
                (getpass.getuser(), "dashboards.push", target, Jsonb(after)),
            )
    except HubError as exc:
        print(f"hub dashboards push: warning: not audited: {exc}", file=sys.stderr)


def cmd_push(args: argparse.Namespace) -> int:
    from dashboards.push import PushError, push

    if not args.url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {args.url!r}")
    try:
        result = push(args.url, args.token)
    except PushError as exc:
        _audit_push(args.url, {"ok": False, "error": str(exc)})
        raise
    _audit_push(args.url, {"ok": True, "folder_created": result.folder_created,
                           "dashboards": dict(result.dashboards)})
    if result.folder_created:
        print("created folder 'Facility hub'")
    for uid, version in result.dashboards:
        print(f"pushed {uid} (version {version})")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    from dashboards.top import run_top

    settings = load_settings(getattr(args, "config", None))
    run_top(settings.dsn, once=args.once, interval=args.interval)
    return 0


def cmd_report_daily(args: argparse.Namespace) -> int:
    from datetime import date

    from dashboards.report import collect, render_html
    from hub.store.db import connect

    try:
        day = date.fromisoformat(args.date)
    except ValueError:
        raise ConfigError(f"--date {args.date!r}: expected YYYY-MM-DD") from None
    settings = load_settings(getattr(args, "config", None))
    with connect(settings.dsn, autocommit=True, application_name="hub-report") as conn:
        conn.execute("SET default_transaction_read_only = on")
        report = collect(conn, args.site, day)
    out: Path = args.out or Path(f"report-{args.site}-{day.isoformat()}.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report), encoding="utf-8")
    print(f"wrote {out}")
    return 0
