"""Every panel's SQL, in one place, exactly as Grafana runs it (Grafana macros, `$site`-style
template variables). Tests expand and run each one against a real database; the dashboard
builder puts the same text into the panels.

Readings over a time range go through `hub_readings_tiered` filtered by `hub_tier(from, to)`
(migration 0400): raw readings for ranges up to 30 minutes, the 1-minute rollup up to 6 hours,
the 1-hour rollup beyond, so a week-long panel reads ~60x fewer rows than the raw table.

Work-order panels read the work-order KPI views of migration 0201 (`wo_kpi_*`, `staff_duty_at`;
docs/workorders.md), so their numbers are the ones the work-order feature defines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Format = Literal["table", "time_series"]

# Event codes the panels count (domain.md; simulators and drivers publish these on `event`).
ELEVATOR_FAULTS: dict[str, str] = {
    "01": "safety circuit open", "02": "door close fault", "03": "door open fault",
    "04": "stopped outside unlocking zone", "05": "unintended car movement",
    "06": "motor run-time limiter", "07": "floor position lost", "08": "restart-prevention fault",
    "09": "over travel top", "10": "over travel bottom", "11": "passenger trapped",
    "61": "escalator safety circuit open", "62": "escalator overspeed", "63": "unintended reversal",
    "64": "missing step or pallet", "65": "escalator restart-prevention fault",
}
ENTRAPMENT_CODE = "11"
ACCESS_CODES = ("granted", "denied", "door_forced_open", "door_held_open", "tamper")
PARKING_CODES = ("entry", "exit", "barrier_fault")


@dataclass(frozen=True)
class PanelQuery:
    """One panel's statement and what it must return."""

    key: str
    sql: str
    columns: tuple[str, ...]
    format: Format = "table"


# -- Alarms as incidents ------------------------------------------------------------------------
# The rule engine groups alarms under their root cause (`alarms.parent_id`, docs/rules.md): a
# building's power loss is one parent over the devices that went offline first, an entrapment the
# parent of its lift's fault codes, alarm button and stopped-outside-door-zone alarms. What the
# operator watches are incidents, so the active-alarm panels (and `hub top`) show an alarm only
# when it is an incident of its own, and count its open children in `grouped`:
# - it has no parent; or
# - its parent has closed (a child still open, e.g. waiting for its acknowledgement, would
#   otherwise be on no list at all); or
# - its parent has cleared while it is still up: a lift's safety circuit still open after the
#   rescue. Dispatch gives that child an order of its own (`_OWN_INCIDENT` in
#   hub/dispatch/engine.py), so it is an incident of its own here too.
# A child is shown under its parent while the parent is open; a shelved parent hides its incident.
# `a` is the alarm, `p` its parent (`LEFT JOIN alarms p ON p.id = a.parent_id`). A closed alarm
# is an incident of its own only if it has no parent, so in history a closed child stays with its
# incident. The text is `rules.alarms.OWN_INCIDENT` (the API's `GET /alarms?top_level=true` uses
# it too); the panels below spell it out so their SQL reads as Grafana runs it, and a test checks
# that each holds this exact text.


# -- E-control overview -------------------------------------------------------------------------
# Active alarms per site: incidents (OWN_INCIDENT), as on the Active alarms list.
SITES = PanelQuery(
    "overview.sites",
    """SELECT s.id AS site, s.name,
       count(d.id) AS devices,
       count(d.id) FILTER (WHERE d.online) AS online,
       count(d.id) FILTER (WHERE d.online IS NOT TRUE) AS offline,
       round(100.0 * count(d.id) FILTER (WHERE d.online) / nullif(count(d.id), 0), 1) AS online_pct,
       (SELECT count(*) FROM alarms a LEFT JOIN alarms p ON p.id = a.parent_id
         WHERE a.site_id = s.id AND a.closed_at IS NULL AND a.state <> 'shelved'
           AND (a.parent_id IS NULL OR (a.closed_at IS NULL AND (p.closed_at IS NOT NULL OR (p.cleared_at IS NOT NULL AND a.cleared_at IS NULL))))) AS active_alarms
  FROM sites s
  LEFT JOIN hub_dash_devices d
    ON d.site_id = s.id AND d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)
 WHERE s.id IN ($site)
 GROUP BY s.id, s.name
 ORDER BY s.id""",
    ("site", "name", "devices", "online", "offline", "online_pct", "active_alarms"),
)

DEVICES_ONLINE = PanelQuery(
    "overview.devices_online",
    """SELECT count(*) FILTER (WHERE d.online) AS online, count(*) AS total
  FROM hub_dash_devices d
 WHERE d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)""",
    ("online", "total"),
)

ONLINE_BY_KIND = PanelQuery(
    "overview.online_by_kind",
    """SELECT d.kind, count(*) FILTER (WHERE d.online) AS online,
       count(*) FILTER (WHERE d.online IS NOT TRUE) AS offline
  FROM hub_dash_devices d
 WHERE d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)
 GROUP BY d.kind
 ORDER BY d.kind""",
    ("kind", "online", "offline"),
)

