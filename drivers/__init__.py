"""Device drivers: MQTT and Modbus TCP. They feed hub.ingest and carry commands to devices."""
