-- Time series and everything that arrives with them. The same tables on plain PostgreSQL and
-- on TimescaleDB; 0003 turns them into hypertables where the extension is present.

-- quality: 0 good, 1 uncertain, 2 bad (a failed read is stored as NULL with quality 2, never 0).
CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    device_id   integer NOT NULL,
    metric      text NOT NULL,
    value       double precision,
    text_value  text,
    quality     smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (device_id, metric, ts)
);

CREATE TABLE events (
    ts           timestamptz NOT NULL,
    device_id    integer NOT NULL,
    code         text NOT NULL,
    data         jsonb,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, code, ts)
);

-- Nothing is dropped silently: whatever could not be stored lands here with the reason.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL,
    topic        text,
    payload      bytea,
    reason       text NOT NULL,
    worker       text
);
CREATE INDEX dead_letters_received ON dead_letters (received_at);

CREATE TABLE device_status (
    device_id   integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    online      boolean NOT NULL,
    changed_at  timestamptz NOT NULL,
    last_seen   timestamptz,
    reason      text
);
