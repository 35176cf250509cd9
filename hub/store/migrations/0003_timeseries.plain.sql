-- Plain PostgreSQL: BRIN indexes for time-range scans and rollup tables the hub refreshes
-- (hub.store.rollups), under the same names TimescaleDB gives its continuous aggregates.

CREATE INDEX readings_ts_brin ON readings USING brin (ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE readings_1m (
    bucket     timestamptz NOT NULL,
    device_id  integer NOT NULL,
    metric     text NOT NULL,
    avg_value  double precision,
    min_value  double precision,
    max_value  double precision,
    last_value double precision,
    samples    bigint NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1m_bucket ON readings_1m (bucket);

CREATE TABLE readings_1h (LIKE readings_1m INCLUDING ALL);

-- Recompute the buckets overlapping [start, stop): late data is folded in by re-running it.
CREATE FUNCTION hub_refresh_rollups(start timestamptz, stop timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m_start timestamptz := date_trunc('minute', start);
    h_start timestamptz := date_trunc('hour', start);
BEGIN
    DELETE FROM readings_1m WHERE bucket >= m_start AND bucket < stop;
    INSERT INTO readings_1m
    SELECT date_trunc('minute', ts), device_id, metric, avg(value), min(value), max(value),
           (array_agg(value ORDER BY ts DESC))[1], count(*)
      FROM readings
     WHERE ts >= m_start AND ts < stop AND quality < 2
     GROUP BY 1, 2, 3;

    DELETE FROM readings_1h WHERE bucket >= h_start AND bucket < stop;
    INSERT INTO readings_1h
    SELECT date_trunc('hour', bucket), device_id, metric,
           sum(avg_value * samples) / nullif(sum(samples), 0), min(min_value), max(max_value),
           (array_agg(last_value ORDER BY bucket DESC))[1], sum(samples)
      FROM readings_1m
     WHERE bucket >= h_start AND bucket < stop
     GROUP BY 1, 2, 3;
END $$;
