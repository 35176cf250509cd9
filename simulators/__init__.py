"""Device simulators speaking the contract's MQTT topics (and Modbus TCP), for tests and demos."""