# Active alarms by severity on the wall screen: incidents (OWN_INCIDENT) by the severity of the
# alarm shown, so the donut adds up to the rows of the Active alarms list; an entrapment with its
# three symptoms is one critical, not one critical and three more.
ALARMS_BY_SEVERITY = PanelQuery(
    "overview.alarms_by_severity",
    """SELECT sev.severity, count(a.id) AS alarms
  FROM (VALUES ('critical', 1), ('major', 2), ('minor', 3), ('warning', 4)) AS sev (severity, rank)
  LEFT JOIN (alarms a LEFT JOIN alarms p ON p.id = a.parent_id LEFT JOIN hub_dash_devices d ON d.id = a.device_id)
    ON a.severity = sev.severity AND a.closed_at IS NULL AND a.state <> 'shelved'
   AND (a.parent_id IS NULL OR (a.closed_at IS NULL AND (p.closed_at IS NOT NULL OR (p.cleared_at IS NOT NULL AND a.cleared_at IS NULL))))
   AND a.site_id IN ($site)
   AND (a.device_id IS NULL OR (d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)))
 GROUP BY sev.severity, sev.rank
 ORDER BY sev.rank""",
    ("severity", "alarms"),
)

# The operator's list: one row per incident (OWN_INCIDENT), `grouped` = its open, unshelved
# children that are not incidents of their own (every active alarm is a row or counted in exactly
# one row's `grouped`, when no parent is shelved and no filter hides a parent). Devices of a power
# loss that went offline after the parent formed raise no alarm of their own (the parent's
# `detail.devices` and title list them), so they are not in `grouped`.
ACTIVE_ALARMS = PanelQuery(
    "overview.active_alarms",
    """SELECT a.id AS alarm, a.raised_at, a.severity, a.kind, a.title, a.state, a.site_id AS site,
       d.device_id AS device, d.id AS device_key,
       round(extract(epoch FROM ($__timeTo() - a.raised_at)) / 60.0) AS age_min,
       (SELECT count(*) FROM alarms c
         WHERE c.parent_id = a.id AND c.closed_at IS NULL AND c.state <> 'shelved'
           AND NOT (a.cleared_at IS NOT NULL AND c.cleared_at IS NULL)) AS grouped
  FROM alarms a
  LEFT JOIN alarms p ON p.id = a.parent_id
  LEFT JOIN hub_dash_devices d ON d.id = a.device_id
 WHERE a.closed_at IS NULL AND a.state <> 'shelved' AND a.site_id IN ($site)
   AND (a.parent_id IS NULL OR (a.closed_at IS NULL AND (p.closed_at IS NOT NULL OR (p.cleared_at IS NOT NULL AND a.cleared_at IS NULL))))
   AND (a.device_id IS NULL OR (d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)))
 ORDER BY CASE a.severity WHEN 'critical' THEN 1 WHEN 'major' THEN 2 WHEN 'minor' THEN 3 ELSE 4 END,
          a.raised_at
 LIMIT 200""",
    ("alarm", "raised_at", "severity", "kind", "title", "state", "site", "device", "device_key", "age_min", "grouped"),
)

# Devices with data in each interval, seen through each device's probe metric (migration 0400).
DEVICES_REPORTING = PanelQuery(
    "overview.devices_reporting",
    """SELECT $__timeGroupAlias(r.bucket, $__interval), count(DISTINCT r.device_id) AS reporting
  FROM hub_dash_devices d
  JOIN hub_readings_tiered r ON r.device_id = d.id AND r.metric = d.probe_metric
 WHERE r.tier = hub_tier($__timeFrom(), $__timeTo()) AND $__timeFilter(r.bucket)
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid) AND d.kind IN ($kind)
 GROUP BY 1
 ORDER BY 1""",
    ("time", "reporting"),
    "time_series",
)

# Who is on duty at the end of the dashboard range ("now" by default), as dispatch sees it:
# `staff_duty_at` (migration 0201) reads the roster in each site's local time, the latest
# check-in/out (attendance) and leave. Listed: rostered now, or checked in outside their shift.
STAFF_ON_DUTY = PanelQuery(
    "overview.staff_on_duty",
    """SELECT u.staff_id AS staff, u.name, u.role, u.site_id AS site,
       array_to_string(u.grids, ', ') AS grids, u.on_shift, u.attendance, u.on_leave,
       u.open_orders, u.available
  FROM staff_duty_at($__timeTo()::timestamptz) u
 WHERE u.site_id IN ($site) AND (u.on_shift OR u.attendance = 'in')
 ORDER BY u.site_id, u.role, u.name""",
    ("staff", "name", "role", "site", "grids", "on_shift", "attendance", "on_leave", "open_orders",
     "available"),
)

# Open work orders now, from the KPI view `wo_kpi_orders` (migration 0201): open = created,
# assigned, accepted, on site or reopened; breached (`is_overdue`) = a running clock (accept,
# arrive, resolve) is past its due time. Both are judged at the database's now(), like the views.
OPEN_WORK_ORDERS = PanelQuery(
    "overview.open_work_orders",
    """SELECT count(*) AS open_orders, count(*) FILTER (WHERE o.is_overdue) AS sla_breached
  FROM wo_kpi_orders o
 WHERE o.is_open AND o.site_id IN ($site)""",
    ("open_orders", "sla_breached"),
)

