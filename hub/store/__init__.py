"""PostgreSQL/TimescaleDB store: connections, migrations, registry mirror, rollups."""
