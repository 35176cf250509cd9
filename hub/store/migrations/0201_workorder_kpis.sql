-- KPI views over work orders for dashboards (columns documented in docs/workorders.md), and the
-- on-duty snapshot the E-control centre watches. Days are the site's local calendar days.

-- Who is on duty at an instant: shift (site-local time), attendance, leave, load. Mirrors
-- hub.dispatch.roster (tests check that both agree).
CREATE FUNCTION staff_duty_at(p_at timestamptz, p_valid interval DEFAULT interval '16 hours')
RETURNS TABLE (site_id text, staff_id text, name text, role text, grids text[], skills text[],
               on_shift boolean, attendance text, on_leave boolean, open_orders bigint,
               available boolean)
LANGUAGE sql STABLE AS $$
    WITH x AS (
        SELECT st.id AS site_id, s.id AS staff_id, s.name, s.role, s.grids, s.skills,
               (p_at AT TIME ZONE st.timezone) AS local_ts
          FROM staff s JOIN sites st ON st.id = ANY (s.sites)
         WHERE s.active
    ), y AS (
        SELECT x.*,
               EXISTS (
                   SELECT 1 FROM shifts sh
                    WHERE sh.staff_id = x.staff_id AND sh.site_id = x.site_id AND (
                          (sh.start_time < sh.end_time
                           AND lower(to_char(x.local_ts, 'Dy')) = ANY (sh.days)
                           AND x.local_ts::time >= sh.start_time AND x.local_ts::time < sh.end_time)
                       OR (sh.start_time >= sh.end_time
                           AND ((lower(to_char(x.local_ts, 'Dy')) = ANY (sh.days)
                                 AND x.local_ts::time >= sh.start_time)
                             OR (lower(to_char(x.local_ts - interval '1 day', 'Dy')) = ANY (sh.days)
                                 AND x.local_ts::time < sh.end_time))))
               ) AS on_shift,
               (SELECT CASE WHEN a.kind IS NULL OR p_at - a.at > p_valid THEN 'unknown' ELSE a.kind END
                  FROM attendance a
                 WHERE a.staff_id = x.staff_id AND a.site_id = x.site_id AND a.at <= p_at
                 ORDER BY a.at DESC, a.id DESC LIMIT 1) AS att,
               EXISTS (SELECT 1 FROM staff_leave l
                        WHERE l.staff_id = x.staff_id AND l.cancelled_at IS NULL
                          AND l.starts_at <= p_at AND l.ends_at > p_at) AS on_leave,
               (SELECT count(*) FROM work_orders w
                 WHERE w.assignee = x.staff_id
                   AND w.state IN ('created', 'assigned', 'accepted', 'on_site', 'reopened')) AS open_orders
          FROM x
    )
    SELECT y.site_id, y.staff_id, y.name, y.role, y.grids, y.skills, y.on_shift,
           coalesce(y.att, 'unknown'), y.on_leave, y.open_orders,
           y.on_shift AND NOT y.on_leave AND coalesce(y.att, 'unknown') <> 'out'
      FROM y
$$;

CREATE VIEW staff_duty_now AS SELECT * FROM staff_duty_at(now());

-- One row per order with its measured times and on-time verdicts. An on-time column is NULL
-- while its clock runs and is not yet due (nothing to judge yet), or when the order has no
-- such SLA; it is false once the due time passed without the step.
CREATE VIEW wo_kpi_orders AS
SELECT w.id, w.site_id, w.grid_id, w.building_id, w.device_id, w.assignee, w.kind, w.priority,
       w.state, w.policy_rule,
       (w.created_at AT TIME ZONE s.timezone)::date AS day,
       w.created_at, w.sla_start, w.accept_due, w.arrive_due, w.resolve_due,
       w.accepted_at, w.on_site_at, w.resolved_at, w.closed_at,
       extract(epoch FROM w.accepted_at - w.sla_start)::float8 AS response_s,
       extract(epoch FROM w.on_site_at - w.sla_start)::float8 AS arrive_s,
       extract(epoch FROM w.resolved_at - w.sla_start)::float8 AS resolution_s,
       CASE WHEN w.accept_due IS NULL THEN NULL
            WHEN w.accepted_at IS NOT NULL THEN w.accepted_at <= w.accept_due
            WHEN w.state IN ('created', 'assigned', 'reopened') AND now() > w.accept_due THEN false
       END AS accept_on_time,
       CASE WHEN w.arrive_due IS NULL THEN NULL
            WHEN w.on_site_at IS NOT NULL THEN w.on_site_at <= w.arrive_due
            WHEN w.state IN ('created', 'assigned', 'accepted', 'reopened') AND now() > w.arrive_due THEN false
       END AS arrive_on_time,
       CASE WHEN w.resolve_due IS NULL THEN NULL
            WHEN w.resolved_at IS NOT NULL THEN w.resolved_at <= w.resolve_due
            WHEN w.state IN ('created', 'assigned', 'accepted', 'on_site', 'reopened')
                 AND now() > w.resolve_due THEN false
       END AS resolve_on_time,
       w.state IN ('created', 'assigned', 'accepted', 'on_site', 'reopened') AS is_open,
       w.state IN ('created', 'assigned', 'accepted', 'on_site', 'reopened')
           AND now() > least(CASE WHEN w.accepted_at IS NULL THEN w.accept_due END,
                             CASE WHEN w.on_site_at IS NULL THEN w.arrive_due END,
                             CASE WHEN w.resolved_at IS NULL THEN w.resolve_due END) AS is_overdue,
       w.escalation_level, w.reopen_count, w.rating
  FROM work_orders w JOIN sites s ON s.id = w.site_id;

