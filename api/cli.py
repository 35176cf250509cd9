"""`hub users add` and `hub mqtt credentials`."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

import psycopg

from hub.config import load_settings
from hub.errors import ConfigError


def _password(args: argparse.Namespace) -> str:
    """From stdin (--password-stdin), HUB_NEW_PASSWORD, or a prompt; never echoed or logged."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif os.environ.get("HUB_NEW_PASSWORD"):
        password = os.environ["HUB_NEW_PASSWORD"]
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the passwords differ")
    if len(password) < 8:
        raise ConfigError("the password needs at least 8 characters")
    return password


def save_user(conn: psycopg.Connection, *, username: str, password_hash: str, role: str, sites: list[str],
              actor: str, staff_id: str | None = None) -> tuple[bool, str | None]:
    """Create or update an API user (optionally acting as a staff member) and audit it.

    Returns (created, staff_id as stored).
    """
    from api.audit import jsonb

    if staff_id is not None and conn.execute("SELECT 1 FROM staff WHERE id = %s AND active", (staff_id,)).fetchone() is None:
        raise ConfigError(f"--staff {staff_id!r}: no active staff member with that id (is the registry synced?)")
    try:
        row = conn.execute(
            """INSERT INTO api_users (username, password_hash, role, sites, staff_id) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash,
                   role = EXCLUDED.role, sites = EXCLUDED.sites, active = true, updated_at = now(),
                   staff_id = coalesce(EXCLUDED.staff_id, api_users.staff_id)
               RETURNING id, (xmax = 0) AS created, staff_id""",
            (username, password_hash, role, sites, staff_id),
        ).fetchone()
    except psycopg.errors.CheckViolation:
        raise ConfigError(f"username {username!r}: use letters, digits and _.@- (at most 64)") from None
    except psycopg.errors.UniqueViolation:
        raise ConfigError(f"--staff {staff_id!r}: another API user already acts as this staff member") from None
    assert row is not None
    conn.execute(
        "INSERT INTO audit_log (actor, origin, action, target, after) VALUES (%s, 'cli', %s, %s, %s)",
        (actor, "user.create" if row[1] else "user.update", f"user:{row[0]}",
         jsonb({"username": username, "role": role, "sites": sites, "staff_id": row[2]})),
    )
    return bool(row[1]), row[2]


def cmd_users_add(args: argparse.Namespace) -> int:
    from api.security import hash_password
    from hub.store.db import connect
    from hub.store.migrate import migrate

    settings = load_settings(args.config)
    sites = sorted({s.strip() for s in args.sites.split(",") if s.strip()})
    if not sites:
        raise ConfigError("--sites needs at least one site id, or *")
    staff_id: str | None = getattr(args, "staff", None)
    password_hash = hash_password(_password(args))
    migrate(settings.dsn, settings.timescale)
    with connect(settings.dsn) as conn:
        created, staff = save_user(conn, username=args.username, password_hash=password_hash, role=args.role,
                                   sites=sites, actor=f"cli:{getpass.getuser()}", staff_id=staff_id)
    as_staff = f", staff {staff}" if staff else ""
    print(f"user {args.username} ({args.role}, sites {','.join(sites)}{as_staff}) {'added' if created else 'updated'}")
    return 0


def cmd_mqtt_credentials(args: argparse.Namespace) -> int:
    from api.mqtt_credentials import DeviceUser, device_username, write_credentials
    from hub.registry import load_registry

    settings = load_settings(args.config)
    if settings.registry is None:
        raise ConfigError("HUB_REGISTRY is not set: point it at a site registry file or folder")
    registry = load_registry(settings.registry)
    devices = [DeviceUser(device_username(site, dev), site, dev) for (site, dev), ref in sorted(registry.devices.items())
               if ref.model.protocol == "mqtt"]
    out: Path = args.out
    write_credentials(out, devices, hub_user=args.hub_user)
    print(f"wrote {out / 'passwd'} and {out / 'acl'} for {len(devices)} devices and hub user {args.hub_user!r}; "
          f"plain passwords in {out / 'passwords.json'} (mode 0600)")
    print(f"mosquitto.conf: allow_anonymous false / password_file {out / 'passwd'} / acl_file {out / 'acl'}")
    return 0
