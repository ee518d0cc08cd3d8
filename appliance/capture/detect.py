"""Where frames for the object detector go: the capture thread offers them, the detector's thread looks.

Object detection (``appliance/detection/``) costs tens of milliseconds a frame on a Pi, so it never runs
on the capture thread. The capture thread asks ``wants_frame`` at every analysed frame with motion (a
flag and a due time) and only on a yes copies the clean frame, before the overlay is drawn on it, with
the motion boxes that say where to look. A detector busy with the previous frame says no: the frame is
skipped, never queued.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.camera_backends.yuv import I420
from appliance.motion.events import Box


@dataclass(frozen=True)
class DetectFrame:
    """One frame for the detector: its own copy of the picture, when it was taken, where motion is."""

    image: np.ndarray | I420  # BGR or the camera's planes; the detector's own copy
    timestamp: float  # time.time() at capture
    captured_at: float  # monotonic time at capture
    motion: tuple[Box, ...]  # the moving areas, in the picture's pixels
    event_id: str | None  # the motion event the frame belongs to


class ObjectSink(Protocol):
    """An object detector fed by the capture thread: both calls are quick and never block."""

    def wants_frame(self, now: float) -> bool:
        """Whether a frame taken at monotonic ``now`` would be looked at: one is due and the detector is idle."""
        ...

    def offer(self, frame: DetectFrame) -> None:
        """Take ``frame`` (a newer one replaces it if it was not yet taken up)."""
        ...

    def camera_stopped(self) -> None:
        """The camera stopped (off or failed): what was seen is gone."""
        ...