-- Per site-local day × dimension (site, grid, person, kind): on-time rates (接单及时率 accept,
-- 到场及时率 arrive, 完成及时率 resolve), mean/p90 times, satisfaction.
CREATE VIEW wo_kpi_daily AS
SELECT o.day, o.site_id, d.dimension, coalesce(d.key, '(none)') AS key,
       count(*) AS orders,
       count(*) FILTER (WHERE o.is_open) AS open_orders,
       count(o.accept_on_time) AS accept_measured,
       count(*) FILTER (WHERE o.accept_on_time) AS accept_on_time,
       avg(o.accept_on_time::int)::float8 AS accept_on_time_rate,
       count(o.arrive_on_time) AS arrive_measured,
       count(*) FILTER (WHERE o.arrive_on_time) AS arrive_on_time,
       avg(o.arrive_on_time::int)::float8 AS arrive_on_time_rate,
       count(o.resolve_on_time) AS resolve_measured,
       count(*) FILTER (WHERE o.resolve_on_time) AS resolve_on_time,
       avg(o.resolve_on_time::int)::float8 AS resolve_on_time_rate,
       avg(o.response_s) AS mean_response_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY o.response_s) AS p90_response_s,
       avg(o.arrive_s) AS mean_arrive_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY o.arrive_s) AS p90_arrive_s,
       avg(o.resolution_s) AS mean_resolution_s,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY o.resolution_s) AS p90_resolution_s,
       count(o.rating) AS rated,
       avg(o.rating)::float8 AS mean_rating,
       avg((o.rating >= 4)::int)::float8 AS satisfied_rate
  FROM wo_kpi_orders o
  CROSS JOIN LATERAL (VALUES ('site', o.site_id), ('grid', o.grid_id), ('person', o.assignee),
                             ('kind', o.kind)) AS d (dimension, key)
 GROUP BY o.day, o.site_id, d.dimension, d.key;

CREATE VIEW wo_kpi_site_daily AS
    SELECT * FROM wo_kpi_daily WHERE dimension = 'site';
CREATE VIEW wo_kpi_grid_daily AS
    SELECT * FROM wo_kpi_daily WHERE dimension = 'grid';
CREATE VIEW wo_kpi_person_daily AS
    SELECT * FROM wo_kpi_daily WHERE dimension = 'person';
CREATE VIEW wo_kpi_kind_daily AS
    SELECT * FROM wo_kpi_daily WHERE dimension = 'kind';

-- Work still to do, now.
CREATE VIEW wo_kpi_backlog AS
SELECT o.site_id, o.grid_id, o.assignee, o.kind, o.priority, o.state,
       count(*) AS orders,
       count(*) FILTER (WHERE o.is_overdue) AS overdue,
       count(*) FILTER (WHERE o.escalation_level > 0) AS escalated,
       min(o.created_at) AS oldest_created_at,
       max(extract(epoch FROM now() - o.sla_start))::float8 AS oldest_age_s
  FROM wo_kpi_orders o
 WHERE o.is_open
 GROUP BY o.site_id, o.grid_id, o.assignee, o.kind, o.priority, o.state;

-- Resident satisfaction per site-local day, grid and kind (ratings 1–5).
CREATE VIEW wo_kpi_satisfaction AS
SELECT o.day, o.site_id, o.grid_id, o.kind,
       count(*) AS orders,
       count(o.rating) AS rated,
       avg(o.rating)::float8 AS mean_rating,
       avg((o.rating >= 4)::int)::float8 AS satisfied_rate,
       count(*) FILTER (WHERE o.rating = 1) AS rating_1,
       count(*) FILTER (WHERE o.rating = 2) AS rating_2,
       count(*) FILTER (WHERE o.rating = 3) AS rating_3,
       count(*) FILTER (WHERE o.rating = 4) AS rating_4,
       count(*) FILTER (WHERE o.rating = 5) AS rating_5
  FROM wo_kpi_orders o
 WHERE o.kind IN ('repair', 'complaint', 'praise')
 GROUP BY o.day, o.site_id, o.grid_id, o.kind;