# The next due time of each open order: the earliest clock still running (the same rule as
# `wo_kpi_orders.is_overdue`), and which step it is.
WORK_ORDER_QUEUE = PanelQuery(
    "overview.work_order_queue",
    """SELECT o.id AS work_order, o.site_id AS site, w.title, o.kind, o.priority, o.state, o.assignee,
       nd.due_step, nd.due_at,
       round(extract(epoch FROM (nd.due_at - now())) / 60.0) AS minutes_left,
       o.escalation_level
  FROM wo_kpi_orders o
  JOIN work_orders w ON w.id = o.id
  LEFT JOIN LATERAL (
        SELECT c.step AS due_step, c.due AS due_at
          FROM (VALUES ('accept', CASE WHEN o.accepted_at IS NULL THEN o.accept_due END),
                       ('arrive', CASE WHEN o.on_site_at IS NULL THEN o.arrive_due END),
                       ('resolve', CASE WHEN o.resolved_at IS NULL THEN o.resolve_due END)) AS c (step, due)
         WHERE c.due IS NOT NULL
         ORDER BY c.due
         LIMIT 1) nd ON true
 WHERE o.is_open AND o.site_id IN ($site)
 ORDER BY nd.due_at NULLS LAST, o.id
 LIMIT 200""",
    ("work_order", "site", "title", "kind", "priority", "state", "assignee", "due_step", "due_at",
     "minutes_left", "escalation_level"),
)

# -- Elevators ----------------------------------------------------------------------------------
ELEVATOR_BOARD = PanelQuery(
    "elevators.status_board",
    """SELECT d.device_id AS device, d.id AS device_key, d.name, d.building, d.online,
       st.service_mode, st.floor, st.direction, st.door_state, st.running, st.passenger, d.last_seen
  FROM hub_dash_devices d
  LEFT JOIN LATERAL (
        SELECT max(l.label) FILTER (WHERE m.metric = 'service_mode') AS service_mode,
               max(l.value) FILTER (WHERE m.metric = 'floor') AS floor,
               max(l.label) FILTER (WHERE m.metric = 'direction') AS direction,
               max(l.label) FILTER (WHERE m.metric = 'door_state') AS door_state,
               max(l.value) FILTER (WHERE m.metric = 'running') AS running,
               max(l.value) FILTER (WHERE m.metric = 'passenger') AS passenger
          FROM unnest(ARRAY['service_mode', 'floor', 'direction', 'door_state', 'running',
                            'passenger']) AS m (metric)
          CROSS JOIN LATERAL (
                SELECT r.value, coalesce(r.text_value, r.value::text) AS label
                  FROM readings r
                 WHERE r.device_id = d.id AND r.metric = m.metric AND r.ts <= $__timeTo()
                   AND r.quality < 2
                 ORDER BY r.ts DESC LIMIT 1) l) st ON true
 WHERE d.kind = 'elevator' AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 ORDER BY d.site_id, d.building, d.device_id""",
    ("device", "device_key", "name", "building", "online", "service_mode", "floor", "direction",
     "door_state", "running", "passenger", "last_seen"),
)

ELEVATOR_FAULT_COUNTS = PanelQuery(
    "elevators.faults",
    """SELECT f.code, f.fault, count(e.ts) AS events, count(DISTINCT e.device_id) AS lifts
  FROM (VALUES ('01', 'safety circuit open'),
              ('02', 'door close fault'),
              ('03', 'door open fault'),
              ('04', 'stopped outside unlocking zone'),
              ('05', 'unintended car movement'),
              ('06', 'motor run-time limiter'),
              ('07', 'floor position lost'),
              ('08', 'restart-prevention fault'),
              ('09', 'over travel top'),
              ('10', 'over travel bottom'),
              ('11', 'passenger trapped'),
              ('61', 'escalator safety circuit open'),
              ('62', 'escalator overspeed'),
              ('63', 'unintended reversal'),
              ('64', 'missing step or pallet'),
              ('65', 'escalator restart-prevention fault')) AS f (code, fault)
  JOIN events e ON e.code = f.code AND $__timeFilter(e.ts)
  JOIN hub_dash_devices d ON d.id = e.device_id
 WHERE d.kind = 'elevator' AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY f.code, f.fault
 ORDER BY events DESC, f.code""",
    ("code", "fault", "events", "lifts"),
)

# Trips from the lifts' trip counters: the counter's rise inside each interval, summed.
ELEVATOR_TRIPS = PanelQuery(
    "elevators.trips",
    """SELECT t.time, sum(t.rise) AS trips
  FROM (SELECT $__timeGroup(r.bucket, $__interval) AS time, r.device_id,
               max(r.max_value) - min(r.min_value) AS rise
          FROM hub_readings_tiered r
          JOIN hub_dash_devices d ON d.id = r.device_id
         WHERE r.tier = hub_tier($__timeFrom(), $__timeTo()) AND $__timeFilter(r.bucket)
           AND r.metric = 'trips' AND d.kind = 'elevator'
           AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
         GROUP BY 1, 2) t
 GROUP BY t.time
 ORDER BY t.time""",
    ("time", "trips"),
    "time_series",
)

# Active entrapment alarms need no incident filter: an entrapment is a root cause and never
# anyone's child (grouping is one level, docs/rules.md).
ELEVATOR_ENTRAPMENTS = PanelQuery(
    "elevators.entrapments",
    """SELECT (SELECT count(*) FROM events e JOIN hub_dash_devices d ON d.id = e.device_id
            WHERE e.code = '11' AND $__timeFilter(e.ts) AND d.kind = 'elevator'
              AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)) AS entrapments,
       (SELECT count(*) FROM alarms a
            WHERE a.kind = 'entrapment' AND a.closed_at IS NULL AND a.site_id IN ($site)) AS active_entrapment_alarms""",
    ("entrapments", "active_entrapment_alarms"),
)

