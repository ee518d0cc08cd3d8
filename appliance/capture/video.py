"""Where frames for a video encoder go: the capture thread offers them, something else encodes.

The H.264 stream (``appliance/rtsp/``) is encoded on its own thread, never on the capture thread, and
only while someone watches it. The capture thread asks ``wants_frame`` at every frame (a cheap check
of a flag and a due time) and, only if it says yes, hands over a clean copy of the frame before the
MJPEG overlay is drawn on it, with what the overlay needs, so the encoder draws its own at its size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.camera_backends.yuv import I420
from appliance.config import Mask, Zone
from appliance.motion.events import MotionResult


@dataclass(frozen=True)
class VideoFrame:
    """One frame for a video encoder: the picture (its own copy), when it was taken, what moved."""

    image: np.ndarray | I420  # BGR or the camera's planes, the sink's own: nobody else draws on it
    timestamp: float  # time.time() at capture, for the overlay
    captured_at: float  # monotonic time at capture: the frame's age, its presentation time
    motion: MotionResult | None
    zones: Sequence[Zone]
    scale: tuple[float, float]  # capture-frame pixels to ``image`` pixels (motion boxes)
    masks: tuple[Mask, ...] = ()  # the privacy masks the picture was taken under (a pre-roll drops older ones)


class VideoSink(Protocol):
    """A video encoder fed by the capture thread: both calls are quick and never block."""

    def wants_frame(self, now: float) -> bool:
        """Whether a frame taken at monotonic ``now`` would be encoded: someone watches and one is due."""
        ...

    def frame_size(self, capture_size: tuple[int, int]) -> tuple[int, int]:
        """The size the sink encodes at, for frames of ``capture_size``: the pipeline scales to it."""
        ...

    def offer(self, frame: VideoFrame) -> None:
        """Take ``frame`` (the newest replaces one not yet encoded)."""
        ...
