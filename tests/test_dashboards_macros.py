"""The Grafana macro expander is pure: text in, statement and parameters out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from dashboards.macros import MacroError, QueryContext, expand, format_interval, parse_duration

START = datetime(2026, 11, 18, 0, 0, tzinfo=UTC)
STOP = datetime(2026, 11, 18, 6, 0, tzinfo=UTC)


def ctx(**variables: list[str]) -> QueryContext:
    return QueryContext(START, STOP, timedelta(minutes=5), variables)


def test_time_filter_from_and_to_become_bound_parameters() -> None:
    sql, params = expand("SELECT 1 FROM t WHERE $__timeFilter(t.ts) AND $__timeFrom() < $__timeTo()", ctx())
    assert sql == "SELECT 1 FROM t WHERE t.ts BETWEEN %(__from)s AND %(__to)s AND %(__from)s < %(__to)s"
    assert params == {"__from": "2026-11-18T00:00:00Z", "__to": "2026-11-18T06:00:00Z"}


def test_multi_value_variables_in_all_three_syntaxes() -> None:
    sql, params = expand("site IN ($site) AND b IN (${building}) AND g IN ([[grid]])",
                         ctx(site=["a", "b"], building=["x"], grid=["n"]))
    assert sql == "site IN (%(v_site_0)s, %(v_site_1)s) AND b IN (%(v_building_0)s) AND g IN (%(v_grid_0)s)"
    assert params["v_site_0"] == "a" and params["v_site_1"] == "b" and params["v_grid_0"] == "n"


def test_hostile_variable_values_stay_data() -> None:
    sql, params = expand("SELECT $site::text", ctx(site=["x'); DROP TABLE sites; --"]))
    assert "DROP" not in sql and params["v_site_0"].startswith("x')")


def test_interval_and_time_group() -> None:
    sql, params = expand("SELECT $__timeGroupAlias(ts, $__interval), $__interval_ms", ctx())
    key = next(k for k in params if k.startswith("__bucket"))
    assert params[key] == 300
    assert sql == (f"SELECT to_timestamp(floor(extract(epoch FROM ts) / %({key})s) * %({key})s) "
                   'AS "time", 300000')


def test_percent_signs_are_escaped_for_psycopg() -> None:
    sql, _ = expand("SELECT 1 WHERE kind LIKE 'parking%'", ctx())
    assert sql == "SELECT 1 WHERE kind LIKE 'parking%%'"


@pytest.mark.parametrize("text,error", [
    ("SELECT $nope", "template variable $nope has no value"),
    ("SELECT $__nonsense(x)", "unknown macro $__nonsense"),
    ("SELECT $__timeFilter(a, b)", "takes 1 argument"),
    ("SELECT $__timeGroup(ts, fortnight)", "not a Grafana interval"),
])
def test_bad_panel_sql_is_named(text: str, error: str) -> None:
    with pytest.raises(MacroError, match=error.replace("$", r"\$")):
        expand(text, ctx())


def test_intervals_round_trip() -> None:
    for text in ("30s", "5m", "1h", "1d", "250ms"):
        assert format_interval(parse_duration(text)) == text
    assert format_interval(timedelta(seconds=90)) == "90s"


def test_range_literals_stay_untyped_as_in_grafana(conn: psycopg.Connection) -> None:
    """Grafana inlines '...Z' literals without a type: `$__timeTo() - $__timeFrom()` is an error
    there, so it must be one here too (panels cast where they subtract)."""
    sql, params = expand("SELECT $__timeTo() - $__timeFrom()", ctx())
    with pytest.raises(psycopg.errors.AmbiguousFunction):
        conn.execute(sql.encode(), params)
    conn.rollback()
    sql, params = expand("SELECT $__timeTo()::timestamptz - $__timeFrom()::timestamptz", ctx())
    assert conn.execute(sql.encode(), params).fetchone() == (timedelta(hours=6),)


def test_expanded_statement_runs(conn: psycopg.Connection) -> None:
    sql, params = expand(
        "SELECT $__timeGroupAlias(g, '1h'), count(*) AS n FROM generate_series($__timeFrom()::timestamptz, "
        "$__timeTo()::timestamptz, interval '10 minutes') g WHERE $__timeFilter(g) AND 'a' IN ($site) GROUP BY 1 ORDER BY 1",
        ctx(site=["a", "b"]))
    rows = conn.execute(sql.encode(), params).fetchall()
    assert [n for _, n in rows] == [6, 6, 6, 6, 6, 6, 1]
    assert rows[0][0] == START