# Minutes (1-minute rollup) in which a lift was in any service mode but 1 (normal).
ELEVATOR_OUT_OF_SERVICE = PanelQuery(
    "elevators.out_of_service",
    """SELECT d.device_id AS device, d.id AS device_key, d.name,
       count(r.bucket) FILTER (WHERE r.min_value <> 1 OR r.max_value <> 1) AS minutes_out,
       round(100.0 * count(r.bucket) FILTER (WHERE r.min_value <> 1 OR r.max_value <> 1)
             / greatest(1, extract(epoch FROM ($__timeTo()::timestamptz - $__timeFrom()::timestamptz)) / 60.0), 2) AS pct_of_range
  FROM hub_dash_devices d
  LEFT JOIN readings_1m r ON r.device_id = d.id AND r.metric = 'service_mode' AND $__timeFilter(r.bucket)
 WHERE d.kind = 'elevator' AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY d.device_id, d.id, d.name
 ORDER BY minutes_out DESC, d.device_id""",
    ("device", "device_key", "name", "minutes_out", "pct_of_range"),
)

# -- Fire -------------------------------------------------------------------------------------
FIRE_PANELS = PanelQuery(
    "fire.panel_states",
    """SELECT d.device_id AS device, d.id AS device_key, d.name, d.building, d.online,
       st.fire_alarm, st.fault, st.shielded, st.supervisory, st.main_power_fault,
       st.backup_power_fault, st.bus_fault, st.detectors_in_alarm, st.points_shielded
  FROM hub_dash_devices d
  LEFT JOIN LATERAL (
        SELECT max(l.value) FILTER (WHERE m.metric = 'fire_alarm') AS fire_alarm,
               max(l.value) FILTER (WHERE m.metric = 'fault') AS fault,
               max(l.value) FILTER (WHERE m.metric = 'shielded') AS shielded,
               max(l.value) FILTER (WHERE m.metric = 'supervisory') AS supervisory,
               max(l.value) FILTER (WHERE m.metric = 'main_power_fault') AS main_power_fault,
               max(l.value) FILTER (WHERE m.metric = 'backup_power_fault') AS backup_power_fault,
               max(l.value) FILTER (WHERE m.metric = 'bus_fault') AS bus_fault,
               max(l.value) FILTER (WHERE m.metric = 'detectors_in_alarm') AS detectors_in_alarm,
               max(l.value) FILTER (WHERE m.metric = 'points_shielded') AS points_shielded
          FROM unnest(ARRAY['fire_alarm', 'fault', 'shielded', 'supervisory', 'main_power_fault',
                            'backup_power_fault', 'bus_fault', 'detectors_in_alarm',
                            'points_shielded']) AS m (metric)
          CROSS JOIN LATERAL (
                SELECT r.value FROM readings r
                 WHERE r.device_id = d.id AND r.metric = m.metric AND r.ts <= $__timeTo()
                   AND r.quality < 2
                 ORDER BY r.ts DESC LIMIT 1) l) st ON true
 WHERE d.kind = 'fire_panel' AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 ORDER BY d.site_id, d.device_id""",
    ("device", "device_key", "name", "building", "online", "fire_alarm", "fault", "shielded",
     "supervisory", "main_power_fault", "backup_power_fault", "bus_fault", "detectors_in_alarm",
     "points_shielded"),
)

FIRE_DETECTORS = PanelQuery(
    "fire.detectors",
    """SELECT count(*) AS detectors,
       count(*) FILTER (WHERE st.fire_alarm = 1) AS in_alarm,
       count(*) FILTER (WHERE st.fault = 1) AS in_fault,
       count(*) FILTER (WHERE st.shielded = 1) AS shielded
  FROM hub_dash_devices d
  LEFT JOIN LATERAL (
        SELECT max(l.value) FILTER (WHERE m.metric = 'fire_alarm') AS fire_alarm,
               max(l.value) FILTER (WHERE m.metric = 'fault') AS fault,
               max(l.value) FILTER (WHERE m.metric = 'shielded') AS shielded
          FROM unnest(ARRAY['fire_alarm', 'fault', 'shielded']) AS m (metric)
          CROSS JOIN LATERAL (
                SELECT r.value FROM readings r
                 WHERE r.device_id = d.id AND r.metric = m.metric AND r.ts <= $__timeTo()
                   AND r.quality < 2
                 ORDER BY r.ts DESC LIMIT 1) l) st ON true
 WHERE d.kind = 'fire_detector' AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)""",
    ("detectors", "in_alarm", "in_fault", "shielded"),
)

FIRE_PRESSURE = PanelQuery(
    "fire.pressure",
    """SELECT $__timeGroupAlias(r.bucket, $__interval), d.device_id AS device,
       sum(r.avg_value * r.samples) / nullif(sum(r.samples), 0) AS pressure
  FROM hub_readings_tiered r
  JOIN hub_dash_devices d ON d.id = r.device_id
 WHERE r.tier = hub_tier($__timeFrom(), $__timeTo()) AND $__timeFilter(r.bucket)
   AND r.metric = 'pressure' AND d.kind = 'fire_module'
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY 1, 2
 ORDER BY 1, 2""",
    ("time", "device", "pressure"),
    "time_series",
)

# -- Access -----------------------------------------------------------------------------------
ACCESS_FLOW = PanelQuery(
    "access.passes",
    """SELECT $__timeGroupAlias(e.ts, $__interval),
       count(*) FILTER (WHERE e.code = 'granted') AS granted,
       count(*) FILTER (WHERE e.code = 'denied') AS denied
  FROM events e
  JOIN hub_dash_devices d ON d.id = e.device_id
 WHERE $__timeFilter(e.ts) AND e.code IN ('granted', 'denied')
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY 1
 ORDER BY 1""",
    ("time", "granted", "denied"),
    "time_series",
)

