"""What a motion event's clip is made of, taken on the capture thread and nothing more.

The capture thread keeps a short ring of recent frames, downscaled to the clip's size with the
overlay drawn, at the clip's rate: the pre-roll. The frames stay raw (no JPEG) while nothing moves, so
watching for motion costs a resize a tenth of a second and no encode at all. When an event starts,
the ring is handed to the sink (the event writer, ``appliance.history.events.EventRecorder``), then every new
clip frame until ``post_seconds`` after the event ends. The sink encodes and writes on its own thread;
the capture thread never waits for a disk.

The ring only ever holds frames masked as the privacy masks are now: when the masks change, what it
holds (taken under the old ones, or none) is dropped, so an event right after a mask is drawn cannot
store, from its pre-roll, what the mask hides.

Events may overlap (a new one starts during the previous one's post-roll, or ``max_event_seconds``
splits a long one): a frame then belongs to several clips and is encoded once for all of them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from appliance.camera_backends.base import Frame
from appliance.camera_backends.yuv import bgr_of, scaled_copy, size_of
from appliance.capture.overlay import draw_overlay
from appliance.config import ClipSettings, Mask, OverlaySettings, Zone
from appliance.motion.events import MotionResult

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ClipFrame:
    """One clip frame: the picture as the clip shows it, when it was taken (wall clock for labels,
    monotonic for pace), and its JPEG once the writer has encoded it (then ``image`` is dropped)."""

    image: np.ndarray | None
    wall: float
    mono: float
    width: int
    height: int
    jpeg: bytes | None = None


class ClipSink(Protocol):
    """Where clip frames go: called on the capture thread, so every method only queues work."""

    def clip_begin(self, event_id: str, frames: Sequence[ClipFrame]) -> None: ...

    def clip_frame(self, event_ids: tuple[str, ...], frame: ClipFrame) -> None: ...

    def clip_end(self, event_id: str) -> None: ...


def clip_size(frame_size: tuple[int, int], largest: tuple[int, int]) -> tuple[int, int]:
    """The frame scaled to fit within ``largest``, keeping its shape and never enlarging it (even sizes,
    as JPEG's 4:2:0 subsampling and every player prefer)."""
    width, height = frame_size
    scale = min(1.0, largest[0] / width, largest[1] / height)
    return max(16, round(width * scale / 2) * 2), max(16, round(height * scale / 2) * 2)


class ClipTap:
    """The capture thread's side of clip recording: the pre-roll ring and which clips are open."""

    def __init__(self, settings: ClipSettings, overlay: OverlaySettings, sink: ClipSink) -> None:
        self._settings = settings
        self._overlay = overlay
        self._sink = sink
        self._period = 1.0 / settings.fps
        # The trigger frame itself is the ring's newest: one more than pre_seconds' worth.
        self._ring: deque[ClipFrame] = deque(maxlen=round(settings.pre_seconds * settings.fps) + 1)
        self._open: dict[str, float | None] = {}  # event id -> end of its post-roll (None: event running)
        self._next_due = 0.0
        self._masks: Sequence[Mask] = ()  # the privacy masks every frame in the ring was taken under
        self.frames_taken = 0

    @property
    def recording(self) -> int:
        return len(self._open)

    def last_taken(self) -> np.ndarray | None:
        """The newest clip frame's picture while it is still raw (benchmarks time its encode)."""
        return self._ring[-1].image if self._ring else None

    def offer(self, frame: Frame, result: MotionResult | None, zones: Sequence[Zone], now: float,
              watching: bool, masks: Sequence[Mask] = ()) -> None:
        """Called with every captured frame (before the stream's overlay is drawn on it, and masked by
        ``masks``); takes one when a clip frame is due and someone may need it: motion is watched, or
        a clip is open."""
        if masks != self._masks:  # a mask drawn or moved: older frames may show what it hides now
            self._ring.clear()
            self._masks = masks
        for event_id, until in list(self._open.items()):
            if until is not None and now >= until:
                del self._open[event_id]
                self._sink.clip_end(event_id)
        if not watching and not self._open:
            self._ring.clear()
            return
        # A quarter period early still counts: camera frames jitter, and a camera at exactly the clip's
        # rate would otherwise lose a frame whenever one came a hair before its due time.
        if now < self._next_due - self._period / 4:
            return
        # Keep to the grid; after a stall (or at the start) begin a new one from now rather than catch up.
        self._next_due = self._next_due + self._period if now - self._next_due < self._period else now + self._period
        image = frame.image
        width, height = size_of(image)
        size = clip_size((width, height), self._settings.size)
        small = bgr_of(scaled_copy(image, size))  # Motion-JPEG clips are encoded from BGR, at their small size
        draw_overlay(small, frame.timestamp, result, self._overlay, scale=(size[0] / width, size[1] / height),
                     zones=zones)
        taken = ClipFrame(small, frame.timestamp, now, *size)
        self.frames_taken += 1
        self._ring.append(taken)
        if self._open:
            self._sink.clip_frame(tuple(self._open), taken)

    def started(self, event_id: str) -> None:
        """An event started on the frame just offered: its clip opens with the pre-roll."""
        self._open[event_id] = None
        self._sink.clip_begin(event_id, list(self._ring))

    def ended(self, event_id: str, now: float) -> None:
        """The event ended: its clip takes frames for ``post_seconds`` more."""
        if event_id in self._open:
            self._open[event_id] = now + self._settings.post_seconds

    def close(self) -> None:
        """The camera stopped or failed: no frame will come, every open clip ends now."""
        for event_id in list(self._open):
            self._sink.clip_end(event_id)
        self._open.clear()
        self._ring.clear()
        self._next_due = 0.0
