"""Mirror the YAML registry into the database and hand back the compact device ids.

Idempotent and additive: devices that left the registry are marked inactive, never deleted,
so their history stays joinable. Every change is written to the audit log.
"""

from __future__ import annotations

import json

import psycopg

from hub.registry import Registry


def sync_registry(conn: psycopg.Connection, registry: Registry, *, actor: str = "system") -> dict[tuple[str, str], int]:
    """Upsert everything in one transaction; return {(site_id, device_id): devices.id}."""
    with conn.transaction():
        before = _fingerprint(conn)
        with conn.cursor() as cur:
            for site in registry.sites.values():
                cur.execute(
                    """INSERT INTO sites (id, name, timezone, address) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, timezone = EXCLUDED.timezone,
                           address = EXCLUDED.address, updated_at = now()
                       WHERE (sites.name, sites.timezone, sites.address)
                             IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.timezone, EXCLUDED.address)""",
                    (site.id, site.name, site.timezone, site.address),
                )
                cur.execute("DELETE FROM buildings WHERE site_id = %s", (site.id,))
                cur.executemany(
                    "INSERT INTO buildings (site_id, id, name, floors, basement_floors) VALUES (%s, %s, %s, %s, %s)",
                    [(site.id, b.id, b.name, b.floors, b.basement_floors) for b in site.buildings],
                )
                cur.execute("DELETE FROM grids WHERE site_id = %s", (site.id,))
                cur.executemany(
                    "INSERT INTO grids (site_id, id, name, buildings) VALUES (%s, %s, %s, %s)",
                    [(site.id, g.id, g.name, g.buildings) for g in site.grids],
                )
            for model in registry.models.values():
                cur.execute(
                    """INSERT INTO device_models (id, kind, protocol, spec) VALUES (%s, %s, %s, %s)
                       ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, protocol = EXCLUDED.protocol,
                           spec = EXCLUDED.spec, updated_at = now()
                       WHERE device_models.spec IS DISTINCT FROM EXCLUDED.spec""",
                    (model.id, model.kind, model.protocol, json.dumps(model.model_dump(mode="json"))),
                )
            rows = [
                (
                    ref.site.id, ref.device.id, ref.model.id, ref.model.kind, ref.model.protocol,
                    ref.device.name, ref.device.building, ref.grid, ref.device.floor, ref.device.zone,
                    json.dumps(ref.device.model_dump(mode="json", exclude={"id", "model", "name"})),
                )
                for ref in registry.devices.values()
            ]
            cur.executemany(
                """INSERT INTO devices (site_id, device_id, model_id, kind, protocol, name, building_id,
                                        grid_id, floor, zone, spec)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (site_id, device_id) DO UPDATE SET
                       model_id = EXCLUDED.model_id, kind = EXCLUDED.kind, protocol = EXCLUDED.protocol,
                       name = EXCLUDED.name, building_id = EXCLUDED.building_id, grid_id = EXCLUDED.grid_id,
                       floor = EXCLUDED.floor, zone = EXCLUDED.zone, spec = EXCLUDED.spec, active = true,
                       updated_at = now()
                   WHERE (devices.model_id, devices.name, devices.building_id, devices.grid_id,
                          devices.floor, devices.zone, devices.spec, devices.active)
                         IS DISTINCT FROM (EXCLUDED.model_id, EXCLUDED.name, EXCLUDED.building_id,
                          EXCLUDED.grid_id, EXCLUDED.floor, EXCLUDED.zone, EXCLUDED.spec, true)""",
                rows,
            )
            site_ids = list(registry.sites)
            keys = [f"{s}/{d}" for s, d in registry.devices]
            cur.execute(
                """UPDATE devices SET active = false, updated_at = now()
                    WHERE site_id = ANY(%s) AND active AND NOT (site_id || '/' || device_id = ANY(%s))""",
                (site_ids, keys),
            )
            for person in registry.staff.values():
                cur.execute(
                    """INSERT INTO staff (id, name, role, sites, grids, skills, phone, supervisor, active)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, true)
                       ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role,
                           sites = EXCLUDED.sites, grids = EXCLUDED.grids, skills = EXCLUDED.skills,
                           phone = EXCLUDED.phone, supervisor = EXCLUDED.supervisor, active = true,
                           updated_at = now()""",
                    (person.id, person.name, person.role, person.sites, person.grids,
                     list(person.skills), person.phone, person.supervisor),
                )
            cur.execute(
                "UPDATE staff SET active = false WHERE active AND NOT (id = ANY(%s))",
                (list(registry.staff),),
            )
            cur.execute("DELETE FROM shifts WHERE site_id = ANY(%s)", (site_ids,))
            cur.executemany(
                "INSERT INTO shifts (staff_id, site_id, days, start_time, end_time) VALUES (%s, %s, %s, %s, %s)",
                [(s.staff, s.site, list(s.days), s.start, s.end) for s in registry.rosters],
            )
        after = _fingerprint(conn)
        if after != before:
            conn.execute(
                "INSERT INTO audit_log (actor, origin, action, target, before, after) VALUES (%s, %s, %s, %s, %s, %s)",
                (actor, "registry", "registry.sync", ",".join(str(f) for f in registry.files),
                 json.dumps(before), json.dumps(after)),
            )
        ids = conn.execute("SELECT site_id, device_id, id FROM devices").fetchall()
    return {(s, d): i for s, d, i in ids}


def _fingerprint(conn: psycopg.Connection) -> dict[str, object]:
    """A small summary of the registry tables: counts and a digest, enough to say what changed."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM sites), (SELECT count(*) FROM devices WHERE active),
                  (SELECT count(*) FROM staff WHERE active), (SELECT count(*) FROM shifts),
                  (SELECT md5(coalesce(string_agg(site_id || '/' || device_id || ':' || model_id || ':'
                          || spec::text || active::text, ',' ORDER BY id), '')) FROM devices),
                  (SELECT md5(coalesce(string_agg(id || spec::text, ',' ORDER BY id), '')) FROM device_models),
                  (SELECT md5(coalesce(string_agg(staff_id || site_id || days::text || start_time::text
                          || end_time::text, ',' ORDER BY staff_id, start_time), '')) FROM shifts)"""
    ).fetchone()
    assert row is not None
    return {
        "sites": row[0], "active_devices": row[1], "active_staff": row[2], "shifts": row[3],
        "devices_digest": row[4], "models_digest": row[5], "shifts_digest": row[6],
    }