ACCESS_DOORS = PanelQuery(
    "access.doors",
    """SELECT d.device_id AS device, d.id AS device_key, d.name, d.zone,
       count(e.ts) FILTER (WHERE e.code = 'denied') AS denied,
       count(e.ts) FILTER (WHERE e.code = 'door_forced_open') AS forced,
       count(e.ts) FILTER (WHERE e.code = 'door_held_open') AS held_open,
       count(e.ts) FILTER (WHERE e.code = 'tamper') AS tamper
  FROM hub_dash_devices d
  LEFT JOIN events e ON e.device_id = d.id AND $__timeFilter(e.ts)
       AND e.code IN ('denied', 'door_forced_open', 'door_held_open', 'tamper')
 WHERE d.kind IN ('gate', 'door') AND d.site_id IN ($site) AND d.building IN ($building)
   AND d.grid IN ($grid)
 GROUP BY d.device_id, d.id, d.name, d.zone
 ORDER BY forced DESC, held_open DESC, denied DESC, d.device_id""",
    ("device", "device_key", "name", "zone", "denied", "forced", "held_open", "tamper"),
)

# Visitor passes show up as grants whose data says `"method": "visitor_pass"` with a `pass_id`.
ACCESS_VISITORS = PanelQuery(
    "access.visitor_passes",
    """SELECT count(*) AS visitor_entries, count(DISTINCT e.data ->> 'pass_id') AS passes_used
  FROM events e
  JOIN hub_dash_devices d ON d.id = e.device_id
 WHERE $__timeFilter(e.ts) AND e.code = 'granted' AND e.data ->> 'method' = 'visitor_pass'
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)""",
    ("visitor_entries", "passes_used"),
)

# -- Parking ----------------------------------------------------------------------------------
PARKING_OCCUPANCY = PanelQuery(
    "parking.occupancy",
    """SELECT sum(st.free) AS free_spaces, sum(st.occupied) AS occupied_spaces,
       round((100.0 * sum(st.occupied) / nullif(sum(st.free) + sum(st.occupied), 0))::numeric, 1) AS occupancy_pct
  FROM hub_dash_devices d
  CROSS JOIN LATERAL (
        SELECT max(l.value) FILTER (WHERE m.metric = 'free_spaces') AS free,
               max(l.value) FILTER (WHERE m.metric = 'occupied_spaces') AS occupied
          FROM unnest(ARRAY['free_spaces', 'occupied_spaces']) AS m (metric)
          CROSS JOIN LATERAL (
                SELECT r.value FROM readings r
                 WHERE r.device_id = d.id AND r.metric = m.metric AND r.ts <= $__timeTo()
                   AND r.quality < 2
                 ORDER BY r.ts DESC LIMIT 1) l) st
 WHERE d.kind = 'parking_meter' AND d.site_id IN ($site) AND d.building IN ($building)
   AND d.grid IN ($grid)""",
    ("free_spaces", "occupied_spaces", "occupancy_pct"),
)

PARKING_FREE_TREND = PanelQuery(
    "parking.free_spaces",
    """SELECT $__timeGroupAlias(r.bucket, $__interval), d.device_id AS device,
       min(r.min_value) AS free_spaces
  FROM hub_readings_tiered r
  JOIN hub_dash_devices d ON d.id = r.device_id
 WHERE r.tier = hub_tier($__timeFrom(), $__timeTo()) AND $__timeFilter(r.bucket)
   AND r.metric = 'free_spaces' AND d.kind IN ('parking_meter', 'parking_lane')
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY 1, 2
 ORDER BY 1, 2""",
    ("time", "device", "free_spaces"),
    "time_series",
)

PARKING_FLOWS = PanelQuery(
    "parking.flows",
    """SELECT $__timeGroupAlias(e.ts, $__interval),
       count(*) FILTER (WHERE e.code = 'entry') AS entries,
       count(*) FILTER (WHERE e.code = 'exit') AS exits
  FROM events e
  JOIN hub_dash_devices d ON d.id = e.device_id
 WHERE $__timeFilter(e.ts) AND e.code IN ('entry', 'exit') AND d.kind LIKE 'parking%'
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)
 GROUP BY 1
 ORDER BY 1""",
    ("time", "entries", "exits"),
    "time_series",
)

# Fees charged: the `fee` of each exit event (CNY) in the range.
PARKING_FEES = PanelQuery(
    "parking.fees",
    """SELECT coalesce(sum((e.data ->> 'fee')::numeric), 0) AS fees, count(*) AS paid_exits
  FROM events e
  JOIN hub_dash_devices d ON d.id = e.device_id
 WHERE $__timeFilter(e.ts) AND e.code = 'exit' AND e.data ? 'fee'
   AND d.site_id IN ($site) AND d.building IN ($building) AND d.grid IN ($grid)""",
    ("fees", "paid_exits"),
)

PARKING_BARRIERS = PanelQuery(
    "parking.barrier_faults",
    """SELECT d.device_id AS device, d.id AS device_key, d.name, d.online,
       coalesce(l.value, 0) AS barrier_fault_now,
       (SELECT count(*) FROM events e WHERE e.device_id = d.id AND e.code = 'barrier_fault'
           AND $__timeFilter(e.ts)) AS fault_events
  FROM hub_dash_devices d
  LEFT JOIN LATERAL (
        SELECT r.value FROM readings r
         WHERE r.device_id = d.id AND r.metric = 'barrier_fault' AND r.ts <= $__timeTo()
           AND r.quality < 2
         ORDER BY r.ts DESC LIMIT 1) l ON true
 WHERE d.kind IN ('parking_lane', 'parking_meter', 'barrier') AND d.site_id IN ($site)
   AND d.building IN ($building) AND d.grid IN ($grid)
 ORDER BY barrier_fault_now DESC, fault_events DESC, d.device_id""",
    ("device", "device_key", "name", "online", "barrier_fault_now", "fault_events"),
)

