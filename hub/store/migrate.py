"""Versioned SQL migrations, applied once each under an advisory lock (safe with many workers).

Files are `NNNN_name.sql`, or a pair `NNNN_name.plain.sql` / `NNNN_name.timescale.sql` of which
one is applied depending on whether the TimescaleDB extension could be created. Once a database
was built one way it stays that way: the choice is recorded with each migration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

import psycopg

from hub.config import TimescaleSettings
from hub.errors import StoreError

MIGRATION_LOCK = 0x48554201  # "HUB" + 1: one migrator at a time across workers
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+?)(?:\.(plain|timescale))?\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variants: dict[str, str]  # "any" | "plain" | "timescale" → SQL text


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    timescale: bool = False
    timescale_note: str = ""
    version: int = 0

    def summary(self) -> str:
        done = f"applied {len(self.applied)} migration(s)" if self.applied else "schema up to date"
        mode = "TimescaleDB features ON" if self.timescale else "TimescaleDB features OFF"
        return f"{done}; version {self.version}; {mode} ({self.timescale_note})"


def available_migrations() -> list[Migration]:
    found: dict[int, Migration] = {}
    for entry in resources.files("hub.store.migrations").iterdir():
        match = _NAME.match(entry.name)
        if not match:
            continue
        version, name, variant = int(match[1]), match[2], match[3] or "any"
        mig = found.setdefault(version, Migration(version, name, {}))
        if mig.name != name:
            raise StoreError(f"two migrations share version {version:04d}: {mig.name}, {name}")
        mig.variants[variant] = entry.read_text(encoding="utf-8")
    return [found[v] for v in sorted(found)]


def _ensure_bookkeeping(conn: psycopg.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version     integer PRIMARY KEY,
               name        text NOT NULL,
               variant     text NOT NULL,
               applied_at  timestamptz NOT NULL DEFAULT now())"""
    )


def _timescale_choice(conn: psycopg.Connection, settings: TimescaleSettings) -> tuple[bool, str]:
    row = conn.execute(
        "SELECT variant FROM schema_migrations WHERE variant IN ('plain', 'timescale') LIMIT 1"
    ).fetchone()
    if row is not None:
        on = row[0] == "timescale"
        return on, "schema was built " + ("with TimescaleDB" if on else "for plain PostgreSQL")
    if settings.mode == "off":
        return False, "disabled by HUB_TIMESCALE__MODE=off"
    avail = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if avail is None:
        if settings.mode == "on":
            raise StoreError("HUB_TIMESCALE__MODE=on but the timescaledb extension is not installed")
        return False, "timescaledb extension not installed on this server"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        if settings.mode == "on":
            raise StoreError(f"cannot create the timescaledb extension: {exc}") from exc
        first = str(exc).strip().splitlines()[0]
        return False, f"timescaledb present but not loadable ({first})"
    return True, f"timescaledb {avail[0]}"


def _render(sql: str, settings: TimescaleSettings) -> str:
    # Values are validated by TimescaleSettings' patterns, so this is not an injection path.
    for key in ("chunk_interval", "compress_after", "retention"):
        sql = sql.replace("{" + key + "}", getattr(settings, key))
    return sql


def migrate(dsn: str, settings: TimescaleSettings | None = None) -> MigrationReport:
    """Bring the schema to the newest version; running it again changes nothing."""
    from hub.store.db import connect

    settings = settings or TimescaleSettings()
    applied: list[str] = []
    with connect(dsn, autocommit=True, application_name="hub-migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            _ensure_bookkeeping(conn)
            timescale, note = _timescale_choice(conn, settings)
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for mig in available_migrations():
                if mig.version in done:
                    continue
                variant = "timescale" if timescale else "plain"
                sql = mig.variants.get(variant)
                if sql is None:
                    variant, sql = "any", mig.variants.get("any")
                if sql is None:
                    raise StoreError(f"migration {mig.version:04d}_{mig.name} has no {variant} variant")
                if variant == "timescale":
                    sql = _render(sql, settings)
                try:
                    with conn.transaction():
                        conn.execute(sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, variant) VALUES (%s, %s, %s)",
                            (mig.version, mig.name, variant),
                        )
                except psycopg.Error as exc:
                    raise StoreError(f"migration {mig.version:04d}_{mig.name} failed: {exc}") from exc
                applied.append(f"{mig.version:04d}_{mig.name}")
            version = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    return MigrationReport(applied, timescale, note, int(version[0]) if version else 0)


def timescale_enabled(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM schema_migrations WHERE variant = 'timescale' LIMIT 1").fetchone()
    return row is not None
