"""Motion settings a user changes at run time: detection on/off, sensitivity and zones.

The config file gives the starting values; what the page, the API or Home Assistant change is kept in
``motion.json`` in the state folder (written durably) and wins at the next start, so pausing
detection while at home survives a power cut. The settings are one immutable ``MotionSettings``
swapped under a lock: the capture thread reads the current one at each analysed frame, so a change
takes effect on the next frame without stopping the camera.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.config import SENSITIVITY, MotionSettings
from appliance.durable import KeptSettings

log = logging.getLogger(__name__)

RUNTIME_KEYS = ("enabled", "threshold", "zones")
"""What is changed at run time and kept across restarts; the rest comes from the config file."""


class MotionSettingsError(ValueError):
    """A change that cannot be applied; the message says which key and why."""


def public(settings: MotionSettings) -> dict[str, Any]:
    """The run-time settings as the API, the page and MQTT show them."""
    return {"enabled": settings.enabled, "sensitivity": settings.sensitivity, "threshold": settings.threshold,
            "levels": dict(SENSITIVITY), "zones": [zone.model_dump() for zone in settings.zones]}


class MotionControl(KeptSettings[MotionSettings]):
    """Owns the current motion settings; every way in calls ``update`` (``enabled``, ``sensitivity`` or
    ``threshold``, ``zones``), every listener hears the new settings (MQTT publishes them)."""

    ACCEPTED = ("enabled", "sensitivity", "threshold", "zones")
    KEPT = RUNTIME_KEYS
    WHAT = "motion settings"
    REFUSED = MotionSettingsError

    def _prepared(self, current: MotionSettings, values: dict[str, Any]) -> dict[str, Any]:
        if "sensitivity" in values:
            level = values.pop("sensitivity")
            if level not in SENSITIVITY:
                raise MotionSettingsError(f"'sensitivity' must be one of {', '.join(SENSITIVITY)}, not {level!r}")
            if "threshold" in values and values["threshold"] != SENSITIVITY[level]:
                raise MotionSettingsError("give 'sensitivity' or 'threshold', not both")
            values["threshold"] = SENSITIVITY[level]
        if "enabled" in values and not isinstance(values["enabled"], bool):
            raise MotionSettingsError(f"'enabled' must be true or false, not {values['enabled']!r}")
        return values