# -- Work-order KPIs (views of migration 0201, docs/workorders.md) -------------------------------
# Over the dashboard range the panels aggregate the per-order view `wo_kpi_orders` (means and
# percentiles cannot be re-aggregated from the daily views); a one-day range gives the numbers
# of `wo_kpi_daily`. Orders count by `created_at`; an on-time verdict is NULL while its clock runs
# and is not yet due (or the order has no such SLA), and rates count only orders with a verdict.
# An order without a grid is shown whatever the Grid filter (it belongs to no grid).
WO_ON_TIME = PanelQuery(
    "workorders.on_time",
    """SELECT count(*) AS orders,
       round(100.0 * avg(o.accept_on_time::int), 1) AS accept_on_time_pct,
       round(100.0 * avg(o.arrive_on_time::int), 1) AS arrive_on_time_pct,
       round(100.0 * avg(o.resolve_on_time::int), 1) AS resolve_on_time_pct
  FROM wo_kpi_orders o
 WHERE $__timeFilter(o.created_at) AND o.site_id IN ($site) AND (o.grid_id IS NULL OR o.grid_id IN ($grid))""",
    ("orders", "accept_on_time_pct", "arrive_on_time_pct", "resolve_on_time_pct"),
)

WO_TIMES = PanelQuery(
    "workorders.times",
    """SELECT o.kind, count(*) AS orders,
       round((avg(o.response_s) / 60)::numeric, 1) AS response_mean_min,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY o.response_s) / 60)::numeric, 1) AS response_p90_min,
       round((avg(o.arrive_s) / 60)::numeric, 1) AS arrive_mean_min,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY o.arrive_s) / 60)::numeric, 1) AS arrive_p90_min,
       round((avg(o.resolution_s) / 60)::numeric, 1) AS resolution_mean_min,
       round((percentile_cont(0.9) WITHIN GROUP (ORDER BY o.resolution_s) / 60)::numeric, 1) AS resolution_p90_min
  FROM wo_kpi_orders o
 WHERE $__timeFilter(o.created_at) AND o.site_id IN ($site) AND (o.grid_id IS NULL OR o.grid_id IN ($grid))
 GROUP BY o.kind
 ORDER BY o.kind""",
    ("kind", "orders", "response_mean_min", "response_p90_min", "arrive_mean_min", "arrive_p90_min",
     "resolution_mean_min", "resolution_p90_min"),
)

WO_BY_GRID = PanelQuery(
    "workorders.by_grid",
    """SELECT o.site_id AS site, coalesce(o.grid_id, '-') AS grid, count(*) AS orders,
       count(*) FILTER (WHERE o.is_open) AS open_orders,
       round(100.0 * avg(o.accept_on_time::int), 1) AS accept_on_time_pct,
       round(100.0 * avg(o.arrive_on_time::int), 1) AS arrive_on_time_pct,
       round(100.0 * avg(o.resolve_on_time::int), 1) AS resolve_on_time_pct,
       round((avg(o.resolution_s) / 60)::numeric, 1) AS resolution_mean_min,
       round(avg(o.rating)::numeric, 2) AS rating
  FROM wo_kpi_orders o
 WHERE $__timeFilter(o.created_at) AND o.site_id IN ($site) AND (o.grid_id IS NULL OR o.grid_id IN ($grid))
 GROUP BY 1, 2
 ORDER BY 1, 2""",
    ("site", "grid", "orders", "open_orders", "accept_on_time_pct", "arrive_on_time_pct",
     "resolve_on_time_pct", "resolution_mean_min", "rating"),
)

WO_BY_PERSON = PanelQuery(
    "workorders.by_person",
    """SELECT o.assignee AS staff, st.name, count(*) AS orders,
       count(*) FILTER (WHERE o.is_open) AS open_orders,
       round(100.0 * avg(o.accept_on_time::int), 1) AS accept_on_time_pct,
       round(100.0 * avg(o.arrive_on_time::int), 1) AS arrive_on_time_pct,
       round(100.0 * avg(o.resolve_on_time::int), 1) AS resolve_on_time_pct,
       round((avg(o.response_s) / 60)::numeric, 1) AS response_mean_min,
       round(avg(o.rating)::numeric, 2) AS rating
  FROM wo_kpi_orders o
  LEFT JOIN staff st ON st.id = o.assignee
 WHERE $__timeFilter(o.created_at) AND o.site_id IN ($site) AND o.assignee IS NOT NULL
   AND (o.grid_id IS NULL OR o.grid_id IN ($grid))
 GROUP BY o.assignee, st.name
 ORDER BY orders DESC, o.assignee""",
    ("staff", "name", "orders", "open_orders", "accept_on_time_pct", "arrive_on_time_pct",
     "resolve_on_time_pct", "response_mean_min", "rating"),
)

