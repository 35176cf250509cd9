"""The PostgreSQL query type grafana-foundation-sdk lacks, and helpers to load JSON back.

The SDK (10.x) has builders for panels but no SQL datasource query; a `Dataquery` whose
`to_json()` is Grafana's PostgreSQL target fills the gap. Registering it as a dataquery variant
lets `Dashboard.from_json` parse our targets back into this class instead of an unknown bag.
"""

from __future__ import annotations

import json
from typing import Any, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import encoder, plugins, runtime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard as models

DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE_UID = "hub-postgres"
DATASOURCE = models.DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)


class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL datasource."""

    def __init__(self, ref_id: str = "A", raw_sql: str = "", format: str = "table") -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = format

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id, "rawSql": self.raw_sql, "format": self.format,
            "rawQuery": True, "editorMode": "code",
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        for key in ("refId", "rawSql", "format"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"PostgreSQL target: field {key!r} missing or not a string")
        return cls(data["refId"], data["rawSql"], data["format"])


class SqlTarget(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, *, format: str = "table", ref_id: str = "A") -> None:
        self._query = SqlQuery(ref_id, raw_sql, format)

    def build(self) -> SqlQuery:
        return self._query


def register_types() -> None:
    """Make `Dashboard.from_json` know the SDK's panels and our PostgreSQL target."""
    plugins.register_default_plugins()
    runtime.register_dataquery_variant(runtime.DataqueryConfig(DATASOURCE_TYPE, SqlQuery.from_json))


def to_json(obj: object) -> dict[str, Any]:
    """An SDK model → plain JSON-able dict (what Grafana imports)."""
    data: dict[str, Any] = json.loads(json.dumps(obj, cls=encoder.JSONEncoder))
    return data


def load_dashboard(data: dict[str, Any]) -> models.Dashboard:
    """Parse dashboard JSON back through the SDK's types."""
    register_types()
    return models.Dashboard.from_json(data)
