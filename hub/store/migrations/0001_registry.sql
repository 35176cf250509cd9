-- Registry mirror: the YAML registry is the source of truth; `hub run` upserts it here so SQL
-- (dashboards, API, dispatch) can join readings to sites, buildings, grids, staff and rosters.

CREATE TABLE sites (
    id          text PRIMARY KEY,
    name        text,
    timezone    text NOT NULL,
    address     text,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE buildings (
    site_id          text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    id               text NOT NULL,
    name             text,
    floors           integer NOT NULL,
    basement_floors  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, id)
);

CREATE TABLE grids (
    site_id    text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    id         text NOT NULL,
    name       text,
    buildings  text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (site_id, id)
);

CREATE TABLE device_models (
    id          text PRIMARY KEY,
    kind        text NOT NULL,
    protocol    text NOT NULL,
    spec        jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- `id` is the compact key used by every time-series row; (site_id, device_id) is the
-- registry's name for the device and what MQTT topics carry.
CREATE TABLE devices (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id      text NOT NULL REFERENCES sites (id),
    device_id    text NOT NULL,
    model_id     text NOT NULL REFERENCES device_models (id),
    kind         text NOT NULL,
    protocol     text NOT NULL,
    name         text,
    building_id  text,
    grid_id      text,
    floor        integer,
    zone         text,
    spec         jsonb NOT NULL DEFAULT '{}',
    active       boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, device_id)
);
CREATE INDEX devices_site_kind ON devices (site_id, kind);

CREATE TABLE staff (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL,
    sites       text[] NOT NULL DEFAULT '{}',
    grids       text[] NOT NULL DEFAULT '{}',
    skills      text[] NOT NULL DEFAULT '{}',
    phone       text,
    supervisor  text,
    active      boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Recurring shifts in the site's local time; end_time < start_time runs past midnight.
CREATE TABLE shifts (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    staff_id    text NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    site_id     text NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    days        text[] NOT NULL,
    start_time  time NOT NULL,
    end_time    time NOT NULL
);

-- Who did what to configuration, devices, alarms and work orders. Append-only.
CREATE TABLE audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    actor   text NOT NULL,
    origin  text,
    action  text NOT NULL,
    target  text,
    before  jsonb,
    after   jsonb
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target, at);
