"""The six E-control dashboards, written with grafana-foundation-sdk builders.

Panels take their SQL from `dashboards.queries` (nothing here writes SQL except the template
variables' lists, which live there too). Device, alarm and work-order cells link to the hub's
HTTP API under the `hub_api` text-box variable, so an operator can open the record in one click.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import barchart, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import piechart as pie_models

from dashboards import queries as q
from dashboards.sdk import DATASOURCE, SqlTarget

FOLDER_TITLE = "Facility hub"
FOLDER_UID = "facility-hub"
TAG = "facility-hub"
DEFAULT_API = "http://localhost:8000"

PanelBuilder = cogbuilder.Builder[models.Panel]


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    build: Callable[[], dash.Dashboard]


# -- pieces --------------------------------------------------------------------------------------
def _link(title: str, url: str) -> dict[str, object]:
    return {"title": title, "url": url, "targetBlank": True}


def _cell_links(panel: Any, columns: Sequence[str]) -> Any:
    """Clickable device / alarm / work-order cells that open the record in the hub API."""
    targets = {
        "device": _link("Open device in the hub API", "${hub_api}/devices/${__data.fields.device_key}"),
        "alarm": _link("Open alarm in the hub API", "${hub_api}/alarms/${__value.raw}"),
        "work_order": _link("Open work order in the hub API", "${hub_api}/work-orders/${__value.raw}"),
    }
    for column, link in targets.items():
        if column in columns and (column != "device" or "device_key" in columns):
            panel = panel.override_by_name(column, [models.DynamicConfigValue(id_val="links", value=[link])])
    if "device_key" in columns:
        panel = panel.override_by_name("device_key", [models.DynamicConfigValue(id_val="custom.hidden", value=True)])
    return panel


def _common(panel: Any, query: q.PanelQuery, title: str, description: str, w: int, h: int) -> Any:
    return (panel.title(title).description(description).datasource(DATASOURCE)
            .with_target(SqlTarget(query.sql, format=query.format)).span(w).height(h))


def table_panel(query: q.PanelQuery, title: str, description: str, *, w: int = 24, h: int = 8) -> PanelBuilder:
    panel = _common(table.Panel(), query, title, description, w, h).cell_height(common.TableCellHeight.SM)
    return _cell_links(panel, query.columns)


def stat_panel(query: q.PanelQuery, title: str, description: str, *, w: int = 6, h: int = 4,
               unit: str | None = None, red_from: float | None = None) -> PanelBuilder:
    panel = _common(stat.Panel(), query, title, description, w, h)
    panel = panel.text_mode(common.BigValueTextMode.VALUE_AND_NAME).graph_mode(common.BigValueGraphMode.NONE)
    panel = panel.reduce_options(common_reduce(["lastNotNull"]))
    if unit:
        panel = panel.unit(unit)
    if red_from is not None:
        panel = panel.thresholds(dash.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps([
            models.Threshold(value=None, color="green"), models.Threshold(value=red_from, color="red")]))
        panel = panel.color_mode(common.BigValueColorMode.BACKGROUND)
    return panel


def common_reduce(calcs: list[str]) -> Any:
    return common_builders.ReduceDataOptions().calcs(calcs).values(False).fields("")


def series_panel(query: q.PanelQuery, title: str, description: str, *, w: int = 12, h: int = 8,
                 unit: str | None = None, bars: bool = False) -> PanelBuilder:
    panel = _common(timeseries.Panel(), query, title, description, w, h).legend(
        common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
        .placement(common.LegendPlacement.BOTTOM).show_legend(True))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    if unit:
        panel = panel.unit(unit)
    return panel


def pie_panel(query: q.PanelQuery, title: str, description: str, *, w: int = 6, h: int = 8) -> PanelBuilder:
    panel = _common(piechart.Panel(), query, title, description, w, h)
    panel = panel.pie_type(piechart_type()).reduce_options(
        common_reduce(["lastNotNull"]).values(True))
    return panel


def piechart_type() -> Any:
    return pie_models.PieChartType.DONUT


def bar_panel(query: q.PanelQuery, title: str, description: str, *, w: int = 12, h: int = 8) -> PanelBuilder:
    panel = _common(barchart.Panel(), query, title, description, w, h)
    return panel.stacking(common.StackingMode.NORMAL)


def variables(*names: str) -> list[cogbuilder.Builder[models.VariableModel]]:
    out: list[cogbuilder.Builder[models.VariableModel]] = []
    labels = {"site": "Site", "building": "Building", "grid": "Grid (网格)", "kind": "Device kind"}
    for name in names:
        out.append(
            dash.QueryVariable(name).label(labels[name]).datasource(DATASOURCE).query(q.VARIABLES[name])
            .multi(True).include_all(True).refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .current(models.VariableOption(selected=True, text="All", value="$__all"))
        )
    out.append(dash.TextBoxVariable("hub_api").label("Hub API").default_value(DEFAULT_API)
               .description("Base URL of the hub's HTTP API; device, alarm and work-order links open there"))
    return out


def _base(uid: str, title: str, description: str, *var_names: str, time_from: str = "now-6h") -> dash.Dashboard:
    board = (dash.Dashboard(title).uid(uid).description(description).tags([TAG, "e-control"])
             .time(time_from, "now").refresh("30s").timezone("browser").readonly()
             .tooltip(models.DashboardCursorSync.CROSSHAIR))
    for variable in variables(*var_names):
        board = board.with_variable(variable)
    return board.link(dash.DashboardLink("Facility hub dashboards").type(models.DashboardLinkType.DASHBOARDS)
                      .tags([TAG]).as_dropdown(True).include_vars(True).keep_time(True))


def _assemble(board: dash.Dashboard, panels: list[PanelBuilder]) -> dash.Dashboard:
    """Place panels left to right, wrapping at Grafana's 24 columns; ids in order."""
    x = y = row_h = 0
    for number, builder in enumerate(panels, start=1):
        panel = builder.build()
        pos = panel.grid_pos or models.GridPos()
        if x + pos.w > 24:
            x, y, row_h = 0, y + row_h, 0
        panel.grid_pos = models.GridPos(h=pos.h, w=pos.w, x=x, y=y)
        panel.id_val = number
        x, row_h = x + pos.w, max(row_h, pos.h)
        board = board.with_panel(_Built(panel))
    return board