# Resident orders (repair 报修, complaint 投诉, praise 表扬) by the interval they were raised in.
WO_SATISFACTION = PanelQuery(
    "workorders.satisfaction",
    """SELECT $__timeGroupAlias(o.created_at, $__interval), round(avg(o.rating)::numeric, 2) AS rating,
       count(o.rating) AS ratings, round(100.0 * avg((o.rating >= 4)::int), 1) AS satisfied_pct
  FROM wo_kpi_orders o
 WHERE $__timeFilter(o.created_at) AND o.site_id IN ($site) AND o.rating IS NOT NULL
   AND (o.grid_id IS NULL OR o.grid_id IN ($grid))
 GROUP BY 1
 ORDER BY 1""",
    ("time", "rating", "ratings", "satisfied_pct"),
    "time_series",
)

# Work still to do now (`wo_kpi_backlog`): open orders per state, how many are overdue or escalated.
WO_BACKLOG = PanelQuery(
    "workorders.backlog",
    """SELECT b.state, sum(b.orders)::bigint AS orders, sum(b.overdue)::bigint AS overdue,
       sum(b.escalated)::bigint AS escalated
  FROM wo_kpi_backlog b
 WHERE b.site_id IN ($site) AND (b.grid_id IS NULL OR b.grid_id IN ($grid))
 GROUP BY b.state
 ORDER BY orders DESC, b.state""",
    ("state", "orders", "overdue", "escalated"),
)

# -- Template variables (their queries run in Grafana too) ------------------------------------
VARIABLES: dict[str, str] = {
    "site": "SELECT id FROM sites ORDER BY id",
    "building": "SELECT DISTINCT building FROM hub_dash_devices WHERE site_id IN ($site) ORDER BY 1",
    "grid": "SELECT DISTINCT grid FROM hub_dash_devices WHERE site_id IN ($site) ORDER BY 1",
    "kind": "SELECT DISTINCT kind FROM hub_dash_devices WHERE site_id IN ($site) ORDER BY 1",
}

PANELS: tuple[PanelQuery, ...] = (
    SITES, DEVICES_ONLINE, ONLINE_BY_KIND, ALARMS_BY_SEVERITY, ACTIVE_ALARMS, DEVICES_REPORTING,
    STAFF_ON_DUTY, OPEN_WORK_ORDERS, WORK_ORDER_QUEUE,
    ELEVATOR_BOARD, ELEVATOR_FAULT_COUNTS, ELEVATOR_TRIPS, ELEVATOR_ENTRAPMENTS, ELEVATOR_OUT_OF_SERVICE,
    FIRE_PANELS, FIRE_DETECTORS, FIRE_PRESSURE,
    ACCESS_FLOW, ACCESS_DOORS, ACCESS_VISITORS,
    PARKING_OCCUPANCY, PARKING_FREE_TREND, PARKING_FLOWS, PARKING_FEES, PARKING_BARRIERS,
    WO_ON_TIME, WO_TIMES, WO_BY_GRID, WO_BY_PERSON, WO_SATISFACTION, WO_BACKLOG,
)
BY_KEY: dict[str, PanelQuery] = {p.key: p for p in PANELS}
OVERVIEW: tuple[PanelQuery, ...] = tuple(p for p in PANELS if p.key.startswith("overview."))

# -- Daily report (`hub report daily`); the range is one local day of the site -------------------
# Availability: share of device-hours in which a device sent data (1-hour rollup).
REPORT_AVAILABILITY = PanelQuery(
    "report.availability",
    """SELECT d.kind, count(d.id) AS devices,
       round(100.0 * coalesce(sum(h.hours), 0)
             / nullif(count(d.id) * extract(epoch FROM ($__timeTo()::timestamptz - $__timeFrom()::timestamptz)) / 3600.0, 0), 1)
             AS availability_pct
  FROM hub_dash_devices d
  LEFT JOIN (SELECT r.device_id, count(DISTINCT r.bucket) AS hours
               FROM readings_1h r
              WHERE r.bucket >= $__timeFrom() AND r.bucket < $__timeTo()
              GROUP BY r.device_id) h ON h.device_id = d.id
 WHERE d.site_id IN ($site)
 GROUP BY d.kind
 ORDER BY d.kind""",
    ("kind", "devices", "availability_pct"),
)

# Alarms raised on the day per kind: a per-kind statistic, so it counts every alarm, children
# included (how often the terminals reported fault 01 is worth knowing even when an entrapment
# explained it); a power loss's devices without an alarm of their own are not in it.
REPORT_ALARMS = PanelQuery(
    "report.alarms",
    """SELECT a.kind, count(*) AS alarms,
       count(*) FILTER (WHERE a.severity = 'critical') AS critical
  FROM alarms a
 WHERE a.site_id IN ($site) AND a.raised_at >= $__timeFrom() AND a.raised_at < $__timeTo()
 GROUP BY a.kind
 ORDER BY alarms DESC, a.kind""",
    ("kind", "alarms", "critical"),
)

# Work orders raised on the day, by their state now.
REPORT_WORK_ORDERS = PanelQuery(
    "report.work_orders",
    """SELECT o.state, count(*) AS orders
  FROM wo_kpi_orders o
 WHERE o.site_id IN ($site) AND o.created_at >= $__timeFrom() AND o.created_at < $__timeTo()
 GROUP BY o.state
 ORDER BY orders DESC, o.state""",
    ("state", "orders"),
)

