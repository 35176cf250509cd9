-- Dashboards (issue 8): views the Grafana panels, `hub top` and the daily report read, and the
-- read-only role `hub_grafana` that Grafana's datasource logs in as.

-- Devices with the filter columns of the dashboards' template variables; a device without a
-- building or grid gets '-' so `IN ($building)` can still select it. `probe_metric` is the first
-- metric of the device's model: devices send their metrics together, so "has data for its probe
-- metric" tells whether a device reported without reading every metric's rows.
CREATE VIEW hub_dash_devices AS
SELECT d.id, d.site_id, d.device_id, d.kind, d.model_id, d.protocol,
       coalesce(d.name, d.device_id) AS name,
       coalesce(d.building_id, '-') AS building, coalesce(d.grid_id, '-') AS grid,
       d.floor, d.zone, s.online, s.changed_at, s.last_seen,
       m.spec -> 'metrics' -> 0 ->> 'name' AS probe_metric
  FROM devices d
  JOIN device_models m ON m.id = d.model_id
  LEFT JOIN device_status s ON s.device_id = d.id
 WHERE d.active;

-- Which readings table answers a time range: raw readings up to 30 minutes, the 1-minute rollup
-- up to 6 hours, the 1-hour rollup beyond, so a panel reads at most a few hundred rows per
-- device and metric whatever the range (raw data can be many samples a minute). IMMUTABLE so the planner folds it with the constants
-- Grafana inlines and prunes the branches of hub_readings_tiered that cannot match.
CREATE FUNCTION hub_tier(start timestamptz, stop timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN stop - start <= interval '30 minutes' THEN 'raw'
                WHEN stop - start <= interval '6 hours' THEN '1m'
                ELSE '1h' END
$$;

-- One shape over the three tables; always filter it with `tier = hub_tier(from, to)`.
CREATE VIEW hub_readings_tiered AS
SELECT 'raw'::text AS tier, ts AS bucket, device_id, metric, value AS avg_value,
       value AS min_value, value AS max_value, value AS last_value, 1::bigint AS samples
  FROM readings WHERE quality < 2
UNION ALL
SELECT '1m'::text, bucket, device_id, metric, avg_value, min_value, max_value, last_value, samples
  FROM readings_1m
UNION ALL
SELECT '1h'::text, bucket, device_id, metric, avg_value, min_value, max_value, last_value, samples
  FROM readings_1h;

-- The read-only role. Roles belong to the whole server, so create it once and tolerate a
-- concurrent creator; a migration user without CREATEROLE skips it with a notice (an admin can
-- create the role and re-run the grants below by hand, see docs/dashboards.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_grafana') THEN
        BEGIN
            CREATE ROLE hub_grafana LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION
            WHEN duplicate_object THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'hub_grafana not created: the migration user lacks CREATEROLE';
        END;
    END IF;
END $$;

CREATE FUNCTION hub_grant_grafana() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    rel text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hub_grafana') THEN
        RETURN;
    END IF;
    -- Role settings are server-wide: set them once, and let a migration of another database
    -- that sets the same values at the same instant win ("tuple concurrently updated").
    IF NOT EXISTS (SELECT FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
                    WHERE r.rolname = 'hub_grafana' AND s.setdatabase = 0
                      AND 'default_transaction_read_only=on' = ANY (s.setconfig)
                      AND 'statement_timeout=30s' = ANY (s.setconfig)) THEN
        BEGIN
            ALTER ROLE hub_grafana SET default_transaction_read_only = on;
            ALTER ROLE hub_grafana SET statement_timeout = '30s';
        EXCEPTION
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'cannot set hub_grafana defaults: %', SQLERRM;
            WHEN internal_error THEN
                RAISE NOTICE 'hub_grafana defaults set concurrently: %', SQLERRM;
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO hub_grafana', current_database());
    GRANT USAGE ON SCHEMA public TO hub_grafana;
    -- Only what dashboards show: no audit log, dead letters, users or secrets.
    FOREACH rel IN ARRAY ARRAY['sites', 'buildings', 'grids', 'device_models', 'devices',
            'device_status', 'readings', 'readings_1m', 'readings_1h', 'events', 'alarms',
            'alarm_history', 'shifts', 'hub_dash_devices', 'hub_readings_tiered', 'attendance']
    LOOP
        IF to_regclass(rel) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I TO hub_grafana', rel);
        END IF;
    END LOOP;
    -- Staff without their phone numbers.
    GRANT SELECT (id, name, role, sites, grids, skills, supervisor, active) ON staff TO hub_grafana;
    -- Work-order KPI views (0201); 0401 replaces this function with the work-order grants.
    FOR rel IN SELECT viewname FROM pg_views WHERE schemaname = 'public' AND viewname LIKE 'wo\_kpi\_%'
    LOOP
        EXECUTE format('GRANT SELECT ON %I TO hub_grafana', rel);
    END LOOP;
    GRANT EXECUTE ON FUNCTION hub_tier(timestamptz, timestamptz) TO hub_grafana;
END $$;

SELECT hub_grant_grafana();
