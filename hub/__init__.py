"""Facility hub core: config, site registry, store, ingest, CLI and runtime."""

__version__ = "0.1.0"
