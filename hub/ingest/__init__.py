"""Ingest: decode device messages, queue them, write them in batches, acknowledge after commit."""
