"""A running hub with the API on a free port, two sites, and users of every role."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from api.component import ApiComponent
from api.security import hash_password
from tests.hubproc import RunningHub
from tests.support import ROOT

PASSWORD = "correct horse battery"
OTHER_SITE = """
sites:
  - id: riverside
    name: Riverside Court
    buildings: [{id: r1, floors: 6}]
    grids: [{id: all, buildings: [r1]}]
    devices:
      - {id: gate-r, model: gate-mqtt, building: r1}
      - {id: el-r1, model: elevator-mqtt, building: r1}
"""
# username -> (role, sites)
USERS: dict[str, tuple[str, list[str]]] = {
    "root": ("admin", ["*"]),
    "olga": ("operator", ["demo"]),
    "tom": ("technician", ["demo"]),
    "bella": ("butler", ["demo"]),
    "rita": ("operator", ["riverside"]),
}


def registry_dir(tmp: Path) -> Path:
    folder = tmp / "registry"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "sites" / "demo.yaml", folder / "demo.yaml")
    (folder / "riverside.yaml").write_text(OTHER_SITE, encoding="utf-8")
    return folder


def add_users(db_url: str, users: dict[str, tuple[str, list[str]]] = USERS) -> dict[str, int]:
    ids = {}
    hashed = hash_password(PASSWORD)
    with psycopg.connect(db_url) as conn:
        for name, (role, sites) in users.items():
            row = conn.execute(
                """INSERT INTO api_users (username, password_hash, role, sites) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (username) DO UPDATE SET role = EXCLUDED.role RETURNING id""",
                (name, hashed, role, sites),
            ).fetchone()
            assert row is not None
            ids[name] = row[0]
    return ids


@dataclass
class ApiHub:
    hub: RunningHub
    url: str
    db_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, user: str | None = None, token: str | None = None) -> httpx.Client:
        headers = {}
        if user is not None:
            token = self.token(user)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=20)

    def token(self, user: str) -> str:
        if user not in self.tokens:
            with httpx.Client(base_url=self.url, timeout=20) as c:
                r = c.post("/auth/token", data={"username": user, "password": PASSWORD})
                assert r.status_code == 200, r.text
                self.tokens[user] = r.json()["access_token"]
        return self.tokens[user]

    def device_id(self, site: str, device: str) -> int:
        assert self.hub.ctx is not None
        return self.hub.ctx.device_ids[(site, device)]

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []


def start_api_hub(db_url: str, broker_url: str, tmp: Path, *, client_id: str = "hub-api-test", **settings: Any) -> Iterator[ApiHub]:
    reg = registry_dir(tmp)
    api_settings = {"command_retry_s": 0.5, **settings.pop("api", {})}
    with RunningHub(db_url, broker_url, reg, components=[ApiComponent()], client_id=client_id, api_port=0,
                    secret_key="test-secret-key-not-for-production", api=api_settings, **settings) as hub:
        assert hub.ctx is not None
        add_users(db_url)
        yield ApiHub(hub, hub.ctx.extras["api_url"], db_url)
