-- Work orders, dispatch, attendance and the notification outbox (issue 6).
-- Instants are timestamptz (UTC); shifts stay in the site's local time (0001) and are resolved
-- against sites.timezone by hub.dispatch.roster.

CREATE TABLE work_orders (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id          text NOT NULL REFERENCES sites (id),
    kind             text NOT NULL
                     CHECK (kind IN ('alarm', 'repair', 'complaint', 'praise', 'maintenance')),
    priority         text NOT NULL CHECK (priority IN ('p1', 'p2', 'p3', 'p4')),
    state            text NOT NULL DEFAULT 'created'
                     CHECK (state IN ('created', 'assigned', 'accepted', 'on_site', 'resolved',
                                      'verified', 'closed', 'cancelled', 'reopened')),
    title            text NOT NULL,
    description      text,
    alarm_id         bigint REFERENCES alarms (id),
    policy_rule      text,                   -- dispatch rule or maintenance schedule that made it
    skill            text,
    device_id        integer REFERENCES devices (id),
    building_id      text,
    grid_id          text,
    location         text,
    reporter         text,                   -- resident (app user) who raised it, if any
    assignee         text REFERENCES staff (id),
    assigned_reason  text,                   -- why this person, in words
    assignment       jsonb,                  -- why this person, the candidates considered
    sla_start        timestamptz NOT NULL,   -- when the clocks started (alarm raised / created)
    accept_due       timestamptz,
    arrive_due       timestamptz,
    resolve_due      timestamptz,
    due_date         date,                   -- planned maintenance: the local day it is due
    escalation_level integer NOT NULL DEFAULT 0,
    reopen_count     integer NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL,
    assigned_at      timestamptz,
    accepted_at      timestamptz,
    on_site_at       timestamptz,
    resolved_at      timestamptz,
    verified_at      timestamptz,
    closed_at        timestamptz,
    cancelled_at     timestamptz,
    override_reason  text,                   -- resolved while the alarm was still open: why
    rating           smallint CHECK (rating BETWEEN 1 AND 5),
    rating_comment   text,
    rated_at         timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One work order per alarm, whichever worker sees the alarm first (the others' INSERT is a no-op).
CREATE UNIQUE INDEX work_orders_one_per_alarm ON work_orders (alarm_id) WHERE alarm_id IS NOT NULL;
-- Planned maintenance is generated idempotently: one order per schedule, device and due day.
CREATE UNIQUE INDEX work_orders_one_per_due ON work_orders (policy_rule, device_id, due_date)
    WHERE kind = 'maintenance';
CREATE INDEX work_orders_open ON work_orders (site_id, state)
    WHERE state NOT IN ('closed', 'cancelled', 'verified');
CREATE INDEX work_orders_assignee ON work_orders (assignee, state);
CREATE INDEX work_orders_created ON work_orders (created_at);

-- Every state change: who, when, where from (api, app, dispatch, sla, badge, …).
CREATE TABLE work_order_transitions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id         bigint NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    at               timestamptz NOT NULL,
    from_state       text,
    to_state         text NOT NULL,
    actor            text NOT NULL,
    origin           text NOT NULL,
    assignee         text,
    note             text,
    override_reason  text
);
CREATE INDEX work_order_transitions_order ON work_order_transitions (order_id, at);

-- Evidence is stored by reference (object-store key, URL); the bytes live elsewhere.
CREATE TABLE work_order_evidence (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id  bigint NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    kind      text NOT NULL CHECK (kind IN ('photo', 'attachment', 'note')),
    ref       text,
    note      text,
    CHECK (ref IS NOT NULL OR note IS NOT NULL)
);
CREATE INDEX work_order_evidence_order ON work_order_evidence (order_id);

-- Reminders and escalations already sent: the primary key makes every step happen once,
-- however many sweepers run and however often the hub restarts.
CREATE TABLE work_order_sla_events (
    order_id  bigint NOT NULL REFERENCES work_orders (id) ON DELETE CASCADE,
    clock     text NOT NULL CHECK (clock IN ('accept', 'arrive', 'resolve')),
    step      integer NOT NULL,
    action    text NOT NULL CHECK (action IN ('reminder', 'escalation')),
    at        timestamptz NOT NULL,
    due       timestamptz NOT NULL,
    targets   text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (order_id, clock, step)
);

-- Attendance (员工考勤): check-in/out by API or by badge at a gate.
CREATE TABLE attendance (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    staff_id   text NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    site_id    text NOT NULL REFERENCES sites (id),
    kind       text NOT NULL CHECK (kind IN ('in', 'out')),
    at         timestamptz NOT NULL,
    source     text NOT NULL CHECK (source IN ('api', 'badge')),
    device_id  integer REFERENCES devices (id),
    actor      text NOT NULL,
    origin     text
);
CREATE INDEX attendance_staff ON attendance (staff_id, site_id, at DESC);
-- A badge event redelivered by the broker must not be counted twice.
CREATE UNIQUE INDEX attendance_badge_once ON attendance (staff_id, device_id, at) WHERE source = 'badge';

-- Staff badges (card numbers seen in gate events' data.card).
CREATE TABLE staff_badges (
    card      text PRIMARY KEY,
    staff_id  text NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    added_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE staff_leave (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    staff_id    text NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    cancelled_at timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX staff_leave_staff ON staff_leave (staff_id, starts_at);

-- Outbox: every notification is a row first, delivered (MQTT QoS 1 or webhook) after commit and
-- retried with backoff until delivered, so a crash or restart loses none.
CREATE TABLE notifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    order_id         bigint REFERENCES work_orders (id) ON DELETE CASCADE,
    event            text NOT NULL,
    channel          text NOT NULL CHECK (channel IN ('mqtt', 'webhook')),
    target           text NOT NULL,          -- MQTT topic or webhook URL
    staff_id         text,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    delivered_at     timestamptz
);
CREATE INDEX notifications_pending ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_order ON notifications (order_id);

CREATE FUNCTION hub_notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hub_notifications', NEW.id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER notifications_wake AFTER INSERT ON notifications
    FOR EACH ROW EXECUTE FUNCTION hub_notify_outbox();

-- Work-order changes for live views (API streams, `hub top`): {"id", "state", "site_id"}.
CREATE FUNCTION hub_notify_work_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.state IS DISTINCT FROM OLD.state
       OR NEW.assignee IS DISTINCT FROM OLD.assignee THEN
        PERFORM pg_notify('hub_work_orders', json_build_object('id', NEW.id, 'state', NEW.state,
                          'site_id', NEW.site_id, 'assignee', NEW.assignee)::text);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER work_orders_notify AFTER INSERT OR UPDATE ON work_orders
    FOR EACH ROW EXECUTE FUNCTION hub_notify_work_order();
