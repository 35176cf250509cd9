"""Push the dashboards to a running Grafana over its HTTP API (grafana-client), idempotently.

The folder is found by uid or created; each dashboard is posted with `overwrite: true` and no
`id`, so Grafana matches it by uid: pushing twice leaves one copy of each, at a new version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import render_dashboards
from dashboards.definitions import FOLDER_TITLE, FOLDER_UID
from hub.errors import HubError


class PushError(HubError):
    """Grafana refused or could not be reached; the message names the step."""


@dataclass(frozen=True)
class PushResult:
    folder_created: bool
    dashboards: list[tuple[str, int | None]]  # (uid, version Grafana reports)


def ensure_folder(api: GrafanaApi) -> bool:
    """True if the folder had to be created."""
    try:
        api.folder.get_folder(FOLDER_UID)
        return False
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    return True


def push(url: str, token: str, *, dashboards: dict[str, dict[str, Any]] | None = None,
         timeout: float = 10.0) -> PushResult:
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout)
    boards = dashboards if dashboards is not None else render_dashboards()
    step = "folder"
    try:
        created = ensure_folder(api)
        results: list[tuple[str, int | None]] = []
        for uid, data in boards.items():
            step = f"dashboard {uid}"
            body = {"dashboard": {k: v for k, v in data.items() if k != "id"}, "folderUid": FOLDER_UID,
                    "overwrite": True, "message": "hub dashboards push"}
            reply = api.dashboard.update_dashboard(body)
            version = reply.get("version") if isinstance(reply, dict) else None
            results.append((uid, version))
    except GrafanaException as exc:
        raise PushError(f"{step}: Grafana answered {exc.status_code or 'nothing'}: {exc.message}") from exc
    return PushResult(created, results)
