-- Alarms: the contract between the rule engine (which raises and clears them) and dispatch,
-- the API and dashboards (which act on them). The rule engine may add columns in 01xx.
--
-- state: active (condition present, nobody acknowledged), acknowledged (condition present),
-- cleared_unack (condition gone before anyone acknowledged), cleared (closed for good),
-- shelved (hidden by an operator until shelved_until). An alarm is *open* until cleared.

CREATE TABLE alarms (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id         text NOT NULL,
    site_id         text NOT NULL REFERENCES sites (id),
    device_id       integer REFERENCES devices (id),
    scope_key       text NOT NULL,          -- what the alarm is about: a device, a zone, a building
    kind            text NOT NULL,          -- e.g. entrapment, fire_confirmed, device_offline
    severity        text NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'warning')),
    state           text NOT NULL DEFAULT 'active'
                    CHECK (state IN ('active', 'acknowledged', 'cleared_unack', 'cleared', 'shelved')),
    title           text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}',
    raised_at       timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    cleared_at      timestamptz,            -- when the condition recovered
    closed_at       timestamptz,            -- when the alarm left the open set
    shelved_until   timestamptz,
    assignee        text,
    parent_id       bigint REFERENCES alarms (id),   -- root-cause grouping
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One open alarm per (rule, scope), enforced here so concurrent evaluators cannot duplicate it.
CREATE UNIQUE INDEX alarms_one_open ON alarms (rule_id, scope_key) WHERE closed_at IS NULL;
CREATE INDEX alarms_site_open ON alarms (site_id, raised_at) WHERE closed_at IS NULL;
CREATE INDEX alarms_raised ON alarms (raised_at);
CREATE INDEX alarms_device ON alarms (device_id, raised_at);

CREATE TABLE alarm_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alarm_id  bigint NOT NULL REFERENCES alarms (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL DEFAULT now(),
    from_state text,
    to_state  text NOT NULL,
    actor     text NOT NULL,
    note      text
);
CREATE INDEX alarm_history_alarm ON alarm_history (alarm_id, at);

-- Listeners (dispatch, API live streams) wake on `LISTEN hub_alarms`; payload: {"id", "state"}.
CREATE FUNCTION hub_notify_alarm() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state THEN
        PERFORM pg_notify('hub_alarms', json_build_object('id', NEW.id, 'state', NEW.state,
                          'site_id', NEW.site_id, 'rule_id', NEW.rule_id)::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER alarms_notify AFTER INSERT OR UPDATE ON alarms
    FOR EACH ROW EXECUTE FUNCTION hub_notify_alarm();
