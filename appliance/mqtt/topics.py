"""Topic names and identity of one device, derived once from the config."""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

from appliance.config import MqttSettings


def topic_safe(text: str) -> str:
    """Lower-case letters, digits, '_' and '-' only: what HA accepts in ids and we accept in topics."""
    return re.sub(r"[^a-z0-9_-]+", "_", text.lower()).strip("_") or "appliance"


@dataclass(frozen=True)
class Topics:
    """Every topic the appliance publishes or subscribes, under ``prefix``."""

    device_id: str
    prefix: str
    discovery_prefix: str

    @classmethod
    def from_settings(cls, settings: MqttSettings, hostname: str | None = None) -> Topics:
        device_id = settings.device_id or topic_safe(hostname or socket.gethostname())
        return cls(device_id, settings.topic_prefix or f"appliance/{device_id}", settings.discovery_prefix)

    @property
    def availability(self) -> str:
        return f"{self.prefix}/availability"

    @property
    def camera_state(self) -> str:
        return f"{self.prefix}/camera/state"

    @property
    def camera_set(self) -> str:
        return f"{self.prefix}/camera/set"

    @property
    def camera_status(self) -> str:
        return f"{self.prefix}/camera/status"

    @property
    def camera_problem(self) -> str:
        return f"{self.prefix}/camera/problem"

    @property
    def camera_attributes(self) -> str:
        return f"{self.prefix}/camera/attributes"

    @property
    def motion_state(self) -> str:
        return f"{self.prefix}/motion/state"

    @property
    def motion_event(self) -> str:
        return f"{self.prefix}/motion/event"

    @property
    def motion_detection(self) -> str:
        return f"{self.prefix}/motion/detection"

    @property
    def motion_detection_set(self) -> str:
        return f"{self.prefix}/motion/detection/set"

    @property
    def motion_sensitivity(self) -> str:
        return f"{self.prefix}/motion/sensitivity"

    @property
    def motion_sensitivity_set(self) -> str:
        return f"{self.prefix}/motion/sensitivity/set"

    @property
    def snapshot(self) -> str:
        return f"{self.prefix}/snapshot"

    @property
    def arming_state(self) -> str:
        return f"{self.prefix}/arming/state"

    @property
    def arming_set(self) -> str:
        return f"{self.prefix}/arming/set"

    @property
    def arming_attributes(self) -> str:
        return f"{self.prefix}/arming/attributes"

    @property
    def notify_state(self) -> str:
        return f"{self.prefix}/notify/state"

    def object_count(self, label: str) -> str:
        """How many objects of ``label`` are in view and alerting (retained): "Person detected" reads it."""
        return f"{self.prefix}/objects/{topic_safe(label)}"

    def object_snapshot(self, label: str) -> str:
        """The best picture of the latest ``label`` object that alerted (retained JPEG, box drawn)."""
        return f"{self.prefix}/objects/{topic_safe(label)}/snapshot"

    @property
    def object_event(self) -> str:
        """One JSON message per object that alerts (label, score, box, event, snapshot link)."""
        return f"{self.prefix}/objects/event"

    @property
    def snapshot_set(self) -> str:
        return f"{self.prefix}/snapshot/set"

    @property
    def picture_state(self) -> str:
        return f"{self.prefix}/picture/state"

    @property
    def picture_set_all(self) -> str:
        """The wildcard the commands of every picture setting arrive on."""
        return f"{self.prefix}/picture/+/set"

    def picture_set(self, name: str) -> str:
        """Commands for one picture control, or ``night_mode``."""
        return f"{self.prefix}/picture/{name}/set"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.device_id}/{object_id}/config"
