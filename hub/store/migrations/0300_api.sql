-- API (issue 7): users and tokens, device commands and their control leases, visitor passes.
-- `sites` of a user lists the sites it may see; '{*}' means every site.

CREATE TABLE api_users (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'operator', 'technician', 'butler')),
    sites          text[] NOT NULL DEFAULT '{}',
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens and machine API tokens are stored as SHA-256 digests only.
CREATE TABLE api_refresh_tokens (
    token_hash  text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES api_users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);

CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash    text NOT NULL UNIQUE,
    user_id       bigint NOT NULL REFERENCES api_users (id) ON DELETE CASCADE,
    name          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz
);

-- Commands to devices. `id` is the {command_id} of the contract's MQTT topics.
-- states: awaiting_confirmation → queued → sent → accepted → done | rejected | failed,
-- or expired (never reached the device in time) | timed_out (sent, no final reply in time).
CREATE TABLE commands (
    id               text PRIMARY KEY,
    device_id        integer NOT NULL REFERENCES devices (id),
    site_id          text NOT NULL,
    name             text NOT NULL,
    args             jsonb NOT NULL DEFAULT '{}',
    state            text NOT NULL CHECK (state IN ('awaiting_confirmation', 'queued', 'sent', 'accepted',
                         'done', 'rejected', 'failed', 'expired', 'timed_out')),
    requested_by     text NOT NULL,
    origin           text,
    idempotency_key  text NOT NULL,
    request_hash     text NOT NULL,
    dangerous        boolean NOT NULL DEFAULT false,
    confirmed_by     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    complete_within_s double precision NOT NULL DEFAULT 60,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    accepted_at      timestamptz,
    finished_at      timestamptz,
    detail           text,
    late_reply       jsonb,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (requested_by, idempotency_key)
);
CREATE INDEX commands_pending ON commands (next_attempt_at)
    WHERE state IN ('awaiting_confirmation', 'queued', 'sent', 'accepted');
CREATE INDEX commands_device ON commands (device_id, created_at);
CREATE INDEX commands_requester ON commands (requested_by, created_at);

-- One exclusive control lease per device.
CREATE TABLE control_leases (
    device_id    integer PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
    holder       text NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

CREATE TABLE visitor_passes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code         text NOT NULL UNIQUE,
    site_id      text NOT NULL REFERENCES sites (id),
    gates        text[] NOT NULL,
    visitor      text NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz NOT NULL CHECK (valid_until > valid_from),
    max_uses     integer NOT NULL CHECK (max_uses > 0),
    uses         integer NOT NULL DEFAULT 0,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    revoked_by   text
);
CREATE INDEX visitor_passes_site ON visitor_passes (site_id, valid_until);

CREATE TABLE visitor_pass_checks (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    pass_id   bigint REFERENCES visitor_passes (id) ON DELETE CASCADE,
    code      text NOT NULL,
    gate      text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now(),
    granted   boolean NOT NULL,
    reason    text NOT NULL
);
