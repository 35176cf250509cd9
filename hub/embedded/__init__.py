"""Embedded PostgreSQL and MQTT broker for `hub demo` and for tests on a machine without servers."""
