"""Dashboard JSON, provisioning files and the push to Grafana's HTTP API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import dashboard as models

from dashboards.build import render_dashboards
from dashboards.push import PushError, push
from dashboards.queries import PANELS
from dashboards.sdk import DATASOURCE_TYPE, SqlQuery, load_dashboard, to_json
from hub.cli import main


@pytest.fixture(scope="module")
def boards() -> dict[str, dict[str, Any]]:
    return render_dashboards()


def test_six_dashboards_cover_every_panel_query(boards: dict[str, dict[str, Any]]) -> None:
    assert list(boards) == ["hub-overview", "hub-elevators", "hub-fire", "hub-access", "hub-parking", "hub-workorders"]
    used = [t["rawSql"] for b in boards.values() for p in b["panels"] for t in p["targets"]]
    assert sorted(used) == sorted(p.sql for p in PANELS)  # each query on exactly one panel
    for board in boards.values():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids)
        for p in board["panels"]:
            pos = p["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (board["uid"], p["title"])
            assert p["datasource"] == {"type": DATASOURCE_TYPE, "uid": "hub-postgres"}


def test_json_loads_back_through_the_sdk_types(boards: dict[str, dict[str, Any]]) -> None:
    for uid, data in boards.items():
        text = json.dumps(data)
        board = load_dashboard(json.loads(text))
        assert isinstance(board, models.Dashboard) and board.uid == uid
        assert board.panels
        for panel in board.panels:
            assert isinstance(panel, models.Panel)
            assert panel.targets and all(isinstance(t, SqlQuery) for t in panel.targets)
            assert not any(isinstance(t, UnknownDataquery) for t in panel.targets)
        # Parsed and re-serialised, the dashboard is the same document.
        assert to_json(board) == data


def test_loading_rejects_a_broken_target(boards: dict[str, dict[str, Any]]) -> None:
    data = json.loads(json.dumps(boards["hub-fire"]))
    del data["panels"][0]["targets"][0]["rawSql"]
    with pytest.raises(ValueError, match="rawSql"):
        load_dashboard(data)


def test_template_variables_and_links(boards: dict[str, dict[str, Any]]) -> None:
    names = [v["name"] for v in boards["hub-overview"]["templating"]["list"]]
    assert names == ["site", "building", "grid", "kind", "hub_api"]
    for uid in ("hub-elevators", "hub-fire", "hub-access", "hub-parking"):
        assert [v["name"] for v in boards[uid]["templating"]["list"]][:3] == ["site", "building", "grid"]
    text = json.dumps(boards)
    assert "${hub_api}/devices/${__data.fields.device_key}" in text
    assert "${hub_api}/work-orders/${__value.raw}" in text
    assert all(b["links"][0]["type"] == "dashboards" for b in boards.values())


def test_build_command_writes_dashboards_and_provisioning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql://hub:sekret-pass@db.example:6543/hubdb")
    assert main(["dashboards", "build", "--out", str(tmp_path)]) == 0
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["dashboards/hub-access.json", "dashboards/hub-elevators.json", "dashboards/hub-fire.json",
                     "dashboards/hub-overview.json", "dashboards/hub-parking.json", "dashboards/hub-workorders.json",
                     "provisioning/dashboards/facility-hub.yaml", "provisioning/datasources/facility-hub.yaml"]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert "sekret" not in path.read_text(encoding="utf-8")
    ds = yaml.safe_load((tmp_path / "provisioning/datasources/facility-hub.yaml").read_text())["datasources"][0]
    assert (ds["type"], ds["uid"], ds["user"], ds["url"]) == (DATASOURCE_TYPE, "hub-postgres", "hub_grafana", "db.example:6543")
    assert ds["jsonData"]["database"] == "hubdb"
    assert ds["secureJsonData"] == {"password": "${HUB_GRAFANA_DB_PASSWORD}"}
    prov = yaml.safe_load((tmp_path / "provisioning/dashboards/facility-hub.yaml").read_text())["providers"][0]
    assert Path(prov["options"]["path"]) == (tmp_path / "dashboards").resolve()
    loaded = load_dashboard(json.loads((tmp_path / "dashboards/hub-overview.json").read_text()))
    assert loaded.title == "E-control overview"


# -- push against a small recording HTTP server ----------------------------------------------------
@dataclass
class FakeGrafana:
    """Answers the few Grafana API calls a push makes, and records every request."""

    token: str = "glsa_test"
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    folders: dict[str, str] = field(default_factory=dict)
    dashboards: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    url: str = ""


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    state = FakeGrafana()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, code: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            state.requests.append((method, self.path, dict(self.headers), body))
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._reply(401, {"message": "invalid API key"})
                return
            if method == "GET" and self.path.startswith("/api/folders/"):
                uid = self.path.rsplit("/", 1)[1]
                if uid in state.folders:
                    self._reply(200, {"uid": uid, "title": state.folders[uid]})
                else:
                    self._reply(404, {"message": "folder not found"})
            elif method == "POST" and self.path == "/api/folders":
                state.folders[body["uid"]] = body["title"]
                self._reply(200, {"uid": body["uid"], "title": body["title"]})
            elif method == "POST" and self.path == "/api/dashboards/db":
                board = body["dashboard"]
                if body.get("folderUid") not in state.folders:
                    self._reply(400, {"message": "folder not found"})
                    return
                old = state.dashboards.get(board["uid"])
                if old is not None and not body.get("overwrite"):
                    self._reply(412, {"message": "version-mismatch"})
                    return
                version = (old[0] + 1) if old else 1
                state.dashboards[board["uid"]] = (version, board)
                self._reply(200, {"status": "success", "uid": board["uid"], "version": version})
            else:
                self._reply(404, {"message": "not found"})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def test_push_creates_folder_and_overwrites_by_uid(grafana: FakeGrafana, boards: dict[str, dict[str, Any]]) -> None:
    first = push(grafana.url, grafana.token)
    assert first.folder_created and [v for _, v in first.dashboards] == [1] * 6
    calls = [(m, p) for m, p, _, _ in grafana.requests]
    assert calls == [("GET", "/api/folders/facility-hub"), ("POST", "/api/folders")] + [("POST", "/api/dashboards/db")] * 6
    for _method, _, headers, body in grafana.requests:
        assert headers["Authorization"] == "Bearer glsa_test"
        if body and "dashboard" in body:
            assert body["overwrite"] is True and body["folderUid"] == "facility-hub"
            assert "id" not in body["dashboard"]
            assert body["dashboard"] == boards[body["dashboard"]["uid"]]
    grafana.requests.clear()
    second = push(grafana.url, grafana.token)
    assert not second.folder_created and [v for _, v in second.dashboards] == [2] * 6
    assert [(m, p) for m, p, _, _ in grafana.requests][:2] == [("GET", "/api/folders/facility-hub"), ("POST", "/api/dashboards/db")]
    assert sorted(grafana.dashboards) == sorted(boards) and list(grafana.folders) == ["facility-hub"]


def test_push_reports_a_refusal_clearly_and_audits_both(grafana: FakeGrafana, db_url: str,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PushError, match="folder: Grafana answered 401"):
        push(grafana.url, "wrong-token")
    monkeypatch.setenv("HUB_DATABASE_URL", db_url)
    assert main(["dashboards", "push", "--url", grafana.url, "--token", "wrong-token"]) == 2
    err = capsys.readouterr().err
    assert "401" in err and "wrong-token" not in err
    assert main(["dashboards", "push", "--url", grafana.url, "--token", grafana.token]) == 0
    assert len(grafana.dashboards) == 6
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT origin, target, after FROM audit_log WHERE action = 'dashboards.push' "
                            "AND target = %s ORDER BY id", (grafana.url,)).fetchall()
    assert [(r[0], r[2]["ok"]) for r in rows] == [("cli", False), ("cli", True)]
    assert rows[1][2]["dashboards"]["hub-overview"] == 1
    assert "wrong-token" not in json.dumps([r[2] for r in rows])


def test_fault_labels_in_sql_match_the_catalogue() -> None:
    from dashboards.queries import ELEVATOR_FAULT_COUNTS, ELEVATOR_FAULTS

    for code, name in ELEVATOR_FAULTS.items():
        assert f"('{code}', '{name}')" in ELEVATOR_FAULT_COUNTS.sql
