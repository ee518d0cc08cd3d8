"""Notifications: events reach a phone or a mailbox without Home Assistant, only while armed.

``secrets`` keeps the targets' Apprise URLs (which hold passwords and tokens) out of every log line,
status field and error; ``sender`` owns one thread per target with a bounded queue, a cooldown, a
timeout per send and retries; ``service`` hears motion, objects and camera faults, builds the messages
with the snapshot and the links, and hands them to the senders. Apprise is imported only when a
target is configured.
"""