class _Built(cogbuilder.Builder[models.Panel]):
    def __init__(self, panel: models.Panel) -> None:
        self._panel = panel

    def build(self) -> models.Panel:
        return self._panel


# -- dashboards ----------------------------------------------------------------------------------
def overview() -> dash.Dashboard:
    return _assemble(
        _base("hub-overview", "E-control overview", "All sites at a glance: devices, alarms, work orders, staff",
              "site", "building", "grid", "kind"),
        [
            stat_panel(q.DEVICES_ONLINE, "Devices online", "Devices whose last status is online, of all active devices", w=6, h=8),
            stat_panel(q.OPEN_WORK_ORDERS, "Open work orders / SLA breaches",
                       "Orders created, assigned, accepted, on site or reopened; breaches are those with a running accept, arrive or resolve clock past its due time", w=6, h=8),
            pie_panel(q.ALARMS_BY_SEVERITY, "Active alarms by severity",
                      "Open incidents that are not shelved: alarms grouped under a root cause (an entrapment's symptoms, a power loss's offline devices) count once, as their root", w=6, h=8),
            bar_panel(q.ONLINE_BY_KIND, "Online / offline by kind", "Device status per device kind", w=6, h=8),
            table_panel(q.SITES, "Sites", "Per site: devices, online share and active alarms (incidents: grouped alarms count once)", w=24, h=6),
            table_panel(q.ACTIVE_ALARMS, "Active alarms",
                        "One row per incident, most severe first, then oldest; grouped = open alarms grouped under it (its root cause explains them); click a device or alarm", w=24, h=8),
            series_panel(q.DEVICES_REPORTING, "Devices reporting", "Devices with data in each interval (raw / 1-minute / 1-hour by range)", w=12),
            table_panel(q.STAFF_ON_DUTY, "Staff on duty", "Rostered now in each site's local time, or checked in: attendance, leave, open orders, available for dispatch", w=12),
            table_panel(q.WORK_ORDER_QUEUE, "Open work orders and SLA countdown",
                        "The earliest running clock (accept, arrive, resolve) of each open order; negative minutes are late", w=24),
        ],
    )


