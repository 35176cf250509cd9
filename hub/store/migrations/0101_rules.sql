-- Rule engine additions to the alarm contract of 0100 (issue 5).

-- What happened in a history row: raise, clear, acknowledge, shelve, unshelve, comment, assign,
-- reactivate, close, annotate, link. `to_state` stays the state after the step.
ALTER TABLE alarm_history ADD COLUMN action text;

-- Maintenance / inspection windows entered by operators or work orders: while a window covers
-- a device (ends_at NULL = until ended), the rule engine raises no new alarms for it.
CREATE TABLE device_maintenance (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  integer NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    starts_at  timestamptz NOT NULL DEFAULT now(),
    ends_at    timestamptz,
    reason     text,
    actor      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
CREATE INDEX device_maintenance_device ON device_maintenance (device_id, starts_at);

CREATE INDEX alarms_rule_scope ON alarms (rule_id, scope_key, raised_at);
CREATE INDEX alarms_parent ON alarms (parent_id) WHERE parent_id IS NOT NULL;
