"""Arming: whether events notify (and are kept), by a weekly schedule or by hand until its next change.

``schedule`` is pure time arithmetic over the appliance's time zone (overnight spans, daylight saving
days); ``control`` owns the armed state, its reason and its file, told to the page, MQTT and the
notifier, with an injectable clock so tests can set the day and the hour.
"""
