"""What the camera is doing, and the news about it: plain data, no OpenCV, no threads.

Everything that listens to the camera (MQTT, the LED, the page's live feed, the event recorder)
needs these types, and none of it should pay for importing OpenCV to get them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.motion.events import EventChange


class CameraState(enum.StrEnum):
    """Where the camera is: ``error`` means wanted on but failing, and retrying."""

    OFF = "off"
    STARTING = "starting"
    ON = "on"
    STOPPING = "stopping"
    ERROR = "error"


@dataclass(frozen=True)
class StateChange:
    """One transition, as listeners hear it."""

    state: CameraState
    previous: CameraState
    wanted_on: bool
    error: str | None
    source: str
    at: float
    seq: int = 0  # counts the changes: a listener that also republishes can tell newer from older

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state.value, "previous": self.previous.value, "on": self.wanted_on,
                "error": self.error, "source": self.source, "at": self.at}


StateListener = Callable[[StateChange], None]
"""Hears every state change, in order, on the dispatcher's thread; may call the controller."""

MotionListener = Callable[["EventChange", "bytes | None"], None]
"""Hears each motion event start (with the JPEG that started it) and end, on the dispatcher's thread."""
