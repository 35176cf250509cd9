-- TimescaleDB: hypertables, compression segmented by device, retention, and continuous
-- aggregates named like the plain-PostgreSQL rollup tables so every query works on both.
-- {chunk_interval}, {compress_after} and {retention} come from the hub's settings.

SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '{chunk_interval}');
SELECT create_hypertable('events', 'ts', chunk_time_interval => INTERVAL '{chunk_interval}');

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'metric, ts'
);
SELECT add_compression_policy('readings', INTERVAL '{compress_after}');
SELECT add_retention_policy('readings', INTERVAL '{retention}');
SELECT add_retention_policy('events', INTERVAL '{retention}');

CREATE MATERIALIZED VIEW readings_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, device_id, metric,
       avg(value) AS avg_value, min(value) AS min_value, max(value) AS max_value,
       last(value, ts) AS last_value, count(*) AS samples
  FROM readings
 WHERE quality < 2
 GROUP BY 1, 2, 3
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '1 day', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');

CREATE MATERIALIZED VIEW readings_1h WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', bucket) AS bucket, device_id, metric,
       sum(avg_value * samples) / nullif(sum(samples), 0) AS avg_value,
       min(min_value) AS min_value, max(max_value) AS max_value,
       last(last_value, bucket) AS last_value, sum(samples)::bigint AS samples
  FROM readings_1m
 GROUP BY 1, 2, 3
WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');

-- Rollups refresh themselves through the policies above; the hub's call is a no-op here.
CREATE FUNCTION hub_refresh_rollups(start timestamptz, stop timestamptz) RETURNS void
LANGUAGE sql AS $$ SELECT NULL::void $$;
