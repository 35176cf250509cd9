-- Visitor passes held by the gates (api/pass_sync.py): a gate reports each decision as an event;
-- the hub logs it in visitor_pass_checks (source 'gate') exactly once per (pass, gate, event time),
-- so a redelivered event never counts a use twice. Rows from the API's /use endpoint keep source 'api'.
ALTER TABLE visitor_pass_checks ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'api'
    CHECK (source IN ('api', 'gate'));
ALTER TABLE visitor_pass_checks ADD COLUMN IF NOT EXISTS device_id integer REFERENCES devices (id);
CREATE UNIQUE INDEX IF NOT EXISTS visitor_pass_checks_gate_once
    ON visitor_pass_checks (pass_id, gate, at) WHERE source = 'gate';
