"""Modbus TCP driver."""