def elevators() -> dash.Dashboard:
    return _assemble(
        _base("hub-elevators", "Elevators", "Lift status board, faults, trips, entrapments, time out of service",
              "site", "building", "grid"),
        [
            stat_panel(q.ELEVATOR_ENTRAPMENTS, "Entrapments", "Passenger-trapped events (code 11) in range, and entrapment alarms open now", w=6, red_from=1),
            series_panel(q.ELEVATOR_TRIPS, "Trips", "Rise of the lifts' trip counters per interval", w=18, h=4, bars=True),
            table_panel(q.ELEVATOR_BOARD, "Status board", "Latest service mode, floor, direction and doors of every lift", w=24, h=9),
            table_panel(q.ELEVATOR_FAULT_COUNTS, "Faults", "GB/T 24476 fault codes reported in range", w=12),
            table_panel(q.ELEVATOR_OUT_OF_SERVICE, "Time out of service", "Minutes not in normal service mode (1-minute rollup)", w=12),
        ],
    )


def fire() -> dash.Dashboard:
    return _assemble(
        _base("hub-fire", "Fire", "Fire panels (GB 26875), detectors in alarm, fault or shielded, sprinkler pressure",
              "site", "building", "grid"),
        [
            stat_panel(q.FIRE_DETECTORS, "Detectors", "Detectors in alarm, in fault and shielded (a shielded detector is a hidden risk)", w=24, red_from=1),
            table_panel(q.FIRE_PANELS, "Panel states", "Latest system status bits of each fire alarm panel", w=24),
            series_panel(q.FIRE_PRESSURE, "Sprinkler pressure (MPa)", "Mean pressure per interval; a drop is a supervisory alarm", w=24),
        ],
    )


def access() -> dash.Dashboard:
    return _assemble(
        _base("hub-access", "Access", "Passes and denials, forced and held doors, visitor passes", "site", "building", "grid"),
        [
            series_panel(q.ACCESS_FLOW, "Passes granted / denied", "Gate events per interval", w=16, bars=True),
            stat_panel(q.ACCESS_VISITORS, "Visitor passes", "Entries on visitor passes and distinct passes used", w=8, h=8),
            table_panel(q.ACCESS_DOORS, "Doors", "Denials, forced and held-open doors and tamper per gate", w=24),
        ],
    )


def parking() -> dash.Dashboard:
    return _assemble(
        _base("hub-parking", "Parking", "Occupancy, entries and exits, fees, barrier faults", "site", "building", "grid"),
        [
            stat_panel(q.PARKING_OCCUPANCY, "Occupancy", "Latest free and occupied spaces of the space counters", w=12),
            stat_panel(q.PARKING_FEES, "Fees", "Fees charged on exits in range (CNY)", w=12),
            series_panel(q.PARKING_FLOWS, "Entries / exits", "Vehicles per interval", w=12, bars=True),
            series_panel(q.PARKING_FREE_TREND, "Free spaces", "Lowest free-space count per interval", w=12),
            table_panel(q.PARKING_BARRIERS, "Barriers", "Barrier fault now and fault events in range", w=24),
        ],
    )


def work_orders() -> dash.Dashboard:
    return _assemble(
        _base("hub-workorders", "Work-order KPIs", "On-time rates, response and resolution times, by grid and person, satisfaction",
              "site", "grid", time_from="now-7d"),
        [
            stat_panel(q.WO_ON_TIME, "On-time rates", "接单及时率 / 到场及时率 / 完成及时率: share of orders judged whose step was done by its due time (wo_kpi_orders)", w=16),
            bar_panel(q.WO_BACKLOG, "Backlog by state", "Open orders per state now, overdue and escalated (wo_kpi_backlog)", w=8, h=4),
            table_panel(q.WO_TIMES, "Response and resolution times", "Mean and p90 minutes from the start of the SLA clock to accepted, on site and resolved, per order kind", w=24),
            table_panel(q.WO_BY_GRID, "By grid", "Orders, open orders, the three on-time rates, mean resolution time and rating per grid", w=12),
            table_panel(q.WO_BY_PERSON, "By person", "Orders, open orders, the three on-time rates, response time and rating per assignee", w=12),
            series_panel(q.WO_SATISFACTION, "Resident satisfaction", "Mean rating (1-5) and share rated 4-5 of resident orders per interval they were raised in", w=24),
        ],
    )


DASHBOARDS: tuple[DashboardSpec, ...] = (
    DashboardSpec("hub-overview", "E-control overview", "everything at a glance", overview),
    DashboardSpec("hub-elevators", "Elevators", "lifts", elevators),
    DashboardSpec("hub-fire", "Fire", "fire protection", fire),
    DashboardSpec("hub-access", "Access", "gates and doors", access),
    DashboardSpec("hub-parking", "Parking", "parking", parking),
    DashboardSpec("hub-workorders", "Work-order KPIs", "work orders", work_orders),
)
