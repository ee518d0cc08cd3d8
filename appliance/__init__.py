"""Raspberry Pi camera appliance: one capture loop, one encode per frame, many viewers."""

__version__ = "0.2.0"
