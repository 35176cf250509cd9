-- Dashboards on the real work-order schema (issue 6, migrations 0200/0201): what `hub_grafana`
-- may read of it. 0400 granted `work_orders` whole when it existed; this narrows that to the
-- columns the panels show and adds what `staff_duty_at` (the Staff on duty panel) reads as its
-- caller. Never granted: `notifications` (webhook URLs, payloads), `staff_badges` (card
-- numbers), `work_order_evidence`, `work_order_transitions` notes, staff phone numbers, leave
-- reasons, and the residents' own words and identity on an order (description, location,
-- reporter, rating comment) or the assignment details.

CREATE OR REPLACE FUNCTION hub_grant_grafana() RETURNS void LANGUAGE plpgsql AS $$
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
            'alarm_history', 'shifts', 'hub_dash_devices', 'hub_readings_tiered', 'attendance',
            'staff_duty_now']
    LOOP
        IF to_regclass(rel) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON %I TO hub_grafana', rel);
        END IF;
    END LOOP;
    -- Staff without their phone numbers.
    GRANT SELECT (id, name, role, sites, grids, skills, supervisor, active) ON staff TO hub_grafana;
    -- Work-order KPI views (0201): the panels' main source.
    FOR rel IN SELECT viewname FROM pg_views WHERE schemaname = 'public' AND viewname LIKE 'wo\_kpi\_%'
    LOOP
        EXECUTE format('GRANT SELECT ON %I TO hub_grafana', rel);
    END LOOP;
    IF to_regclass('work_orders') IS NOT NULL THEN
        REVOKE SELECT ON work_orders FROM hub_grafana;
        GRANT SELECT (id, site_id, kind, priority, state, title, alarm_id, policy_rule, skill, device_id,
                      building_id, grid_id, assignee, sla_start, accept_due, arrive_due, resolve_due,
                      due_date, escalation_level, reopen_count, created_at, assigned_at, accepted_at,
                      on_site_at, resolved_at, verified_at, closed_at, cancelled_at, rating, rated_at,
                      updated_at)
            ON work_orders TO hub_grafana;
    END IF;
    -- staff_duty_at runs with its caller's rights: when and whether someone is on leave, not why.
    IF to_regclass('staff_leave') IS NOT NULL THEN
        GRANT SELECT (id, staff_id, starts_at, ends_at, cancelled_at) ON staff_leave TO hub_grafana;
    END IF;
    GRANT EXECUTE ON FUNCTION hub_tier(timestamptz, timestamptz) TO hub_grafana;
END $$;

SELECT hub_grant_grafana();