# The report's range is one local day of the site; the daily KPI views are keyed by that day,
# `($__timeFrom()::timestamptz AT TIME ZONE s.timezone)::date`. No row: no orders that day.
REPORT_ON_TIME = PanelQuery(
    "report.on_time",
    """SELECT k.orders, k.open_orders,
       round((100 * k.accept_on_time_rate)::numeric, 1) AS accept_on_time_pct,
       round((100 * k.arrive_on_time_rate)::numeric, 1) AS arrive_on_time_pct,
       round((100 * k.resolve_on_time_rate)::numeric, 1) AS resolve_on_time_pct,
       round((k.mean_response_s / 60)::numeric, 1) AS response_mean_min,
       round((k.p90_response_s / 60)::numeric, 1) AS response_p90_min,
       round((k.mean_resolution_s / 60)::numeric, 1) AS resolution_mean_min,
       round((k.p90_resolution_s / 60)::numeric, 1) AS resolution_p90_min
  FROM wo_kpi_site_daily k
  JOIN sites s ON s.id = k.site_id
 WHERE k.site_id IN ($site) AND k.day = ($__timeFrom()::timestamptz AT TIME ZONE s.timezone)::date""",
    ("orders", "open_orders", "accept_on_time_pct", "arrive_on_time_pct", "resolve_on_time_pct",
     "response_mean_min", "response_p90_min", "resolution_mean_min", "resolution_p90_min"),
)

# Per assignee for the day (`wo_kpi_person_daily`).
REPORT_PEOPLE = PanelQuery(
    "report.people",
    """SELECT k.key AS staff, st.name, k.orders,
       round((100 * k.accept_on_time_rate)::numeric, 1) AS accept_on_time_pct,
       round((100 * k.resolve_on_time_rate)::numeric, 1) AS resolve_on_time_pct,
       round((k.mean_response_s / 60)::numeric, 1) AS response_mean_min,
       round(k.mean_rating::numeric, 2) AS rating
  FROM wo_kpi_person_daily k
  JOIN sites s ON s.id = k.site_id
  LEFT JOIN staff st ON st.id = k.key
 WHERE k.site_id IN ($site) AND k.day = ($__timeFrom()::timestamptz AT TIME ZONE s.timezone)::date
 ORDER BY k.orders DESC, k.key""",
    ("staff", "name", "orders", "accept_on_time_pct", "resolve_on_time_pct", "response_mean_min", "rating"),
)

# Resident ratings of orders raised on the day (`wo_kpi_satisfaction`, resident kinds only) and
# how many complaints (投诉) and praise (表扬) came in.
REPORT_RATINGS = PanelQuery(
    "report.ratings",
    """SELECT coalesce(sum(k.rated), 0)::bigint AS ratings,
       round((sum(k.mean_rating * k.rated) / nullif(sum(k.rated), 0))::numeric, 2) AS mean_rating,
       round((100 * sum(k.satisfied_rate * k.rated) / nullif(sum(k.rated), 0))::numeric, 1) AS satisfied_pct,
       coalesce(sum(k.orders) FILTER (WHERE k.kind = 'complaint'), 0)::bigint AS complaints,
       coalesce(sum(k.orders) FILTER (WHERE k.kind = 'praise'), 0)::bigint AS praise
  FROM wo_kpi_satisfaction k
  JOIN sites s ON s.id = k.site_id
 WHERE k.site_id IN ($site) AND k.day = ($__timeFrom()::timestamptz AT TIME ZONE s.timezone)::date""",
    ("ratings", "mean_rating", "satisfied_pct", "complaints", "praise"),
)

# Attendance (员工考勤) from check-ins and check-outs (API or badge, table `attendance`): time
# present is each check-in up to the next record, capped at the end of the day and at 16 hours
# (a forgotten check-out, the same validity dispatch uses). A check-in still valid when the day
# starts counts from midnight.
REPORT_ATTENDANCE = PanelQuery(
    "report.attendance",
    """WITH ev AS (
    SELECT a.staff_id, a.kind, a.at, a.at AS counted_from
      FROM attendance a
     WHERE a.site_id IN ($site) AND a.at >= $__timeFrom() AND a.at < $__timeTo()
    UNION ALL
    (SELECT DISTINCT ON (a.staff_id) a.staff_id, a.kind, a.at, $__timeFrom()::timestamptz
       FROM attendance a
      WHERE a.site_id IN ($site) AND a.at < $__timeFrom()
        AND a.at >= $__timeFrom()::timestamptz - interval '16 hours'
      ORDER BY a.staff_id, a.at DESC)
), spans AS (
    SELECT ev.staff_id, ev.kind, ev.at, ev.counted_from,
           least(coalesce(lead(ev.at) OVER (PARTITION BY ev.staff_id ORDER BY ev.at), $__timeTo()::timestamptz),
                 ev.at + interval '16 hours', $__timeTo()::timestamptz) AS until
      FROM ev
)
SELECT st.id AS staff, st.name, st.role,
       min(sp.at) FILTER (WHERE sp.kind = 'in' AND sp.at >= $__timeFrom()) AS first_in,
       max(sp.at) FILTER (WHERE sp.kind = 'out' AND sp.at >= $__timeFrom()) AS last_out,
       round((coalesce(sum(extract(epoch FROM sp.until - sp.counted_from)) FILTER (WHERE sp.kind = 'in'), 0)
              / 3600.0)::numeric, 1) AS hours
  FROM spans sp
  JOIN staff st ON st.id = sp.staff_id
 GROUP BY st.id, st.name, st.role
HAVING count(*) FILTER (WHERE sp.kind = 'in') > 0
 ORDER BY st.role, st.name""",
    ("staff", "name", "role", "first_in", "last_out", "hours"),
)

REPORT_PANELS: tuple[PanelQuery, ...] = (
    REPORT_AVAILABILITY, REPORT_ALARMS, REPORT_WORK_ORDERS, REPORT_ON_TIME, REPORT_PEOPLE, REPORT_RATINGS,
    REPORT_ATTENDANCE,
)
