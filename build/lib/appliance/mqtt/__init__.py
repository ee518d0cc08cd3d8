"""MQTT and Home Assistant discovery: one more caller of the controller, and one more listener."""
