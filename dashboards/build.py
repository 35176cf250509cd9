"""Render the dashboards to JSON and write Grafana provisioning files beside them.

Layout of the output folder (default `build/grafana`):

    dashboards/<uid>.json                     one file per dashboard, importable as is
    provisioning/datasources/facility-hub.yaml  PostgreSQL/TimescaleDB datasource as `hub_grafana`
    provisioning/dashboards/facility-hub.yaml   file provider pointing at dashboards/

The datasource password is never written: Grafana reads it from `HUB_GRAFANA_DB_PASSWORD` in
its own environment when it loads the provisioning file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from dashboards.definitions import DASHBOARDS, FOLDER_TITLE, FOLDER_UID
from dashboards.sdk import DATASOURCE_TYPE, DATASOURCE_UID, load_dashboard, to_json

PASSWORD_ENV = "HUB_GRAFANA_DB_PASSWORD"
GRAFANA_ROLE = "hub_grafana"


@dataclass(frozen=True)
class DatabaseTarget:
    """Where Grafana reaches the hub database (no password: that stays in Grafana's environment)."""

    host: str = "localhost"
    port: int = 5432
    database: str = "hub"
    timescale: bool = False
    sslmode: str = "disable"

    @classmethod
    def from_dsn(cls, dsn: str, *, timescale: bool = False) -> DatabaseTarget:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        host = str(info.get("host") or "localhost")
        if host.startswith("/"):
            host = "localhost"  # a Unix socket path means nothing to Grafana
        return cls(host, int(info.get("port") or 5432), str(info.get("dbname") or "hub"), timescale,
                   str(info.get("sslmode") or "disable"))


def render_dashboards() -> dict[str, dict[str, Any]]:
    """uid → dashboard JSON, in definition order. Pure.

    Each dashboard goes once through the SDK's own parser, so the file holds the SDK's defaults
    (e.g. a bar chart's line width) explicitly and parsing it again gives the same document.
    """
    return {spec.uid: to_json(load_dashboard(to_json(spec.build().build()))) for spec in DASHBOARDS}


def datasource_provisioning(target: DatabaseTarget) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "Facility hub",
            "uid": DATASOURCE_UID,
            "type": DATASOURCE_TYPE,
            "access": "proxy",
            "url": f"{target.host}:{target.port}",
            "user": GRAFANA_ROLE,
            "isDefault": False,
            "editable": False,
            "jsonData": {
                "database": target.database,
                "sslmode": target.sslmode,
                "postgresVersion": 1500,
                "timescaledb": target.timescale,
                "maxOpenConns": 10,
                "connMaxLifetime": 14400,
            },
            "secureJsonData": {"password": "${" + PASSWORD_ENV + "}"},
        }],
    }


def dashboard_provisioning(dashboards_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "facility-hub",
            "orgId": 1,
            "folder": FOLDER_TITLE,
            "folderUid": FOLDER_UID,
            "type": "file",
            "disableDeletion": False,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": str(dashboards_dir), "foldersFromFilesStructure": False},
        }],
    }


def write_build(out: Path, target: DatabaseTarget, *, dashboards_path: Path | None = None) -> list[Path]:
    """Write everything under `out`; returns the files written. Safe to run again (overwrites)."""
    written: list[Path] = []
    dash_dir = out / "dashboards"
    dash_dir.mkdir(parents=True, exist_ok=True)
    for uid, data in render_dashboards().items():
        path = dash_dir / f"{uid}.json"
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(path)
    prov = out / "provisioning"
    for sub, doc in (
        ("datasources", datasource_provisioning(target)),
        ("dashboards", dashboard_provisioning(dashboards_path or dash_dir.resolve())),
    ):
        (prov / sub).mkdir(parents=True, exist_ok=True)
        path = prov / sub / "facility-hub.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written.append(path)
    return written
