"""Device commands: safety policy, persistence, dispatch over MQTT (or a Modbus hook), replies."""
